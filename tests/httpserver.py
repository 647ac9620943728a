"""A threaded loopback HTTP server whose misbehaviour the tests script request by request."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Plan:
    """Files to serve and, per request, what to do: ``ok``, ``drop:K``, ``stall:K``, ``500``,
    ``429``, ``ignore-range``, ``corrupt`` or ``bad-start``. Unscripted requests are ``ok``."""

    files: dict[str, bytes] = field(default_factory=dict)
    script: deque[str] = field(default_factory=deque)
    ranges: list[str | None] = field(default_factory=list)  # Range header of every request
    stall_seconds: float = 3.0


class _Handler(BaseHTTPRequestHandler):
    plan: Plan
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        plan = self.plan
        rng = self.headers.get("Range")
        plan.ranges.append(rng)
        action = plan.script.popleft() if plan.script else "ok"
        body = plan.files.get(self.path)
        if body is None:
            self._status(404)
            return
        if action in ("500", "429"):
            self._status(int(action))
            return
        start = 0
        if rng and action != "ignore-range":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        if action == "corrupt":
            body = bytearray(body)
            body[len(body) // 2] ^= 0xFF
            body = bytes(body)
        claimed = start + 1 if action == "bad-start" else start
        payload = body[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {claimed}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if action.startswith(("drop:", "stall:")):
            k = int(action.split(":")[1])
            self.wfile.write(payload[:k])
            self.wfile.flush()
            if action.startswith("stall:"):
                time.sleep(plan.stall_seconds)
            self.close_connection = True
            return
        self.wfile.write(payload)

    def _status(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


class LoopbackServer:
    """Serve a Plan on 127.0.0.1 on a free port until stopped."""

    def __init__(self, plan: Plan) -> None:
        handler = type("Handler", (_Handler,), {"plan": plan})
        self.plan = plan
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
