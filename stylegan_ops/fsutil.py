"""Atomic file and directory writes (build under a temporary sibling, then rename), the
checks an output path must pass before a stage starts, and strict JSON."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

from stylegan_ops.errors import StageError

# Room the longest name we derive from an output needs beyond the output's own name: the
# temp sibling ".NAME.tmp-PID-HEX8" and suffixes such as ".part.lock" on it.
DERIVED_NAME_ROOM = 40


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes, read in chunks (bounded memory for any size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(chunk):
            h.update(data)
    return h.hexdigest()


def temp_sibling(path: Path, suffix: str = "") -> Path:
    """A fresh hidden name next to ``path`` on the same filesystem, so rename is atomic."""
    return path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def show_path(path: Any) -> str:
    """A path as one printable line: control characters (a newline in a hostile name) are
    escaped so an error message stays one line."""
    text = os.fsdecode(path) if isinstance(path, bytes | os.PathLike) else str(path)
    return text if text.isprintable() else repr(text)[1:-1]


def describe_os_error(exc: OSError, doing: str = "") -> str:
    """One line for an OSError: the path(s) it names and the system's reason."""
    paths = [show_path(p) for p in (exc.filename, exc.filename2) if p is not None]
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        reason += " (free space or use another --out)"
    elif exc.errno == errno.ENAMETOOLONG:
        reason += " (shorten the path)"
    where = " -> ".join(paths)
    head = f"{doing}: " if doing else ""
    return f"{head}{where}: {reason}" if where else f"{head}{reason}"


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _exists(path: Path) -> bool:
    try:
        path.stat()
    except OSError:  # absent, a file in the way, or a name too long: look further up
        return False
    return True


def output_problem(path: Path, kind: Literal["file", "dir"]) -> str | None:
    """Why ``path`` cannot be a ``kind`` output of a stage, or None when it can.

    A stage writes its output through a temp sibling and a rename, so the nearest existing
    ancestor must be a writable directory; an existing ``path`` must be of the right kind
    (a file output never replaces a device, pipe or socket); every name must fit the
    filesystem with room for the derived temp names."""
    text = os.fspath(path)
    if not text or "\0" in text:
        return f"{show_path(text)!r} is not a usable path"
    path = Path(text).absolute()
    anchor = path.parent
    while not _exists(anchor) and anchor != anchor.parent:
        anchor = anchor.parent
    name_max = _name_max(anchor if anchor.is_dir() else anchor.parent)
    for part in path.parts[1:]:
        if len(os.fsencode(part)) > name_max:
            return (f"{show_path(text)}: the name {show_path(part)[:24]}… is longer than the "
                    f"filesystem's {name_max} bytes")
    if len(os.fsencode(path.name)) > name_max - DERIVED_NAME_ROOM:
        return (f"{show_path(text)}: name too long for an output (at most "
                f"{name_max - DERIVED_NAME_ROOM} bytes, to leave room for its temp name)")
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        st = None  # a parent is a file: named below
    except OSError as exc:
        return describe_os_error(exc)
    if st is not None:
        if kind == "file" and stat.S_ISDIR(st.st_mode):
            return f"{show_path(text)} is a directory; a file path is needed"
        if kind == "file" and not stat.S_ISREG(st.st_mode):
            return (f"{show_path(text)} is not a regular file (a device, pipe or socket); "
                    f"refusing to replace it")
        if kind == "dir" and not stat.S_ISDIR(st.st_mode):
            return f"{show_path(text)} is a file; a directory is needed"
    if not anchor.is_dir():
        return f"{show_path(anchor)} is a file, so {show_path(text)} cannot be created in it"
    if not os.access(anchor, os.W_OK | os.X_OK):
        return f"{show_path(anchor)} is not writable (needed to create {show_path(text)})"
    if kind == "dir" and st is not None and not os.access(path, os.W_OK | os.X_OK):
        return f"{show_path(text)} is not writable"
    return None


def check_output(path: Path, kind: Literal["file", "dir"]) -> Path:
    """``path`` when a stage can write it as a ``kind``; else a StageError saying why."""
    problem = output_problem(path, kind)
    if problem:
        raise StageError(problem)
    return path


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` only if the block completes."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(out)
        tmp.mkdir()
    except OSError as exc:
        raise StageError(describe_os_error(exc, f"cannot create {show_path(out)}")) from exc
    try:
        yield tmp
        try:
            tmp.rename(out)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise StageError(f"output directory already exists and is not empty: "
                                 f"{show_path(out)}") from exc
            raise StageError(describe_os_error(exc, f"cannot create {show_path(out)}")
                             ) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename; a failure
    (full disk, no permission, a directory in the way) names ``path``, not the temp file."""
    tmp = temp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as exc:
        raise StageError(f"cannot write {show_path(path)}: "
                         f"{exc.strerror or exc}") from exc
    finally:
        with suppress(FileNotFoundError, NotADirectoryError):  # never created: nothing to undo
            tmp.unlink()


def _non_finite_at(obj: Any, where: str = "") -> str | None:
    """The dotted path of the first NaN or ±Infinity in ``obj``, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "(top level)"
    if isinstance(obj, dict):
        items: Any = obj.items()
    elif isinstance(obj, list | tuple):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = _non_finite_at(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def to_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that refuses NaN and ±Infinity (JSON has none; Python would write
    them anyway), naming the field that holds one."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError as exc:
        where = _non_finite_at(obj)
        if where is None:
            raise
        raise StageError(f"field {where} is not a finite number; refusing to write it as "
                         f"JSON") from exc


def dump_json(obj: Any) -> bytes:
    """Stable, human-readable JSON bytes (sorted keys, trailing newline), never NaN."""
    return (to_json(obj, indent=2, sort_keys=True) + "\n").encode()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_strict(text: str | bytes) -> Any:
    """``json.loads`` without Python's NaN/Infinity extension."""
    return json.loads(text, parse_constant=_refuse_constant)


def read_json(path: Path) -> Any:
    """Read a JSON file, turning absence or corruption into a StageError naming it."""
    try:
        return loads_strict(path.read_text())
    except FileNotFoundError as exc:
        raise StageError(f"missing file: {show_path(path)}") from exc
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise StageError(f"not valid JSON: {show_path(path)}: {exc}") from exc
    except OSError as exc:
        raise StageError(describe_os_error(exc, "cannot read")) from exc
