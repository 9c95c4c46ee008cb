"""Entry point so ``python -m memcache_server.load`` works without installing a console script."""

from memcache_server.load.cli import main

if __name__ == "__main__":
    main()
