"""Gateway metrics: what the core reports (L{hooks}), counted with prometheus_client
(L{collect}) and served at C{/metrics} (L{serve}).

Only L{hooks} is imported by the core; it imports nothing.  prometheus_client is
imported by L{collect} alone, and only once metrics are configured: in multiprocess
mode its C{PROMETHEUS_MULTIPROC_DIR} must be set before that import.
"""
