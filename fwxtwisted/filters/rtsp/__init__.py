"""The RTSP 1.0 (RFC 2326) filter and its sans-I/O message, header and URL handling."""
