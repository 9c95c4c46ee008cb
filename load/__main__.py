"""Entry point so ``python -m load`` works without installing a console script."""

from load.cli import main

if __name__ == "__main__":
    main()
