"""A threaded loopback HTTP server whose misbehaviour the tests script request by request.

Each request gets one action, a ``+``-joined list of steps, taken from the first of: the
path's own queue (``Plan.paths``), the shared queue (``Plan.script``), the path's standing
rule (``Plan.rules``), else ``ok``. Steps:

==================  =======================================================================
``ok``              serve the file (honouring Range and If-Range)
``NNN``             answer with that status and no body (``500``, ``429``, ``503`` …)
``drop:K``          send K bytes of the body, then close the connection
``stall:K``         send K bytes, wait ``stall_seconds``, then close
``trickle``         send the body one byte every ``trickle_seconds`` (a slow loris)
``pace:N:S``        send the body N bytes at a time, S seconds apart
``ignore-range``    send the whole file with 200 whatever the Range header says
``ignore-if-range`` honour Range even when If-Range names another version of the file
``bad-start``       answer a range with a Content-Range that starts one byte late
``bad-total``       answer a range with a Content-Range whose total is wrong
``corrupt``         flip one byte in the middle of the file
``change``          from now on serve ``Plan.changed[path]`` (a new ETag and Last-Modified)
``huge-length``     declare Content-Length 10**15, send 64 KiB, close
``endless``         declare the true length, then keep sending garbage after the body
``overlong``        declare and send 4 KiB of garbage more than the range or file holds
``chunked``         send the body chunked (no declared length)
``chunked-endless`` send the body chunked, then garbage chunks forever
``redirect:URL``    answer 302 with Location URL (relative or absolute, any scheme)
``no-validators``   send neither ETag nor Last-Modified
==================  =======================================================================

Endless bodies stop after ``endless_seconds`` or when the client hangs up.
"""

from __future__ import annotations

import email.utils
import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HUGE = 10**15
GARBAGE = b"\xa5" * 65536


@dataclass
class Plan:
    """Files to serve and, per request, what to do (see the module docstring)."""

    files: dict[str, bytes] = field(default_factory=dict)
    script: deque[str] = field(default_factory=deque)
    ranges: list[str | None] = field(default_factory=list)  # Range header of every request
    stall_seconds: float = 3.0
    paths: dict[str, deque[str]] = field(default_factory=dict)  # per-path queues
    rules: dict[str, str] = field(default_factory=dict)  # per-path standing actions
    changed: dict[str, bytes] = field(default_factory=dict)  # what ``change`` switches to
    trickle_seconds: float = 0.05
    endless_seconds: float = 10.0
    requests: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    generation: dict[str, int] = field(default_factory=dict)  # bumped by ``change``

    def action(self, path: str) -> str:
        queue = self.paths.get(path)
        if queue:
            return queue.popleft()
        if self.script:
            return self.script.popleft()
        return self.rules.get(path, "ok")

    def validators(self, path: str, body: bytes) -> dict[str, str]:
        gen = self.generation.get(path, 0)
        return {"ETag": f'"{hashlib.sha256(body).hexdigest()[:16]}"',
                "Last-Modified": email.utils.formatdate(1_600_000_000 + 3600 * gen,
                                                        usegmt=True)}


class _Handler(BaseHTTPRequestHandler):
    plan: Plan
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        try:
            self._get()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client hung up: that is its right

    def _get(self) -> None:
        plan = self.plan
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        plan.ranges.append(rng)
        plan.requests.append((self.path, rng, if_range))
        steps = plan.action(self.path).split("+")
        flags = set(steps)
        for step in steps:
            if step.startswith("redirect:"):
                self.send_response(302)
                self.send_header("Location", step.removeprefix("redirect:"))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if step.isdigit():
                self._status(int(step))
                return
        if "change" in flags:
            plan.files[self.path] = plan.changed[self.path]
            plan.generation[self.path] = plan.generation.get(self.path, 0) + 1
        body = plan.files.get(self.path)
        if body is None:
            self._status(404)
            return
        validators = plan.validators(self.path, body)
        if "corrupt" in flags:
            flipped = bytearray(body)
            flipped[len(body) // 2] ^= 0xFF
            body = bytes(flipped)
        start = 0
        current = if_range is None or if_range in validators.values()
        if rng and "ignore-range" not in flags and (current or "ignore-if-range" in flags):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        payload = body[start:]
        self.send_response(206 if start else 200)
        if start:
            claimed = start + 1 if "bad-start" in flags else start
            total = len(body) + 1000 if "bad-total" in flags else len(body)
            self.send_header("Content-Range", f"bytes {claimed}-{len(body) - 1}/{total}")
        if "no-validators" not in flags:
            for name, value in validators.items():
                self.send_header(name, value)
        self.send_header("Content-Type", "application/octet-stream")
        if "chunked" in flags or "chunked-endless" in flags:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunked(payload, endless="chunked-endless" in flags)
            return
        extra = GARBAGE[:4096] if "overlong" in flags else b""
        length = HUGE if "huge-length" in flags else len(payload) + len(extra)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self._body(payload + extra, steps, flags)

    def _body(self, payload: bytes, steps: list[str], flags: set[str]) -> None:
        plan = self.plan
        if "huge-length" in flags:
            self.wfile.write(payload[:65536])
            self.close_connection = True
            return
        for step in steps:
            kind, _, arg = step.partition(":")
            if kind in ("drop", "stall"):
                self.wfile.write(payload[:int(arg)])
                self.wfile.flush()
                if kind == "stall":
                    time.sleep(plan.stall_seconds)
                self.close_connection = True
                return
            if kind == "pace":
                size, delay = arg.split(":")
                for i in range(0, len(payload), int(size)):
                    self.wfile.write(payload[i:i + int(size)])
                    self.wfile.flush()
                    time.sleep(float(delay))
                return
        if "trickle" in flags:
            until = time.monotonic() + plan.endless_seconds
            for i in range(len(payload)):
                if time.monotonic() > until:
                    break
                self.wfile.write(payload[i:i + 1])
                self.wfile.flush()
                time.sleep(plan.trickle_seconds)
            self.close_connection = True
            return
        self.wfile.write(payload)
        if "endless" in flags:
            self._garbage(lambda: self.wfile.write(GARBAGE))

    def _chunked(self, payload: bytes, endless: bool) -> None:
        def chunk(data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

        for i in range(0, len(payload), 65536):
            chunk(payload[i:i + 65536])
        if endless:
            self._garbage(lambda: chunk(GARBAGE))
        else:
            self.wfile.write(b"0\r\n\r\n")

    def _garbage(self, send: Callable[[], object]) -> None:
        until = time.monotonic() + self.plan.endless_seconds
        while time.monotonic() < until:
            send()
        self.close_connection = True

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
