"""A scriptable model server on 127.0.0.1 for testing the HTTP providers' failure handling.

Each request is answered by the next behaviour in ``script`` (then by ``default``): a plain
reply with any status and headers, an SSE stream (optionally cut with a TCP reset after N
events), a reset before any response, or a hang. Every request is recorded. Bounded: one
request per connection, hangs end at ``max_hang`` seconds or when the server stops.
"""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering (a model's generation time, for benchmarks).
    delay: float = 0.0


@dataclass
class Stream:
    events: list[str]
    #: Reset the connection after sending this many events.
    cut_after: int | None = None
    delay: float = 0.0


@dataclass
class Reset:
    """Close the connection with a TCP reset before sending anything."""


@dataclass
class Hang:
    seconds: float = 30.0


Behaviour = Reply | Stream | Reset | Hang


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


def sse(data: object, event: str | None = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


def openai_events(
    pieces: list[str], finish: str = "stop", done: bool = True, usage: dict[str, Any] | None = None
) -> list[str]:
    events = [sse({"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}) for p in pieces]
    events.append(sse({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
    if usage is not None:
        events.append(sse({"choices": [], "usage": usage}))
    if done:
        events.append("data: [DONE]\n\n")
    return events


def openai_body(text: str, finish: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 3},
    }


def anthropic_events(
    pieces: list[str], stop_reason: str = "end_turn", usage_in: int = 12, usage_out: int = 5
) -> list[str]:
    events = [
        sse(
            {
                "type": "message_start",
                "message": {
                    "id": "m1",
                    "usage": {"input_tokens": usage_in, "output_tokens": 1, "cache_read_input_tokens": 4},
                },
            },
            "message_start",
        ),
        sse(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            "content_block_start",
        ),
        sse({"type": "ping"}, "ping"),
    ]
    events += [
        sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
            "content_block_delta",
        )
        for p in pieces
    ]
    events += [
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse(
            {"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": usage_out}},
            "message_delta",
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    return events


class FakeModelServer:
    def __init__(self, default: Behaviour | None = None, max_hang: float = 30.0) -> None:
        self.script: list[Behaviour] = []
        self.default = default or Reply(body=openai_body("hello"))
        self.requests: list[Recorded] = []
        self.max_hang = max_hang
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                server._handle(self)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FakeModelServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def _next(self) -> Behaviour:
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    def _handle(self, handler: socketserver.StreamRequestHandler) -> None:
        request_line = handler.rfile.readline().decode("latin-1").strip()
        if not request_line:
            return
        method, path, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        while line := handler.rfile.readline().decode("latin-1").strip():
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = handler.rfile.read(int(headers.get("content-length", "0")))
        behaviour = self._next()
        with self._lock:
            self.requests.append(Recorded(method, path, headers, body, time.monotonic()))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._respond(handler, behaviour)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with self._lock:
                self.in_flight -= 1

    def _reset(self, handler: socketserver.StreamRequestHandler) -> None:
        sock: socket.socket = handler.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def _respond(self, handler: socketserver.StreamRequestHandler, behaviour: Behaviour) -> None:
        w = handler.wfile
        if isinstance(behaviour, Reset):
            self._reset(handler)
        elif isinstance(behaviour, Hang):
            self._stopping.wait(min(behaviour.seconds, self.max_hang))
        elif isinstance(behaviour, Reply):
            if behaviour.delay:
                time.sleep(behaviour.delay)
            body = behaviour.body if isinstance(behaviour.body, bytes) else json.dumps(behaviour.body).encode()
            headers = {"content-type": "application/json", **behaviour.headers}
            head = f"HTTP/1.1 {behaviour.status} X\r\ncontent-length: {len(body)}\r\nconnection: close\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            w.write(head.encode() + b"\r\n" + body)
            w.flush()
        else:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
            w.flush()
            for i, event in enumerate(behaviour.events):
                if behaviour.cut_after is not None and i >= behaviour.cut_after:
                    self._reset(handler)
                    return
                if behaviour.delay:
                    time.sleep(behaviour.delay)
                w.write(event.encode())
                w.flush()


@contextmanager
def fake_model_server(default: Behaviour | None = None) -> Iterator[FakeModelServer]:
    server = FakeModelServer(default).start()
    try:
        yield server
    finally:
        server.stop()
