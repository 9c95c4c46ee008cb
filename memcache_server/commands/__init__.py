"""Command handlers: one dispatch table, handlers by family; requests in, reply bytes out.

Handlers run on the connection's worker thread and reach the node's parts only through the
narrow contexts a session is given, never through the node itself.
"""
