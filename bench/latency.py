"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed time in each direction.

This kernel has no netem qdisc, so a real VPS's round-trip time (20 to 100 ms) is simulated
in user space: the benchmarks put this in front of the sandbox box's SSH port.
"""

from __future__ import annotations

import asyncio
import threading
import time


class DelayProxy:
    """``with DelayProxy(target_port, one_way=0.025) as proxy: … proxy.port …``"""

    def __init__(self, target_port: int, one_way: float, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.one_way = one_way
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the delay proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._thread.join(5)

    async def _shutdown(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop.call_soon(self._loop.stop)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def connected(self) -> None:
        """Called for each new connection (a subclass counts them)."""

    def seen(self, side: str, chunk: bytes) -> None:
        """Called for each chunk read, ``side`` "client" or "box" (a subclass counts them)."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected()
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(
            self._pipe(reader, up_writer, "client"),
            self._pipe(up_reader, writer, "box"),
            return_exceptions=True,
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, side: str
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    writer.close()
                    return
                writer.write(chunk)
                await writer.drain()

        task = asyncio.ensure_future(deliver())
        try:
            while chunk := await reader.read(65536):
                self.seen(side, chunk)
                queue.put_nowait((time.monotonic() + self.one_way, chunk))
        finally:
            queue.put_nowait((time.monotonic() + self.one_way, b""))
            await task
