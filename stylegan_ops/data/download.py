"""Resumable, verified HTTP(S) downloads: ``curl -C -`` done properly.

The body goes to ``FILE.part``; a dropped connection resumes from the part's byte offset
with an HTTP Range request, retrying with exponential backoff; the finished part is checked
against the published checksum and renamed to ``FILE`` only when it matches.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per read; large reads keep Python out of the hot path
USER_AGENT = "stylegan-ops-download/1"
_HEX = re.compile(r"^[0-9a-fA-F]+$")


def _check_hex(name: str, value: str | None, length: int) -> str | None:
    if value is None:
        return None
    if len(value) != length or not _HEX.match(value):
        raise StageError(f"{name} must be {length} hex digits, got {value!r}")
    return value.lower()


@dataclass(frozen=True)
class DownloadConfig:
    """A URL, the file to write, and how to trust it."""

    url: str
    out: Path
    md5: str | None = None  # expected md5 (hex); exclusive with md5_url
    md5_url: str | None = None  # URL of an md5sum-style file ("<hex>  <name>" or bare hex)
    sha256: str | None = None  # expected sha256 (hex)
    retries: int = 8  # consecutive failed attempts (no progress) before giving up
    timeout: float = 30.0  # seconds without data before a connection counts as stalled
    backoff: float = 1.0  # first retry delay in seconds; doubles each time, capped at 60

    def __post_init__(self) -> None:
        for name, url in (("url", self.url), ("md5-url", self.md5_url)):
            if url is not None and urllib.parse.urlparse(url).scheme not in ("http", "https"):
                raise StageError(f"{name} must be an http(s) URL, got {url!r}")
        if self.md5 is not None and self.md5_url is not None:
            raise StageError("give either --md5 or --md5-url, not both")
        object.__setattr__(self, "md5", _check_hex("md5", self.md5, 32))
        object.__setattr__(self, "sha256", _check_hex("sha256", self.sha256, 64))
        if self.retries < 0:
            raise StageError(f"retries must be >= 0, got {self.retries}")
        if self.timeout <= 0:
            raise StageError(f"timeout must be > 0, got {self.timeout}")


@dataclass(frozen=True)
class DownloadResult:
    out: str
    bytes: int
    md5: str | None  # computed when an md5 was given to check against
    sha256: str | None  # computed when a sha256 was given to check against
    verified: bool  # a published checksum was compared and matched
    resumed_from: int  # bytes already in FILE.part when this run started
    attempts: int
    reused: bool = False  # FILE was already complete; nothing was downloaded

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Retry(Exception):  # noqa: N818 - internal signal, not an error for users
    """A recoverable failure: back off and try again from the current offset."""

    def __init__(self, message: str, progressed: bool = False) -> None:
        super().__init__(message)
        self.progressed = progressed  # bytes arrived first: the failure count starts over


class _Hasher:
    """The requested digests, each on its own thread so hashing overlaps network reads.

    Only what will be verified is computed: a plain transfer runs at full speed.
    """

    def __init__(self, algorithms: tuple[str, ...]) -> None:
        self._hashes = {name: hashlib.new(name, usedforsecurity=False) for name in algorithms}
        self._queues: list[queue.Queue[bytes | memoryview | None]] = []
        self._threads = []
        for h in self._hashes.values():
            q: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=32)
            thread = threading.Thread(target=self._work, args=(h, q), daemon=True)
            thread.start()
            self._queues.append(q)
            self._threads.append(thread)

    @staticmethod
    def _work(h: Any, q: queue.Queue[bytes | memoryview | None]) -> None:
        while (chunk := q.get()) is not None:
            h.update(chunk)  # releases the GIL for large buffers

    def update(self, chunk: bytes | memoryview) -> None:
        for q in self._queues:
            q.put(chunk)

    def finish(self) -> dict[str, str]:
        for q in self._queues:
            q.put(None)
        for thread in self._threads:
            thread.join()
        return {name: h.hexdigest() for name, h in self._hashes.items()}


def _hash_file(path: Path, hasher: _Hasher) -> int:
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK * 4):
            hasher.update(chunk)
            size += len(chunk)
    return size


def _open(url: str, timeout: float, offset: int = 0) -> HTTPResponse:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)  # noqa: S310 - scheme checked
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retry(f"HTTP {exc.code} from {url}") from exc
        if exc.code == 416:
            raise
        raise StageError(f"HTTP {exc.code} {exc.reason} for {url}") from exc
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        raise _Retry(f"cannot connect to {url}: {exc}") from exc
    assert isinstance(resp, HTTPResponse)
    return resp


def _with_retries(cfg: DownloadConfig, what: str, attempt: Any) -> Any:
    """Call ``attempt()`` until it succeeds, backing off on _Retry."""
    failures = 0
    while True:
        try:
            return attempt()
        except _Retry as exc:
            failures = 1 if exc.progressed else failures + 1
            if failures > cfg.retries:
                raise StageError(f"giving up on {what} after {failures} attempts: {exc}") from exc
            delay = min(60.0, cfg.backoff * 2 ** (failures - 1))
            log.warning("%s; retrying in %.1fs (%d/%d)", exc, delay, failures, cfg.retries)
            time.sleep(delay)


def fetch_md5(cfg: DownloadConfig) -> str:
    """Read the expected md5 from an md5sum-style file at ``cfg.md5_url``."""
    assert cfg.md5_url is not None
    url = cfg.md5_url

    def attempt() -> bytes:
        with _open(url, cfg.timeout) as resp:
            try:
                return resp.read(1 << 16)
            except (OSError, HTTPException) as exc:
                raise _Retry(f"reading {url}: {exc}") from exc

    text = _with_retries(cfg, url, attempt).decode("utf-8", "replace").strip()
    digest = text.split()[0] if text else ""
    checked = _check_hex(f"md5 file {url}", digest, 32)
    assert checked is not None
    return checked


def run(cfg: DownloadConfig) -> DownloadResult:
    """Download ``cfg.url`` to ``cfg.out``, resuming and verifying."""
    md5 = fetch_md5(cfg) if cfg.md5_url else cfg.md5
    expected: dict[str, str | None] = {"md5": md5, "sha256": cfg.sha256}
    if cfg.out.exists():
        return _reuse(cfg, expected)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    part = cfg.out.with_name(cfg.out.name + ".part")
    algorithms = tuple(name for name, want in expected.items() if want)
    hasher = _Hasher(algorithms)
    resumed_from = _hash_file(part, hasher) if part.exists() else 0
    state = _State(hasher, algorithms)

    def attempt() -> int:
        state.attempts += 1
        return _transfer(cfg, part, state)

    try:
        size = _with_retries(cfg, cfg.url, attempt)
    except BaseException:
        state.hasher.finish()
        raise
    got = state.hasher.finish()
    for name, digest in got.items():
        if expected[name] != digest:
            part.unlink(missing_ok=True)  # the bytes are wrong: resuming them cannot help
            raise StageError(f"{name} mismatch for {cfg.url}: expected {expected[name]}, "
                             f"got {digest}")
    part.replace(cfg.out)
    return DownloadResult(str(cfg.out), size, got.get("md5"), got.get("sha256"),
                          verified=bool(got), resumed_from=resumed_from,
                          attempts=state.attempts)


def _reuse(cfg: DownloadConfig, expected: dict[str, str | None]) -> DownloadResult:
    """FILE exists: a no-op when it matches, an error (leaving it alone) when it does not."""
    hasher = _Hasher(tuple(name for name, want in expected.items() if want))
    size = _hash_file(cfg.out, hasher)
    got = hasher.finish()
    for name, digest in got.items():
        if expected[name] != digest:
            raise StageError(f"{cfg.out} exists but its {name} is {digest}, expected "
                             f"{expected[name]}; "
                             "remove it to download again")
    log.info("%s is already complete", cfg.out)
    return DownloadResult(str(cfg.out), size, got.get("md5"), got.get("sha256"),
                          verified=bool(got), resumed_from=size, attempts=0,
                          reused=True)


@dataclass
class _State:
    """What survives between attempts: the running hashes of FILE.part."""

    hasher: _Hasher
    algorithms: tuple[str, ...]
    attempts: int = 0


def _restart(part: Path, state: _State) -> None:
    """Throw the partial file away and start hashing afresh."""
    state.hasher.finish()
    state.hasher = _Hasher(state.algorithms)
    part.write_bytes(b"")


def _transfer(cfg: DownloadConfig, part: Path, state: _State) -> int:
    """One connection: resume from the part's size; return the final size when complete."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(cfg.url, cfg.timeout, offset)
    except urllib.error.HTTPError as exc:  # 416: nothing past our offset
        total = _total_from_range(exc.headers.get("Content-Range", ""))
        if total is not None and total == offset:
            return offset
        log.warning("server refused range %d- (size %s); restarting", offset, total)
        _restart(part, state)
        raise _Retry("range not satisfiable") from exc
    with resp:
        if resp.status == 206:
            start = _start_from_range(resp.headers.get("Content-Range", ""))
            if start != offset:
                _restart(part, state)
                raise _Retry(f"server resumed at byte {start}, not {offset}")
        elif offset:
            log.warning("server ignored the Range request; restarting from byte 0")
            _restart(part, state)
            offset = 0
        length = resp.length  # bytes still to come, when the server said
        total = offset + length if length is not None else None
        received = 0
        hasher = state.hasher
        interval = 0.5 if sys.stderr.isatty() else 10.0
        with part.open("ab") as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=part.name[:-5],
                                         mininterval=interval, file=sys.stderr) as bar:
            while True:
                buf = bytearray(CHUNK)
                try:
                    n = resp.readinto(buf)
                except (TimeoutError, OSError, HTTPException) as exc:
                    raise _Retry(f"connection lost after {offset + received} bytes: "
                                 f"{exc or type(exc).__name__}", received > 0) from exc
                if not n:
                    break
                # A fresh buffer per read, so the hashing thread can own this one.
                chunk = memoryview(buf)[:n]
                f.write(chunk)
                hasher.update(chunk)
                received += n
                bar.update(n)
            f.flush()
            os.fsync(f.fileno())
        if length is not None and received < length:
            raise _Retry(f"connection closed after {offset + received} of {total} bytes",
                         received > 0)
        return offset + received


def _start_from_range(value: str) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value.strip())
    return int(match.group(1)) if match else None


def _total_from_range(value: str) -> int | None:
    match = re.match(r"bytes (?:\*|\d+-\d+)/(\d+)", value.strip())
    return int(match.group(1)) if match else None
