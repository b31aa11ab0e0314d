"""Sockets: connects from a chosen source IP, port allocation, quiet listeners, TLS contexts."""
