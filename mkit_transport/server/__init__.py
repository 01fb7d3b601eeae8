"""Reference servers that serve any :class:`~mkit_transport.Transport` over a wire.

HTTP (a WSGI application) and SSH (a stdin/stdout frame loop).
"""
