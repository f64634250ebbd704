"""A small HTTP/1.1 load generator on asyncio streams, with keep-alive connections.

With httpx as the load generator, the benchmark process used 2 to 3 ms of CPU per
request at 16 connections (see docs/benchmarks.md), so on 2 cores it competes with
the server it measures. This client writes each request with one ``write`` and reads
the response by its ``Content-Length``, which every JSON response of the hub sends.
It does not support chunked responses.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


class ProtocolError(Exception):
    """Raised when a response is not an HTTP/1.1 response that this client can read."""


@dataclass(frozen=True)
class HttpResponse:
    """Status code and body of one response."""

    status: int
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection to ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> HttpResponse:
        """Send one POST and read its response, connecting first if needed."""
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await self._writer.drain()
        return await self._read_response(self._reader)

    async def _read_response(self, reader: asyncio.StreamReader) -> HttpResponse:
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ProtocolError(f"invalid status line {status_line!r}")
        length: int | None = None
        closing = False
        for line in header_lines:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                raise ProtocolError(f"unsupported Transfer-Encoding {value.strip()!r}")
            elif name == "connection" and value.strip().lower() == "close":
                closing = True
        if length is None:
            raise ProtocolError("response without a Content-Length header")
        body = await reader.readexactly(length)
        if closing:
            await self.close()
        return HttpResponse(int(parts[1]), body)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            await writer.wait_closed()
