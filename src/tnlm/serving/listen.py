"""The listening socket, opened before anything heavy is imported: a port in use, a host this machine
does not have or a port out of range fails in a second, not after the model has loaded."""

from __future__ import annotations

import socket

from tnlm.errors import ConfigError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port and listening (port 0: any free port)."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be between 0 and 65535 (0: any free port), got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
    # connections whose socket says TCP. With it on, a streamed chunk written while the previous one
    # is unacknowledged waits for the client's delayed ACK (~40 ms on Linux) on a kept-alive connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, UnicodeError) as e:
        sock.close()
        reason = getattr(e, "strerror", None) or str(e)
        raise ConfigError(f"cannot listen on {host}:{port} ({reason}); choose another --port or --host") from None
    sock.listen(2048)
    return sock
