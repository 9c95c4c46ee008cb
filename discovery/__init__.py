"""Cluster auto-discovery: the cluster document, the config node and the client hash ring.

Built in the cluster and client-helper issues; the cache node answers discovery commands.
"""
