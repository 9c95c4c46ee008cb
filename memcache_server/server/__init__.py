"""Network layer: the acceptor and the worker threads that own connections."""
