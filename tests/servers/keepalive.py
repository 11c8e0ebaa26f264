"""An HTTP/1.1 keep-alive model server on 127.0.0.1 that counts the TCP connections it accepts.

Why a second server beside ``fake_model``: that one answers one request per connection
(``connection: close``), so it cannot show whether a client reuses connections. This one speaks
HTTP/1.1 the way uvicorn (behind vLLM, SGLang, llama-cpp-python's server, ...) does:
connections stay open between requests (closed after ``keep_alive_timeout`` idle seconds), a
streamed answer is ``content-type: text/event-stream`` with ``transfer-encoding: chunked``, one
chunk per SSE event, and the body ends with a separate zero-length chunk after the end marker;
a non-streamed answer is JSON with a ``content-length``. A client that stops reading at the end
marker never sees that last chunk, and its HTTP library drops the connection.

The path chooses the API: ``.../chat/completions`` answers OpenAI-style (content chunks, a
finish chunk, a usage chunk when ``stream_options.include_usage`` is set, ``data: [DONE]``),
``.../messages`` answers with the Anthropic Messages events (``message_start``,
``content_block_start``, ``ping``, ``content_block_delta`` ..., ``content_block_stop``,
``message_delta``, ``message_stop``); ``"stream"`` in the request body chooses SSE or JSON.
Misbehaviours for tests: ``linger_after_end`` never sends the final chunk after the end marker
(the body never ends, until ``max_hang`` or ``stop``); ``endless`` keeps sending content after
the pieces, with no end marker, until the client disconnects.

``GET /_stats`` answers the counters as JSON on a connection that is not counted, for a server
in another process (``python -m tests.servers.keepalive``, as ``benchmarks/server.py`` runs it).
Bounded: at most ``max_requests`` requests (then 503 and close), hangs end at ``max_hang``
seconds, a subprocess server exits after ``--max-seconds`` or when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

PIECES = ("The ", "clone ", "said ", "what ", "I ", "would ", "have ", "said.")


@dataclass
class KeepAliveConfig:
    """How the server answers; the defaults are a well-behaved server."""

    #: Content of every answer, one SSE event each.
    pieces: tuple[str, ...] = PIECES
    #: Never send the zero-length chunk after the end marker (the body never ends).
    linger_after_end: bool = False
    #: After the pieces keep sending content, without an end marker, until the client leaves.
    endless: bool = False
    #: Idle seconds after which the server closes a kept-alive connection (uvicorn: 5).
    keep_alive_timeout: float = 5.0
    max_requests: int = 100_000
    max_hang: float = 30.0


@dataclass
class Counters:
    """What the server saw. Updated only on the server's event loop thread."""

    #: TCP connections accepted that carried at least one model request.
    connections: int = 0
    requests: int = 0
    #: Connections the client closed while a response was still being sent.
    client_disconnects: int = 0
    #: Responses whose body was sent to its end (zero-length chunk or full content-length).
    completed: int = 0
    #: Kept-alive connections the server closed after ``keep_alive_timeout`` idle seconds.
    idle_closes: int = 0
    requests_per_connection: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "requests": self.requests,
            "client_disconnects": self.client_disconnects,
            "completed": self.completed,
            "idle_closes": self.idle_closes,
        }


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def openai_events(pieces: tuple[str, ...], usage: bool) -> list[bytes]:
    """The SSE events of a streamed chat completion, as an OpenAI-compatible server sends them."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()), "model": "m"}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    events += [{**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if usage:
        events.append({**base, "choices": [], "usage": _openai_usage(pieces)})
    return [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def _openai_usage(pieces: tuple[str, ...]) -> dict[str, int]:
    return {"prompt_tokens": 20, "completion_tokens": len(pieces), "total_tokens": 20 + len(pieces)}


def openai_body(pieces: tuple[str, ...]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "".join(pieces)}, "finish_reason": "stop"}
        ],
        "usage": _openai_usage(pieces),
    }


def anthropic_events(pieces: tuple[str, ...]) -> list[bytes]:
    """The SSE events of a streamed Anthropic message, in the documented order."""
    message: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "c",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 1},
    }
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
    ]
    events += [
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})
        for p in pieces
    ]
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": len(pieces)},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return [f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]


def anthropic_body(pieces: tuple[str, ...]) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "c",
        "content": [{"type": "text", "text": "".join(pieces)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": len(pieces)},
    }


def _filler(api: str) -> bytes:
    if api == "anthropic":
        data = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " more"}}
        return f"event: content_block_delta\ndata: {json.dumps(data)}\n\n".encode()
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": " more"}}]}).encode() + b"\n\n"


class KeepAliveServer:
    """The server on its own asyncio event loop: in a daemon thread (``start``/``stop``, for
    tests, whatever async backend they run) or in the main thread of a subprocess (``main``)."""

    def __init__(self, config: KeepAliveConfig | None = None, port: int = 0) -> None:
        self.config = config or KeepAliveConfig()
        self.counters = Counters()
        self.port = port
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle ------------------------------------------------------------------------
    async def serve(self, max_seconds: float | None = None) -> None:
        """Serve until ``stop`` (or ``max_seconds``), then close every connection."""
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        self.port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready.set()
        try:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), max_seconds)
        finally:
            server.close()
            for writer in list(self._writers):
                writer.close()
            await server.wait_closed()

    def start(self) -> KeepAliveServer:
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve()), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("keep-alive server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(30)

    def snapshot(self) -> dict[str, Any]:
        """The counters, read from another thread (ints: a torn read is impossible)."""
        return self.counters.as_dict()

    # -- one connection -------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        served = 0
        counted = False
        try:
            while True:
                try:
                    async with asyncio.timeout(self.config.keep_alive_timeout):
                        head = await reader.readuntil(b"\r\n\r\n")
                except TimeoutError:
                    self.counters.idle_closes += 1
                    return  # the connection sat idle too long: closed, as uvicorn closes it
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return  # the client left
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, path, _version = request_line.split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if path == "/_stats":
                    self._json(writer, 200, self.counters.as_dict())
                    await writer.drain()
                    continue
                if not counted:
                    counted = True
                    self.counters.connections += 1
                served += 1
                self.counters.requests += 1
                if self.counters.requests > self.config.max_requests:
                    self._json(writer, 503, {"error": {"message": "request limit reached"}}, close=True)
                    await writer.drain()
                    return
                keep = await self._respond(reader, writer, method, path, body)
                if not keep or headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if counted:
                self.counters.requests_per_connection.append(served)
            self._writers.discard(writer)
            writer.close()

    def _head(self, status: int, content_type: str, extra: str, close: bool = False) -> bytes:
        reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}.get(status, "X")
        head = f"HTTP/1.1 {status} {reason}\r\ndate: {formatdate(usegmt=True)}\r\nserver: uvicorn\r\n"
        head += f"content-type: {content_type}\r\n{extra}"
        if close:
            head += "connection: close\r\n"
        return (head + "\r\n").encode("latin-1")

    def _json(self, writer: asyncio.StreamWriter, status: int, body: dict[str, Any], close: bool = False) -> None:
        data = json.dumps(body).encode()
        writer.write(self._head(status, "application/json", f"content-length: {len(data)}\r\n", close) + data)

    async def _respond(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str, path: str, body: bytes
    ) -> bool:
        """Answer one request; return whether the connection may carry another."""
        api = "openai" if path.endswith("/chat/completions") else "anthropic" if path.endswith("/messages") else ""
        if method != "POST" or not api:
            self._json(writer, 404, {"error": {"message": f"no route {method} {path}"}})
            await writer.drain()
            return True
        request = json.loads(body or b"{}")
        pieces = self.config.pieces
        if not request.get("stream"):
            self._json(writer, 200, openai_body(pieces) if api == "openai" else anthropic_body(pieces))
            await writer.drain()
            self.counters.completed += 1
            return True
        usage = bool((request.get("stream_options") or {}).get("include_usage"))
        events = openai_events(pieces, usage) if api == "openai" else anthropic_events(pieces)
        if self.config.endless:
            events = events[: 1 + len(pieces)] if api == "openai" else events[: 3 + len(pieces)]
        sse_headers = "cache-control: no-store\r\nx-accel-buffering: no\r\ntransfer-encoding: chunked\r\n"
        writer.write(self._head(200, "text/event-stream; charset=utf-8", sse_headers))
        for event in events:  # one chunk, one write, per event, as uvicorn sends them
            writer.write(_chunk(event))
        await writer.drain()
        if self.config.endless:
            return await self._until_client_leaves(reader, writer, _filler(api))
        if self.config.linger_after_end:
            await self._hang(reader)
            return False
        writer.write(LAST_CHUNK)
        await writer.drain()
        self.counters.completed += 1
        return True

    async def _hang(self, reader: asyncio.StreamReader) -> None:
        """Send nothing more until the client leaves, the server stops or ``max_hang`` passes."""
        assert self._stopped is not None
        deadline = time.monotonic() + self.config.max_hang
        while not reader.at_eof() and not self._stopped.is_set() and time.monotonic() < deadline:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), 0.05)
        if reader.at_eof():
            self.counters.client_disconnects += 1

    async def _until_client_leaves(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, filler: bytes
    ) -> bool:
        assert self._stopped is not None
        deadline = time.monotonic() + self.config.max_hang
        try:
            while not self._stopped.is_set() and time.monotonic() < deadline:
                if reader.at_eof() or writer.is_closing():
                    break
                writer.write(_chunk(filler))
                await writer.drain()
                await asyncio.sleep(0.01)
        except ConnectionError:
            pass
        if reader.at_eof() or writer.is_closing():
            self.counters.client_disconnects += 1
        return False


@contextmanager
def keepalive_server(config: KeepAliveConfig | None = None) -> Iterator[KeepAliveServer]:
    server = KeepAliveServer(config).start()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve in this process; print ``PORT <n>`` once listening; exit when stdin closes (the
    parent died or is done) or after ``--max-seconds``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    server = KeepAliveServer(KeepAliveConfig(max_requests=args.max_requests), port=args.port)

    def announce_then_watch_stdin() -> None:
        # A daemon thread, not an executor job: asyncio.run would wait for a blocked read.
        server._ready.wait()
        print(f"PORT {server.port}", flush=True)
        sys.stdin.read()
        server.stop()

    threading.Thread(target=announce_then_watch_stdin, daemon=True).start()
    asyncio.run(server.serve(args.max_seconds))


if __name__ == "__main__":
    main()
