"""Positional readers over image sources: an LSUN LMDB (key order) or a folder (path order).

Every source is a sequence of raw records addressed by position, so work can be split into
position ranges across processes or Airflow tasks and merged back in order.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import lmdb
import numpy as np
from PIL import Image, UnidentifiedImageError

from stylegan_ops.errors import StageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class Record:
    """One raw record: its position in the source, a printable key, and the encoded bytes."""

    position: int
    key: str
    data: bytes


class Source(Protocol):
    """What extraction needs from an input: a length and ordered positional reads."""

    kind: str
    path: Path

    def __len__(self) -> int: ...

    def read(self, start: int, stop: int) -> Iterator[Record]: ...

    def close(self) -> None: ...


class LmdbSource:
    """An LSUN-style LMDB, walked in key order, opened read-only without a lock file."""

    kind = "lsun"

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_dir() or not (path / "data.mdb").is_file():
            raise StageError(f"not an LMDB directory (no data.mdb): {path}")
        try:
            self._env = lmdb.open(
                str(path), readonly=True, lock=False, readahead=True, max_readers=1
            )
        except lmdb.Error as exc:
            raise StageError(f"not a readable LMDB: {path}: {exc}") from exc
        self._entries = int(self._env.stat()["entries"])

    def __len__(self) -> int:
        return self._entries

    def read(self, start: int, stop: int) -> Iterator[Record]:
        with self._env.begin(buffers=False) as txn:
            cursor = txn.cursor()
            if not cursor.first():
                return
            # Keys-only moves never touch the (large) values, so seeking is cheap.
            for _ in range(start):
                if not cursor.next():
                    return
            for position in range(start, stop):
                key = cursor.key()
                yield Record(position, key.decode("ascii", "replace"), cursor.value())
                if not cursor.next():
                    return

    def close(self) -> None:
        self._env.close()


class FolderSource:
    """A folder of ordinary image files, ordered by their relative path."""

    kind = "images"

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_dir():
            raise StageError(f"not a directory: {path}")
        self._files = sorted(
            p.relative_to(path).as_posix()
            for p in path.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self._files:
            raise StageError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")

    def __len__(self) -> int:
        return len(self._files)

    def read(self, start: int, stop: int) -> Iterator[Record]:
        for position in range(start, min(stop, len(self._files))):
            rel = self._files[position]
            yield Record(position, rel, (self.path / rel).read_bytes())

    def close(self) -> None:
        pass


SOURCES: dict[str, type[LmdbSource] | type[FolderSource]] = {
    LmdbSource.kind: LmdbSource,
    FolderSource.kind: FolderSource,
}


def open_source(kind: str, path: Path) -> Source:
    """Open a source by kind name (``lsun`` or ``images``)."""
    if kind not in SOURCES:
        raise StageError(f"unknown source kind {kind!r}; known: {', '.join(SOURCES)}")
    return SOURCES[kind](path)


def decode_square(data: bytes, resolution: int) -> np.ndarray:
    """Decode, normalise to RGB, center-crop to the short side, Lanczos-resize; HWC uint8.

    Raises ValueError for empty or undecodable data (the caller counts and skips those).
    """
    if not data:
        raise ValueError("empty record")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            # Palette and grey+alpha images go through RGBA so their colours survive.
            base = img.convert("RGBA") if img.mode in ("P", "LA", "PA") else img
            rgb = base if base.mode == "RGB" else base.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"undecodable image: {exc}") from exc
    w, h = rgb.size
    crop = min(w, h)
    left, top = (w - crop) // 2, (h - crop) // 2
    square = rgb.crop((left, top, left + crop, top + crop))
    if crop != resolution:
        square = square.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(square, dtype=np.uint8)
