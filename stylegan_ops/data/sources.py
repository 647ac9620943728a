"""Positional readers over image sources: an LSUN LMDB (key order) or a folder (path order).

Every source is a sequence of raw records addressed by position, so work can be split into
position ranges across processes or Airflow tasks and merged back in order. A record too
large to be an image is not read into memory: it comes with ``skip`` set and empty data.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import lmdb

from stylegan_ops.data.lmdbcheck import check_lmdb
from stylegan_ops.errors import StageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# Encoded bytes of one record read into memory at most; an LSUN value is ~10-100 KB and an
# 8192x8192 PNG at most ~200 MB. Larger records are skipped and counted, never loaded.
MAX_RECORD_BYTES = 256 << 20


@dataclass(frozen=True)
class Record:
    """One raw record: its position in the source, a printable key, and the encoded bytes."""

    position: int
    key: str
    data: bytes
    skip: str | None = None  # why this record cannot be used, decided before reading it


def _too_large(size: int) -> str:
    return f"record is {size} bytes, over the {MAX_RECORD_BYTES}-byte limit"


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
            checked = check_lmdb(path / "data.mdb")  # liblmdb trusts the file; we do not
        except OSError as exc:
            raise StageError(f"cannot read {path / 'data.mdb'}: {exc.strerror or exc}") from exc
        try:
            self._env = lmdb.open(
                str(path), readonly=True, lock=False, readahead=True, max_readers=1
            )
            self._entries = int(self._env.stat()["entries"])
        except lmdb.Error as exc:
            raise StageError(f"not a readable LMDB: {path}: {exc}") from exc
        if self._entries != checked:
            self._env.close()
            raise StageError(f"damaged LMDB {path}: liblmdb counts {self._entries} entries, "
                             f"its tree holds {checked}")

    def __len__(self) -> int:
        return self._entries

    def read(self, start: int, stop: int) -> Iterator[Record]:
        position = start
        try:
            # buffers=True: a value is a view into the map, sized before it is copied.
            with self._env.begin(buffers=True) as txn:
                cursor = txn.cursor()
                if not cursor.first():
                    return
                # Keys-only moves never touch the (large) values, so seeking is cheap.
                for _ in range(start):
                    if not cursor.next():
                        return
                for position in range(start, stop):
                    key = bytes(cursor.key()).decode("ascii", "replace")
                    value = cursor.value()
                    if len(value) > MAX_RECORD_BYTES:
                        yield Record(position, key, b"", _too_large(len(value)))
                    else:
                        yield Record(position, key, bytes(value))
                    if not cursor.next():
                        return
        except lmdb.Error as exc:
            raise StageError(f"damaged LMDB {self.path} at record {position}: {exc}") from exc

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

    @property
    def files(self) -> list[str]:
        """The image files' paths relative to the folder, in order."""
        return list(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def read(self, start: int, stop: int) -> Iterator[Record]:
        for position in range(start, min(stop, len(self._files))):
            rel = self._files[position]
            try:
                with (self.path / rel).open("rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    # read(n) allocates n bytes up front: ask for what fstat saw, no more.
                    data = f.read(size) if size <= MAX_RECORD_BYTES else b""
            except OSError as exc:  # listed a moment ago: gone, unreadable, or a directory now
                raise StageError(f"cannot read {self.path / rel}: {exc.strerror or exc}") \
                    from exc
            if size > MAX_RECORD_BYTES:
                yield Record(position, rel, b"", _too_large(size))
            else:
                yield Record(position, rel, data)

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
