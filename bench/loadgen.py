"""The load generator of bench/serve.py: closed-loop and open-loop HTTP/1.1 GET on loopback.

A raw keep-alive client with a minimal parser: httpx costs more CPU per request than the
server spends, so it would measure the client. Closed loop: each connection sends its next
request when the last is answered. Open loop: requests leave on a fixed schedule whatever the
answers do, and latency counts from the *scheduled* time (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np


class Connection:
    """One keep-alive HTTP/1.1 connection with a minimal parser: httpx would cost more CPU per
    request than the server spends, and measure the client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        return cls(*await asyncio.open_connection(host, port))

    async def get(self, path: str) -> int:
        """Send one GET, read the whole answer; returns the status."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        return await self._read()

    async def _read(self) -> int:
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    async def post_json(self, path: str, body: bytes) -> int:
        """Send one POST with a JSON body, read the whole answer; returns the status."""
        head = (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        return await self._read()

    def close(self) -> None:
        self.writer.close()


async def closed_loop(
    url: str, paths: list[str], concurrency: int, seconds: float
) -> dict[str, float]:
    host, port = url.removeprefix("http://").split(":")
    conns = [await Connection.open(host, int(port)) for _ in range(concurrency)]
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds

    async def run(conn: Connection, start: int) -> None:
        i = start
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            errors[0] += await conn.get(paths[i % len(paths)]) != 200
            latencies.append(time.perf_counter() - t0)
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(run(c, w * 7) for w, c in enumerate(conns)))
    elapsed = time.perf_counter() - started
    for c in conns:
        c.close()
    return {
        "rps": len(latencies) / elapsed,
        "requests": len(latencies),
        "errors": errors[0],
        **percentiles(latencies),
    }


async def open_loop(
    url: str,
    paths: list[str],
    rate: float,
    seconds: float,
    max_conns: int = 512,
    drain_s: float = 10.0,
) -> dict[str, float]:
    """Requests at fixed intervals 1/rate; each takes an idle connection or opens one.

    Latency = answer time − scheduled send time. Requests still unanswered `drain_s` after
    the schedule ends count as `late` (and as +inf in the percentiles)."""
    host, port = url.removeprefix("http://").split(":")
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(min(32, max_conns)):
        idle.put_nowait(await Connection.open(host, int(port)))
    opened = [idle.qsize()]
    latencies: list[float] = []
    errors = [0]

    async def one(path: str, scheduled: float) -> None:
        if idle.empty() and opened[0] < max_conns:
            opened[0] += 1
            idle.put_nowait(await Connection.open(host, int(port)))
        conn = await idle.get()
        errors[0] += await conn.get(path) != 200
        latencies.append(time.perf_counter() - scheduled)
        idle.put_nowait(conn)

    n = int(rate * seconds)
    t0 = time.perf_counter() + 0.05
    tasks = []
    for i in range(n):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(paths[i % len(paths)], scheduled)))
    done, pending = await asyncio.wait(tasks, timeout=drain_s)
    for t in pending:
        t.cancel()
    while not idle.empty():
        idle.get_nowait().close()
    lat = latencies + [float("inf")] * len(pending)
    return {
        "rate": rate,
        "sent": n,
        "achieved_rps": len(latencies) / (time.perf_counter() - t0),
        "errors": errors[0],
        "late": len(pending),
        "connections": opened[0],
        **percentiles(lat),
    }


def percentiles(latencies: list[float]) -> dict[str, float]:
    ms = 1000 * np.asarray(latencies or [np.nan])
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "p999_ms": float(np.percentile(ms, 99.9)),
        "max_ms": float(np.max(ms)),
    }


def run_async(coro):  # type: ignore[no-untyped-def]
    """uvloop when installed: the client must stay cheap next to the server."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)
