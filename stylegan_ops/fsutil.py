"""Atomic file and directory writes: build under a temporary sibling, then rename."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError


def temp_sibling(path: Path, suffix: str = "") -> Path:
    """A fresh hidden name next to ``path`` on the same filesystem, so rename is atomic."""
    return path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}"


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` only if the block completes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out)
    tmp.mkdir()
    try:
        yield tmp
        try:
            tmp.rename(out)
        except OSError as exc:
            raise StageError(f"output directory already exists and is not empty: {out}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    tmp = temp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def dump_json(obj: Any) -> bytes:
    """Stable, human-readable JSON bytes (sorted keys, trailing newline)."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def read_json(path: Path) -> Any:
    """Read a JSON file, turning absence or corruption into a StageError naming it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise StageError(f"missing file: {path}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StageError(f"not valid JSON: {path}: {exc}") from exc
