"""What every part of the store shares: paths, the lock, atomic writes, failpoints, and the
log of damaged records readers skipped.

The store lock (``lock``, flock) is shared by every writer (snapshot, adopt/pull, tag,
untag, checkout's state updates, verify's flags) and exclusive for gc and fsck, which may
delete: they never run beside a writer. Per-name ``names/<name>/.lock`` serialises the
writers of one name (numbers, tags, index).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import logging
import os
import secrets
import signal
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError
from stylegan_ops.store.model import SHA_RE, load_json

log = logging.getLogger("stylegan_ops.store")
SUBDIRS = ("objects/sha256", "manifests", "names", "state", "tmp")
MAX_RECORD = 64 << 20  # a version record, tag or cache file larger than this is damage


def failpoint(name: str) -> None:
    """Crash here (SIGKILL) when STYLEGAN_STORE_FAILPOINT names this point: crash tests."""
    if os.environ.get("STYLEGAN_STORE_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)



def default_root() -> Path:
    return Path(os.environ.get("STYLEGAN_STORE", ".stylegan-store"))


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Problem:
    """Something a reader or ``verify`` found wrong.

    ``problem`` is one of: missing | size | hash | unreadable | manifest: … (a version's
    data), record: … (a damaged version record or tag file, ``path`` relative to the store).
    """

    version: str
    path: str
    sha256: str
    problem: str

    def to_dict(self) -> dict[str, str]:
        return {"version": self.version, "path": self.path, "sha256": self.sha256,
                "problem": self.problem}


def read_small(path: Path, what: str) -> bytes:
    """The bytes of a small regular file; a symlink, directory, huge or unreadable file is
    a StageError saying which."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise StageError(f"{what} is not a regular file")
        if st.st_size > MAX_RECORD:
            raise StageError(f"{what} is {st.st_size} bytes, too large")
        with open(path, "rb") as f:
            return f.read(MAX_RECORD + 1)
    except OSError as exc:
        raise StageError(f"cannot read {what}: {exc.strerror or exc}") from exc


def read_json_record(path: Path, what: str) -> Any:
    """A small JSON file (see ``read_small``); bad JSON is a StageError naming ``what``."""
    data = read_small(path, what)
    try:
        return load_json(data)
    except StageError as exc:
        raise StageError(f"{what}: {exc}") from exc


class StoreBase:
    """One store directory: its paths, lock and atomic writes."""

    def __init__(self, root: Path, create: bool = True, readonly: bool = False) -> None:
        """Open the store at ``root``; ``create=False`` refuses a path that holds none and
        creates nothing; ``readonly`` also never writes (caches, flags), as the UI reads."""
        self.root = Path(root)
        self.readonly = readonly
        self.record_problems: dict[str, str] = {}  # store-relative path → what is wrong
        self._held = threading.local()
        if create and not readonly:
            try:
                for sub in SUBDIRS:
                    (self.root / sub).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StageError(f"cannot create the version store at {self.root}: "
                                 f"{exc.strerror or exc}") from exc
        elif not (self.root / "objects").is_dir():
            raise StageError(f"no version store at {self.root}")

    # --- paths ------------------------------------------------------------------------

    def object_path(self, sha: str) -> Path:
        if not isinstance(sha, str) or not SHA_RE.match(sha):
            raise StageError(f"bad object id {sha!r}")
        return self.root / "objects" / "sha256" / sha[:2] / sha[2:]

    def rel(self, path: Path) -> str:
        """``path`` relative to the store root, for messages and reports."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def _tmp(self, hint: str = "") -> Path:
        """A fresh name under tmp/ (everything there is garbage once no writer runs)."""
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        return self.root / "tmp" / f"{os.getpid()}-{secrets.token_hex(6)}{hint}"

    new_tmp = _tmp  # public name for other store modules (pull)

    def note(self, path: Path | str, message: str) -> None:
        """Remember a damaged record a reader skipped, to report it."""
        rel = path if isinstance(path, str) else self.rel(path)
        if rel not in self.record_problems:
            log.debug("skipped %s: %s", rel, message)
            self.record_problems[rel] = message

    def problems(self) -> list[Problem]:
        """The damaged records readers skipped so far, as verify problems."""
        return [Problem("", rel, "", f"record: {msg}")
                for rel, msg in sorted(self.record_problems.items())]

    # --- locks ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, path: Path, exclusive: bool) -> Iterator[None]:
        """flock ``path``; a killed holder releases it. Waiting is said once on stderr."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StageError(f"cannot lock the version store at {self.root} "
                             f"({self.rel(path)}): {exc.strerror or exc}") from exc
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for the store lock %s (another process holds it)",
                         self.rel(path))
                fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @contextlib.contextmanager
    def locked(self, exclusive: bool = False) -> Iterator[None]:
        """The store lock: shared for writers, exclusive for gc and fsck. Re-entrant within
        one Store object and thread (an inner request is already covered by the outer)."""
        held = getattr(self._held, "mode", None)
        if held == "ex" or (held == "sh" and not exclusive):
            yield
            return
        if held == "sh":
            raise RuntimeError("exclusive store lock requested while holding it shared")
        if self.readonly:
            raise StageError(f"the version store at {self.root} was opened read-only")
        with self._lock(self.root / "lock", exclusive):
            self._held.mode = "ex" if exclusive else "sh"
            try:
                yield
            finally:
                self._held.mode = None

    writing = locked  # ``with store.writing():`` around a multi-step write (pull)

    @contextlib.contextmanager
    def maybe_locked(self) -> Iterator[bool]:
        """The shared lock when the store is writable; readers of a read-only store (a
        mounted publication) proceed without it. Yields whether state may be written."""
        with contextlib.ExitStack() as stack:
            try:
                if self.readonly:
                    raise StageError("read-only")
                stack.enter_context(self.locked())
            except StageError:
                yield False
                return
            yield True

    # --- writes -----------------------------------------------------------------------

    def _write(self, path: Path, data: bytes, sync: bool = True) -> None:
        """Atomically create or replace a small file (temp in tmp/, fsync, rename)."""
        tmp = self._tmp()
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise StageError(f"no space left on device writing {path}") from exc
            raise StageError(f"cannot write {path}: {exc.strerror or exc}") from exc


CHECKOUT_MARKER = ".stylegan-checkout.json"  # written by checkout; snapshot leaves it out
