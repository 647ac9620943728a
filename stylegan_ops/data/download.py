"""Resumable, verified HTTP(S) downloads: ``curl -C -`` done properly.

The body goes to ``FILE.part``; a dropped connection resumes from the part's byte offset
with an HTTP Range request (and If-Range, so a file that changed on the server restarts
instead of being spliced), retrying with exponential backoff; the finished part is checked
against the published checksum and renamed to ``FILE`` only when it matches.

Beside the part live ``FILE.part.json`` (the URL and the server's validators for the bytes
in the part) and, while a download runs, ``FILE.lock``: one writer per part, so an Airflow
retry that overlaps a still-running earlier try waits for it and reuses its file (see
``partial``). Progress, for the retry count, is bytes kept in the part, never bytes received.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import queue
import re
import sys
import threading
import urllib.error
from dataclasses import asdict, dataclass
from http.client import HTTPResponse
from pathlib import Path
from typing import Any

from stylegan_ops.data.partial import Origin, PartFiles, exclusive
from stylegan_ops.errors import StageError
from stylegan_ops.fetch import (
    Budget,
    Retry,
    check_room,
    check_url,
    iter_body,
    open_url,
    read_capped,
    with_retries,
    write_error,
)

log = logging.getLogger(__name__)

_HEX = re.compile(r"^[0-9a-fA-F]+$")
MD5_FILE_LIMIT = 1 << 16  # an md5sum line is ~100 bytes; anything past this is not one


def _check_hex(name: str, value: str | None, length: int) -> str | None:
    if value is None:
        return None
    if len(value) != length or not _HEX.match(value):
        raise StageError(f"{name} must be {length} hex digits, got {value!r}")
    return value.lower()


@dataclass(frozen=True)
class DownloadConfig:
    """A URL, the file to write, how to trust it and how long to keep trying."""

    url: str
    out: Path
    md5: str | None = None  # expected md5 (hex); exclusive with md5_url
    md5_url: str | None = None  # URL of an md5sum-style file ("<hex>  <name>" or bare hex)
    sha256: str | None = None  # expected sha256 (hex)
    retries: int = 8  # failed attempts in a row (none keeping new bytes) before giving up
    timeout: float = 30.0  # seconds without data before a connection counts as stalled
    backoff: float = 1.0  # first retry delay in seconds; doubles each time, capped at 60
    deadline: float | None = None  # seconds for the whole download (None: no limit)
    max_bytes: int | None = None  # refuse a larger file; the only cap on a body of
    #                               undeclared length (None: the free disk space)
    lock_wait: float = 3600.0  # seconds to wait for another download of the same FILE

    def __post_init__(self) -> None:
        check_url("url", self.url)
        if self.md5_url is not None:
            check_url("md5-url", self.md5_url)
        if self.md5 is not None and self.md5_url is not None:
            raise StageError("give either --md5 or --md5-url, not both")
        object.__setattr__(self, "md5", _check_hex("md5", self.md5, 32))
        object.__setattr__(self, "sha256", _check_hex("sha256", self.sha256, 64))
        self.budget()  # validates retries, timeout, backoff and deadline
        if self.max_bytes is not None and self.max_bytes < 1:
            raise StageError(f"max-bytes must be >= 1, got {self.max_bytes}")
        if not (math.isfinite(self.lock_wait) and self.lock_wait >= 0):
            raise StageError(f"lock-wait must be a finite number >= 0, got {self.lock_wait}")

    def budget(self) -> Budget:
        """A fresh retry budget: the deadline counts from this call."""
        return Budget(self.retries, self.timeout, self.backoff, self.deadline)


@dataclass(frozen=True)
class DownloadResult:
    out: str
    bytes: int
    md5: str | None  # of FILE, computed when an md5 was given to check against
    sha256: str | None  # of FILE, computed when a sha256 was given to check against
    verified: bool  # a published checksum was compared and matched
    resumed_from: int  # bytes already in FILE.part when this run started
    attempts: int
    reused: bool = False  # FILE was already complete; nothing was downloaded

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Hasher:
    """The requested digests, each on its own thread so hashing overlaps network reads.

    Only what will be verified is computed: a plain transfer runs at full speed. ``count``
    is the number of bytes hashed, so the caller can prove the digest covers the whole file.
    """

    def __init__(self, algorithms: tuple[str, ...]) -> None:
        self.count = 0
        self._hashes = {name: hashlib.new(name, usedforsecurity=False) for name in algorithms}
        self._queues: list[queue.Queue[bytes | None]] = []
        self._threads = []
        for h in self._hashes.values():
            q: queue.Queue[bytes | None] = queue.Queue(maxsize=32)
            thread = threading.Thread(target=self._work, args=(h, q), daemon=True)
            thread.start()
            self._queues.append(q)
            self._threads.append(thread)

    @staticmethod
    def _work(h: Any, q: queue.Queue[bytes | None]) -> None:
        while (chunk := q.get()) is not None:
            h.update(chunk)  # releases the GIL for large buffers

    def update(self, chunk: bytes) -> None:
        self.count += len(chunk)
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
        while chunk := f.read(1 << 22):
            hasher.update(chunk)
            size += len(chunk)
    return size


def fetch_md5(cfg: DownloadConfig, budget: Budget | None = None) -> str:
    """Read the expected md5 from an md5sum-style file at ``cfg.md5_url``."""
    assert cfg.md5_url is not None
    data = read_capped(budget or cfg.budget(), cfg.md5_url, MD5_FILE_LIMIT)
    text = data.decode("utf-8", "replace").strip()
    digest = text.split()[0] if text else ""
    checked = _check_hex(f"md5 file {cfg.md5_url}", digest, 32)
    assert checked is not None
    return checked


def run(cfg: DownloadConfig) -> DownloadResult:
    """Download ``cfg.url`` to ``cfg.out``, resuming and verifying."""
    budget = cfg.budget()
    files = PartFiles.beside(cfg.out)
    md5 = fetch_md5(cfg, budget) if cfg.md5_url else cfg.md5
    expected: dict[str, str | None] = {"md5": md5, "sha256": cfg.sha256}
    with exclusive(files, cfg.lock_wait, budget):
        if cfg.out.exists():  # complete already, possibly by the run we waited for
            return _reuse(cfg, expected)
        return _download(cfg, budget, files, expected)


def _reuse(cfg: DownloadConfig, expected: dict[str, str | None]) -> DownloadResult:
    """FILE exists: a no-op when it matches, an error (leaving it alone) when it does not."""
    hasher = _Hasher(tuple(name for name, want in expected.items() if want))
    size = _hash_file(cfg.out, hasher)
    got = hasher.finish()
    for name, digest in got.items():
        if expected[name] != digest:
            raise StageError(f"{cfg.out} exists but its {name} is {digest}, expected "
                             f"{expected[name]}; remove it to download again")
    log.info("%s is already complete", cfg.out)
    return DownloadResult(str(cfg.out), size, got.get("md5"), got.get("sha256"),
                          verified=bool(got), resumed_from=size, attempts=0, reused=True)


@dataclass
class _State:
    """What survives between attempts."""

    hasher: _Hasher
    algorithms: tuple[str, ...]
    origin: Origin
    best: int = 0  # the most bytes FILE.part ever held in this run: progress is beating it
    attempts: int = 0


def _download(cfg: DownloadConfig, budget: Budget, files: PartFiles,
              expected: dict[str, str | None]) -> DownloadResult:
    part = files.part
    algorithms = tuple(name for name, want in expected.items() if want)
    origin = Origin.load(files.origin) if part.exists() else None
    if part.exists() and not _resumable(part, origin, cfg, algorithms):
        files.discard()
        origin = None
    state = _State(_Hasher(algorithms), algorithms, origin or Origin(cfg.url))
    resumed_from = _hash_file(part, state.hasher) if part.exists() else 0
    state.best = resumed_from

    def attempt() -> int:
        state.attempts += 1
        try:
            return _transfer(cfg, budget, files, state)
        except Retry as exc:
            kept = part.stat().st_size if part.exists() else 0
            exc.progressed = kept > state.best
            state.best = max(state.best, kept)
            raise

    try:
        size = with_retries(budget, cfg.url, attempt)
    except BaseException:
        state.hasher.finish()
        raise
    got = state.hasher.finish()
    if state.hasher.count != size or part.stat().st_size != size:
        raise StageError(f"{part} changed while it was being downloaded ({size} bytes "
                         f"expected); remove it and download again")
    for name, digest in got.items():
        if expected[name] != digest:
            files.discard()  # the bytes are wrong: resuming them cannot help
            raise StageError(f"{name} mismatch for {cfg.url}: expected {expected[name]}, "
                             f"got {digest}")
    try:
        part.replace(cfg.out)
    except OSError as exc:
        raise StageError(f"cannot rename {part} to {cfg.out}: {exc.strerror}") from exc
    files.origin.unlink(missing_ok=True)
    return DownloadResult(str(cfg.out), size, got.get("md5"), got.get("sha256"),
                          verified=bool(got), resumed_from=resumed_from,
                          attempts=state.attempts)


def _resumable(part: Path, origin: Origin | None, cfg: DownloadConfig,
               algorithms: tuple[str, ...]) -> bool:
    """Whether the bytes in an existing FILE.part may be continued."""
    if origin is None:
        # No record of where they came from (a part from elsewhere): continue it like
        # `curl -C -` only when a checksum will judge the result.
        return bool(algorithms)
    size = part.stat().st_size
    return origin.url == cfg.url and (origin.total is None or size <= origin.total)


def _restart(files: PartFiles, state: _State, origin: Origin) -> None:
    """Throw the partial file away and start hashing afresh, for a file from ``origin``."""
    state.hasher.finish()
    state.hasher = _Hasher(state.algorithms)
    state.origin = origin
    origin.save(files.origin)  # first: bytes in the part are never of an unrecorded origin
    try:
        files.part.write_bytes(b"")
    except OSError as exc:
        raise write_error(files.part, exc) from exc


def _transfer(cfg: DownloadConfig, budget: Budget, files: PartFiles, state: _State) -> int:
    """One connection: resume from the part's size; return the final size when complete."""
    part = files.part
    offset = part.stat().st_size if part.exists() else 0
    headers = {}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator := state.origin.if_range():
            headers["If-Range"] = validator
    try:
        resp = open_url(cfg.url, budget.read_timeout(), headers)
    except urllib.error.HTTPError as exc:  # 416: nothing past our offset
        total = _total_from_range(exc.headers.get("Content-Range", ""))
        if offset and total == offset and state.origin.total in (None, total):
            return offset
        log.warning("server refused range %d- (size %s); restarting", offset, total)
        _restart(files, state, Origin(cfg.url))
        raise Retry(f"range {offset}- not satisfiable (size {total})") from exc
    with resp:
        crange = _parse_range(resp.headers.get("Content-Range", "")) \
            if resp.status == 206 else None
        expect: int | None  # body bytes the server declared
        if resp.status == 206 and offset:
            # We asked for the rest of the file: the range must start at our offset and,
            # when the size is given, run to its end.
            if crange is None or crange[0] != offset or crange[2] not in (None, crange[1] + 1):
                _restart(files, state, Origin(cfg.url))
                raise Retry(f"server answered a resume from byte {offset} with Content-Range "
                            f"{resp.headers.get('Content-Range')!r}")
            if not state.origin.same_file(resp, crange[2]):
                _restart(files, state, Origin(cfg.url))
                raise Retry(f"{cfg.url} changed on the server since byte 0 of {part.name}")
            expect = crange[1] + 1 - offset
            _check_size(cfg, files, offset, expect)
        elif resp.status in (200, 206):
            if offset:  # the whole file: Range ignored, or If-Range saw a changed file
                log.warning("server sent the whole file instead of bytes %d-; restarting",
                            offset)
                offset = 0
            if crange is not None and crange[0] != 0:
                raise Retry(f"server sent Content-Range {crange} for a plain GET")
            expect = crange[1] + 1 if crange is not None else resp.length
            _check_size(cfg, files, 0, expect)  # before the restart empties the part
            _restart(files, state, Origin.from_response(
                cfg.url, resp, crange[2] if crange is not None else expect))
        else:
            raise StageError(f"unexpected HTTP {resp.status} for {cfg.url}")
        return _receive(cfg, budget, resp, files, state, offset, expect)


def _check_size(cfg: DownloadConfig, files: PartFiles, offset: int,
                expect: int | None) -> None:
    """Refuse a declared size over --max-bytes or over the free space, before writing."""
    if expect is None:
        return
    if cfg.max_bytes is not None and offset + expect > cfg.max_bytes:
        files.discard()
        raise StageError(f"{cfg.url} is {offset + expect} bytes, more than --max-bytes "
                         f"{cfg.max_bytes}")
    check_room(files.part.parent, expect, cfg.url)


def _receive(cfg: DownloadConfig, budget: Budget, resp: HTTPResponse, files: PartFiles,
             state: _State, offset: int, expect: int | None) -> int:
    """Append the body to the part; ``expect`` is what the server declared, if anything."""
    from tqdm import tqdm

    part = files.part
    total = offset + expect if expect is not None else None
    # A declared length caps the read (a longer body is cut there); an undeclared one is
    # capped one byte past --max-bytes, to tell "exactly at the cap" from "past it".
    cap = expect if expect is not None else (
        cfg.max_bytes - offset + 1 if cfg.max_bytes is not None else None)
    received = 0
    interval = 0.5 if sys.stderr.isatty() else 10.0
    try:  # OSError here is the disk's: iter_body turns the network's into Retry
        with part.open("ab") as f, tqdm(total=total, initial=offset, unit="B",
                                         unit_scale=True, unit_divisor=1024,
                                         desc=part.name[:-5], mininterval=interval,
                                         file=sys.stderr) as bar:
            for chunk in iter_body(resp, cap, budget, cfg.url):
                if cfg.max_bytes is not None and offset + received + len(chunk) > cfg.max_bytes:
                    files.discard()
                    raise StageError(f"{cfg.url} sent more than --max-bytes {cfg.max_bytes} "
                                     "bytes; stopped")
                f.write(chunk)
                state.hasher.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise write_error(part, exc) from exc
    if expect is not None and received < expect:
        raise Retry(f"connection closed after {offset + received} of {total} bytes")
    return offset + received


def _parse_range(value: str) -> tuple[int, int, int | None] | None:
    """``bytes START-END/TOTAL`` (TOTAL may be ``*``) as (start, end, total)."""
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", value.strip())
    if not match:
        return None
    start, end = int(match.group(1)), int(match.group(2))
    total = None if match.group(3) == "*" else int(match.group(3))
    if end < start or (total is not None and end >= total):
        return None
    return start, end, total


def _total_from_range(value: str) -> int | None:
    match = re.match(r"bytes (?:\*|\d+-\d+)/(\d+)", value.strip())
    return int(match.group(1)) if match else None
