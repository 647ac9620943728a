"""Streaming, zip-slip-safe extraction that appears all at once or not at all."""

from __future__ import annotations

import hashlib
import shutil
import stat
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import atomic_dir, dump_json, read_json

MARKER = ".unzip.json"  # written into DIR: what archive it came from, for no-op reruns
BUFFER = 1 << 20


@dataclass(frozen=True)
class UnzipConfig:
    archive: Path
    out: Path


@dataclass(frozen=True)
class UnzipResult:
    out: str
    files: int
    bytes: int
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def safe_member_path(name: str) -> PurePosixPath:
    """The relative path a member may be written to; refuses anything that could escape."""
    norm = name.replace("\\", "/")
    path = PurePosixPath(norm)
    if (not norm or norm.startswith("/") or path.is_absolute() or ".." in path.parts
            or (path.parts and ":" in path.parts[0])):
        raise StageError(f"refusing archive entry that escapes the output directory: {name!r}")
    return path


def _fingerprint(archive: Path, members: list[zipfile.ZipInfo]) -> dict[str, Any]:
    digest = hashlib.sha256()
    for m in members:
        digest.update(f"{m.filename}\0{m.CRC}\0{m.file_size}\n".encode())
    return {"archive": str(archive.resolve()), "size": archive.stat().st_size,
            "entries": len(members), "members_sha256": digest.hexdigest()}


def run(cfg: UnzipConfig) -> UnzipResult:
    """Extract ``cfg.archive`` into ``cfg.out`` without reading the archive into memory."""
    from tqdm import tqdm

    if not cfg.archive.is_file():
        raise StageError(f"no such archive: {cfg.archive}")
    try:
        zf = zipfile.ZipFile(cfg.archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise StageError(f"not a zip archive: {cfg.archive}: {exc}") from exc
    with zf:
        members = zf.infolist()
        for m in members:
            safe_member_path(m.filename)
            if stat.S_ISLNK(m.external_attr >> 16):
                raise StageError(f"refusing symbolic link in archive: {m.filename!r}")
        fingerprint = _fingerprint(cfg.archive, members)
        total = sum(m.file_size for m in members)
        if cfg.out.exists():
            marker = cfg.out / MARKER
            if marker.is_file() and read_json(marker) == fingerprint:
                return UnzipResult(str(cfg.out), len(members), total, reused=True)
            raise StageError(f"output directory already exists: {cfg.out}")
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(cfg.out.parent).free
        if total > free:
            raise StageError(f"{cfg.archive} unpacks to {total} bytes but only {free} are free "
                             f"under {cfg.out.parent}")
        with atomic_dir(cfg.out) as tmp, tqdm(total=total, unit="B", unit_scale=True,
                                               unit_divisor=1024, desc="unzip",
                                               file=sys.stderr,
                                               mininterval=0.5 if sys.stderr.isatty() else 10
                                               ) as bar:
            root = tmp.resolve()
            for m in members:
                target = tmp / safe_member_path(m.filename)
                if not target.resolve().is_relative_to(root):
                    raise StageError(f"refusing archive entry {m.filename!r}")
                if m.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(m) as src, target.open("wb") as dst:
                        while chunk := src.read(BUFFER):
                            dst.write(chunk)
                            bar.update(len(chunk))
                except (zipfile.BadZipFile, EOFError, OSError) as exc:
                    raise StageError(f"{cfg.archive}: cannot extract {m.filename!r}: {exc}") \
                        from exc
            (tmp / MARKER).write_bytes(dump_json(fingerprint))
    return UnzipResult(str(cfg.out), len(members), total)
