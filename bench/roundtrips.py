"""A TCP proxy on 127.0.0.1 that counts what a remote database would charge: round trips and connections.

On Nile the database is tens of milliseconds away, so how a deploy feels depends on how many
times the client waits for the server, not on local CPU. The proxy forwards to the real
server (a unix socket or host:port) and counts a round trip each time the client sends after
the server last spoke (or first on a connection): a client that pipelines several messages
before reading pays one. The TLS/startup handshake counts too, as it does on Nile.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass


@dataclass
class Counts:
    connections: int = 0
    round_trips: int = 0


class CountingProxy:
    """`with CountingProxy(target) as proxy:` then connect to 127.0.0.1:proxy.port; read proxy.counts."""

    def __init__(self, unix_socket: str | None = None, host: str | None = None, port: int | None = None):
        self._target = (unix_socket, host, port)
        self.counts = Counts()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def reset(self) -> Counts:
        counts, self.counts = self.counts, Counts()
        return counts

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        unix_socket, host, port = self._target
        if unix_socket:
            server_reader, server_writer = await asyncio.open_unix_connection(unix_socket)
        else:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        self.counts.connections += 1
        # True while the server has spoken since the client's last message: the next client bytes start a trip.
        turn = {"server_spoke": True}

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_client: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if from_client and turn["server_spoke"]:
                        self.counts.round_trips += 1
                        turn["server_spoke"] = False
                    elif not from_client:
                        turn["server_spoke"] = True
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pump(client_reader, server_writer, True), pump(server_reader, client_writer, False))
