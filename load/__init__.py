"""Load generator for memcached-compatible servers (run ``python -m load --help``).

Users size clusters with it, so it is built to measure honestly: raw text-protocol sockets
driven by a selector per process, every value verified, and latency recorded in a mergeable
log-linear histogram.  See ``load/README.md`` for usage and the JSON result schema.
"""

__version__ = "0.1.0"
