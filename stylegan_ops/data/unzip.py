"""Streaming, zip-slip-safe extraction that appears all at once or not at all.

Every member is checked against the whole member list before a byte is written (names that
escape, collide, repeat, nest too deep or are too long for the filesystem; links, encryption,
compression methods we cannot decode), so a refused archive leaves nothing behind. Members
are extracted into a temporary sibling of ``--out`` that is renamed into place at the end.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import stat
import sys
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import atomic_dir, dump_json

# Written into DIR beside the members: what archive it came from and what was written, so a
# rerun can check the tree before reusing it. An archive holding this name is refused, so
# the marker can never overwrite a member (and the DIR holds exactly the archive plus it).
MARKER = ".unzip.json"
MARKER_KIND = "stylegan-ops-unzip"
MAX_MARKER_BYTES = 256 << 20
BUFFER = 1 << 20
MAX_NAME_BYTES = 255  # NAME_MAX of Linux filesystems (ext4, xfs, btrfs, tmpfs)
MAX_PATH_BYTES = 4096  # PATH_MAX, counted for the temporary path the member is written to
MAX_DEPTH = 100  # far deeper than real archives; beyond it a member is hostile, not data
# Flag bits zipfile cannot honour: 0 encrypted, 5 compressed patched data, 6 strong
# encryption, 13 masked local headers (APPNOTE 4.4.4).
UNSUPPORTED_FLAGS = {0x1: "encrypted", 0x20: "patched data", 0x40: "strongly encrypted",
                     0x2000: "masked headers"}
METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
if zipfile.bz2 is not None:  # type: ignore[attr-defined]
    METHODS.add(zipfile.ZIP_BZIP2)
if zipfile.lzma is not None:  # type: ignore[attr-defined]
    METHODS.add(zipfile.ZIP_LZMA)
# What a damaged member can raise while it is decompressed.
READ_ERRORS = (zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError,
               NotImplementedError)


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
    if (norm.startswith("/") or path.is_absolute() or ".." in path.parts
            or (path.parts and ":" in path.parts[0])):
        raise StageError(f"refusing archive entry that escapes the output directory: {name!r}")
    if not path.parts:  # "", ".", "./"
        raise StageError(f"refusing archive entry without a file name: {name!r}")
    return path


def _check_member(m: zipfile.ZipInfo, path: PurePosixPath, room: int) -> None:
    """Refuse a member that could not be written faithfully; ``room`` is PATH_MAX left."""
    name = m.filename
    if stat.S_ISLNK(m.external_attr >> 16):
        raise StageError(f"refusing symbolic link in archive: {name!r}")
    for bit, what in UNSUPPORTED_FLAGS.items():
        if m.flag_bits & bit:
            raise StageError(f"archive member {name!r} is {what}; cannot extract it")
    if not m.is_dir() and m.compress_type not in METHODS:
        raise StageError(f"archive member {name!r} uses compression method "
                         f"{m.compress_type}, which is not supported (known: "
                         f"{', '.join(str(c) for c in sorted(METHODS))})")
    if path.parts[0].casefold() == MARKER.casefold():
        raise StageError(f"archive member {name!r} has the name of this tool's marker file "
                         f"{MARKER}; refusing to mix them")
    if len(path.parts) > MAX_DEPTH:
        raise StageError(f"archive member {name[:80]!r}… is nested {len(path.parts)} "
                         f"directories deep (at most {MAX_DEPTH})")
    for part in path.parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise StageError(f"archive member {name[:80]!r}… has a name component longer "
                             f"than {MAX_NAME_BYTES} bytes")
    if len(os.fsencode(str(path))) > room:
        raise StageError(f"archive member {name[:80]!r}… makes a path longer than "
                         f"{MAX_PATH_BYTES} bytes under the output directory")


def plan_members(members: list[zipfile.ZipInfo], out: Path) -> list[tuple[zipfile.ZipInfo,
                                                                          PurePosixPath]]:
    """Each member with its target path, after checking the list as a whole.

    Two members may not land on the same path (directories named twice excepted), and no
    path may be both a file and a directory (``a`` and ``a/b``), whatever their order.
    """
    # The temporary sibling's name is at most ~40 bytes longer than DIR's.
    room = MAX_PATH_BYTES - len(os.fsencode(str(out.absolute()))) - 48
    files: dict[PurePosixPath, str] = {}
    dirs: dict[PurePosixPath, str] = {}
    planned = []
    for m in members:
        path = safe_member_path(m.filename)
        _check_member(m, path, room)
        for parent in path.parents:
            if parent == PurePosixPath("."):
                break
            if parent in files:
                raise StageError(f"archive member {m.filename!r} needs directory {str(parent)!r}"
                                 f", which member {files[parent]!r} is a file")
            dirs.setdefault(parent, m.filename)
        if m.is_dir():
            if path in files:
                raise StageError(f"archive member {m.filename!r} is a directory where member "
                                 f"{files[path]!r} is a file")
            dirs.setdefault(path, m.filename)
        else:
            if path in files:
                raise StageError(f"archive holds {str(path)!r} twice (members "
                                 f"{files[path]!r} and {m.filename!r})")
            if path in dirs:
                raise StageError(f"archive member {m.filename!r} is a file where member "
                                 f"{dirs[path]!r} needs a directory")
            files[path] = m.filename
        planned.append((m, path))
    return planned


def _fingerprint(archive: Path, members: list[zipfile.ZipInfo]) -> dict[str, Any]:
    """The archive's identity: its size and its central directory (names, sizes, CRC-32s).

    Hashing the archive itself would cost a second read of a 42 GB file per rerun; the
    central directory's CRCs already change when any member's bytes do.
    """
    digest = hashlib.sha256()
    for m in members:
        digest.update(f"{m.filename}\0{m.CRC}\0{m.file_size}\0{m.compress_type}\n".encode())
    return {"archive": str(archive.resolve()), "size": archive.stat().st_size,
            "entries": len(members), "members_sha256": digest.hexdigest()}


def _tree(root: Path) -> dict[str, Any]:
    """What is under ``root`` now: files with size and mtime, directories, anything else."""
    files: dict[str, list[int]] = {}
    dirs: list[str] = []
    other: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = base / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISDIR(st.st_mode):
                dirs.append(rel)
            elif stat.S_ISREG(st.st_mode):
                files[rel] = [st.st_size, st.st_mtime_ns]
            else:
                other.append(rel)
    files.pop(MARKER, None)
    return {"files": files, "dirs": sorted(dirs), "other": sorted(other)}


def _check_reusable(cfg: UnzipConfig, fingerprint: dict[str, Any]) -> None:
    """Pass only when DIR holds exactly what an earlier run of this archive wrote (same
    files, sizes and mtimes; nothing extra); refuse a changed or unrelated DIR."""
    marker = cfg.out / MARKER
    meta: Any = None
    if marker.is_file() and not marker.is_symlink() and \
            marker.stat().st_size <= MAX_MARKER_BYTES:
        try:
            meta = json.loads(marker.read_bytes())
        except (ValueError, OSError):
            meta = None
    if not isinstance(meta, dict) or meta.get("kind") != MARKER_KIND \
            or meta.get("archive") != fingerprint:
        raise StageError(f"output directory already exists: {cfg.out}")
    now = _tree(cfg.out)
    want_files, want_dirs = meta.get("files"), meta.get("dirs")
    if not isinstance(want_files, dict) or not isinstance(want_dirs, list):
        raise StageError(f"{marker} is damaged; remove {cfg.out} to extract again")
    for rel in now["other"]:
        raise StageError(f"{cfg.out} does not hold what {cfg.archive} holds: {rel} is not a "
                         f"regular file")
    for rel, (size, mtime) in now["files"].items():
        want = want_files.get(rel)
        if want is None:
            raise StageError(f"{cfg.out} does not hold what {cfg.archive} holds: extra file "
                             f"{rel}")
        if want != [size, mtime]:
            raise StageError(f"{cfg.out} does not hold what {cfg.archive} holds: {rel} was "
                             f"changed since it was extracted")
    for rel in sorted(set(want_files) - set(now["files"])):
        raise StageError(f"{cfg.out} does not hold what {cfg.archive} holds: {rel} is missing")
    if sorted(want_dirs) != now["dirs"]:
        raise StageError(f"{cfg.out} does not hold what {cfg.archive} holds: its directories "
                         f"differ")


def _make_parent(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StageError(f"cannot create the parent of {out}: {exc.strerror or exc}") from exc


def run(cfg: UnzipConfig) -> UnzipResult:
    """Extract ``cfg.archive`` into ``cfg.out`` without reading the archive into memory."""
    if not cfg.archive.exists():
        raise StageError(f"no such archive: {cfg.archive}")
    if not cfg.archive.is_file():
        raise StageError(f"archive is not a regular file: {cfg.archive}")
    try:
        zf = zipfile.ZipFile(cfg.archive)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise StageError(f"not a zip archive: {cfg.archive}: {exc}") from exc
    with zf:
        members = zf.infolist()
        planned = plan_members(members, cfg.out)
        fingerprint = _fingerprint(cfg.archive, members)
        total = sum(m.file_size for m in members)
        if cfg.out.exists() or cfg.out.is_symlink():
            _check_reusable(cfg, fingerprint)
            return UnzipResult(str(cfg.out), len(members), total, reused=True)
        _make_parent(cfg.out)
        free = shutil.disk_usage(cfg.out.parent).free
        if total > free:
            raise StageError(f"{cfg.archive} unpacks to {total} bytes but only {free} are free "
                             f"under {cfg.out.parent}")
        try:
            with atomic_dir(cfg.out) as tmp:
                _extract_all(zf, cfg.archive, planned, tmp, total)
                tree = _tree(tmp)
                (tmp / MARKER).write_bytes(dump_json({
                    "kind": MARKER_KIND, "archive": fingerprint,
                    "files": tree["files"], "dirs": tree["dirs"]}))
        except OSError as exc:  # creating the temporary directory or the marker
            raise StageError(f"cannot write {cfg.out}: {exc.strerror or exc}") from exc
    return UnzipResult(str(cfg.out), len(members), total)


def _extract_all(zf: zipfile.ZipFile, archive: Path,
                 planned: list[tuple[zipfile.ZipInfo, PurePosixPath]], tmp: Path,
                 total: int) -> None:
    from tqdm import tqdm

    made: set[PurePosixPath] = set()

    def make_dirs(path: PurePosixPath) -> None:
        # Parent first, without recursion: Path.mkdir(parents=True) recurses per level.
        for parent in reversed([path, *path.parents]):
            if parent != PurePosixPath(".") and parent not in made:
                (tmp / parent).mkdir(exist_ok=True)
                made.add(parent)

    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="unzip",
              file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 10) as bar:
        for m, path in planned:
            try:
                if m.is_dir():
                    make_dirs(path)
                    continue
                make_dirs(path.parent)
                written = 0
                # "xb": a member can never replace another file, whatever the checks missed.
                with zf.open(m) as src, (tmp / path).open("xb") as dst:
                    while chunk := src.read(BUFFER):
                        written += len(chunk)
                        if written > m.file_size:  # a bomb, or a lying size field
                            raise StageError(f"{archive}: member {m.filename!r} unpacks to "
                                             f"more than the {m.file_size} bytes it declares")
                        dst.write(chunk)
                        bar.update(len(chunk))
            except READ_ERRORS as exc:
                raise StageError(f"{archive}: cannot extract {m.filename!r}: {exc}") from exc
