"""A memcached-compatible, multithreaded cache node."""

__version__ = "0.1.0"
