"""The memcached text protocol, sans I/O: bytes in -> requests out; outcomes -> reply bytes.

Nothing in this package touches a socket, a thread, a clock or the item store.
"""
