"""The listening socket the server hands to uvicorn."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tnlm.errors import ConfigError
from tnlm.serving.listen import listen


async def _accepted_nodelay(sock: socket.socket) -> int:
    """Serve `sock` the way uvicorn does (loop.create_server(sock=...)), connect once and read
    TCP_NODELAY of the server's side of the connection."""
    seen: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=sock)
    async with server:
        host, port = sock.getsockname()[:2]
        _, writer = await asyncio.open_connection(host, port)
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()


def test_connections_send_small_writes_at_once():
    """Nagle's algorithm off on every accepted connection: without it, the first token's chunk of a
    streamed reply on a kept-alive connection waited for the client's delayed ACK (issue 15)."""
    sock = listen("127.0.0.1", 0)
    assert sock.getsockname()[1] > 0
    assert asyncio.run(_accepted_nodelay(sock)) != 0


def test_port_in_use_is_a_clear_error():
    taken = listen("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match="choose another --port"):
            listen("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_port_out_of_range():
    with pytest.raises(ConfigError, match="between 0 and 65535"):
        listen("127.0.0.1", 70000)
