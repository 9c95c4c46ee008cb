"""Load generator for memcached-compatible servers (``memcache-load --help``, or
``python -m memcache_server.load --help`` from a checkout).

Users size clusters with it, so it is built to measure honestly: raw text-protocol sockets
driven by a selector per process, every value verified, and latency recorded in a mergeable
log-linear histogram.  See ``load/README.md`` for usage and the JSON result schema.
"""

__version__ = "0.1.0"
