"""The on-disk state of an unfinished download, beside ``FILE``:

- ``FILE.part``: the bytes kept so far;
- ``FILE.part.json``: where they came from (URL, ETag, Last-Modified, size), so a resume
  asks for the same file (If-Range) and a file that changed on the server restarts;
- ``FILE.lock``: an flock held for the whole run, so one process at a time writes the part.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from http.client import HTTPResponse
from pathlib import Path

from stylegan_ops.errors import StageError
from stylegan_ops.fetch import Budget, write_error
from stylegan_ops.fsutil import write_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartFiles:
    out: Path
    part: Path  # FILE.part
    origin: Path  # FILE.part.json
    lock: Path  # FILE.lock

    @classmethod
    def beside(cls, out: Path) -> PartFiles:
        """The files of a download to ``out``, once ``out`` is known to be usable."""
        if out.is_dir():
            raise StageError(f"--out is a directory: {out}")
        if out.exists() and not out.is_file():
            raise StageError(f"--out exists and is not a regular file: {out}")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise StageError(f"--out {out}: {exc.filename} is not a directory") from exc
        except OSError as exc:
            raise StageError(f"--out {out}: cannot create {exc.filename or out.parent}: "
                             f"{exc.strerror}") from exc
        name = out.name
        return cls(out, out.with_name(name + ".part"), out.with_name(name + ".part.json"),
                   out.with_name(name + ".lock"))

    def discard(self) -> None:
        """Forget the partial download: its bytes are of no use."""
        self.part.unlink(missing_ok=True)
        self.origin.unlink(missing_ok=True)


@contextmanager
def exclusive(files: PartFiles, lock_wait: float, budget: Budget) -> Iterator[None]:
    """Hold an flock on FILE.lock: one writer of FILE.part at a time.

    A second download waits (at most ``lock_wait`` seconds, never past the deadline) for
    the first, then finds FILE and verifies it. The holder unlinks the lock file before
    closing it, so a waiter that wakes up holding the lock of an unlinked file tries again
    on the current one; a lock file left by a killed run holds no lock and costs nothing.
    """
    lock = files.lock
    left = budget.remaining()
    give_up = time.monotonic() + (lock_wait if left is None else min(lock_wait, left))
    delay, said = 0.05, False
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StageError(f"--out {files.out}: cannot write {lock}: {exc.strerror}") \
                from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            if time.monotonic() >= give_up:
                raise StageError(f"another download (pid {holder}) holds {lock}; gave up "
                                 f"waiting after {lock_wait:g}s (--lock-wait)") from None
            if not said:
                log.info("waiting for the download of %s by pid %s", files.out, holder)
                said = True
            time.sleep(max(0.0, min(delay, give_up - time.monotonic())))
            delay = min(delay * 2, 1.0)
            continue
        try:
            st, held = lock.stat(), os.fstat(fd)
            current = (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the waiter's message
        yield
    finally:
        try:
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)


@dataclass
class Origin:
    """Which file on the server the bytes in FILE.part came from (FILE.part.json)."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    total: int | None = None  # the file's size, when the server said

    @classmethod
    def from_response(cls, url: str, resp: HTTPResponse, total: int | None) -> Origin:
        return cls(url, resp.headers.get("ETag"), resp.headers.get("Last-Modified"), total)

    @classmethod
    def load(cls, path: Path) -> Origin | None:
        try:
            d = json.loads(path.read_text())
            origin = cls(str(d["url"]), d.get("etag"), d.get("last_modified"), d.get("total"))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no record, or a damaged one: the part's origin is unknown
        ok = all(isinstance(v, str | None) for v in (origin.etag, origin.last_modified))
        return origin if ok and isinstance(origin.total, int | None) else None

    def save(self, path: Path) -> None:
        try:
            write_atomic(path, json.dumps(asdict(self)).encode())
        except OSError as exc:
            raise write_error(path, exc) from exc

    def if_range(self) -> str | None:
        """The validator If-Range accepts: a strong ETag, else the Last-Modified date."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def same_file(self, resp: HTTPResponse, total: int | None) -> bool:
        """Whether a 206 answer is a range of the file the part came from. Catches servers
        that answer a range without evaluating If-Range."""
        etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
        return ((self.etag is None or etag is None or etag == self.etag)
                and (self.last_modified is None or modified is None
                     or modified == self.last_modified)
                and (self.total is None or total is None or total == self.total))
