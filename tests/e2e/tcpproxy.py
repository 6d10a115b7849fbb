"""A tiny TCP proxy on 127.0.0.1 that a test can cut and restore, to drop ONE client's
connection to NATS (the desktop's) while the rest of the stack keeps running."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from services.core.procs import free_port


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _run(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    def start(self) -> TcpProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def cut(self) -> None:
        self._run(self._cut())

    def restore(self) -> None:
        self._run(self._listen())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._client, "127.0.0.1", self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update({writer, up_w})

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._writers.discard(writer)
        self._writers.discard(up_w)
