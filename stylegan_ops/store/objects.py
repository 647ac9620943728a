"""Objects: files stored once by sha256, and what the store knows about their state.

``state/stat/<ab>.json`` records, per object, the (inode, size, mtime, ctime) it had when
the store last knew its content good (just written, rehashed, or re-stat after a hard link
the store made). An object whose stat differs is rehashed before it is trusted: a write
through a hard-linked checkout changes mtime and ctime, and user space cannot set ctime
back. ``state/damaged/<sha>.json`` flags an object found altered, so every reader (CLI,
UI) calls the versions holding it damaged without rehashing. Both are caches of facts the
objects themselves hold: unreadable files there are ignored and rebuilt.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import errno
import hashlib
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import sha256_file
from stylegan_ops.store.base import (
    CHECKOUT_MARKER,
    Problem,
    StoreBase,
    failpoint,
    now,
    read_json_record,
)
from stylegan_ops.store.model import SHA_RE, Entry, check_path

CHUNK = 1 << 22
Stat = tuple[int, int, int, int]  # st_ino, st_size, st_mtime_ns, st_ctime_ns
REPAIR = ("run `stylegan-ops store verify --repair`, then re-pull or re-snapshot the "
          "source to restore it")


def stat_key(st: os.stat_result) -> Stat:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def hash_file(path: Path | str) -> str:
    return sha256_file(path, CHUNK)



def _workers() -> int:
    return min(8, (os.cpu_count() or 1) * 2)


def _valid_stat(value: Any) -> Stat | None:
    if isinstance(value, list) and len(value) == 4 and all(type(v) is int for v in value):
        return (value[0], value[1], value[2], value[3])
    return None


class ObjectLayer(StoreBase):
    """Adding objects, and telling intact ones from altered ones."""

    def _obj(self, sha: str) -> str:
        """``object_path`` as a string, for loops over thousands of validated ids."""
        return f"{self.root}/objects/sha256/{sha[:2]}/{sha[2:]}"

    # --- adding -----------------------------------------------------------------------

    def _store_objects(self, files: list[tuple[str, Path, os.stat_result]],
                       cache: dict[str, list[Any]]
                       ) -> tuple[list[Entry], dict[str, list[Any]], dict[str, Stat]]:
        """Entries for every file, the new source cache, and the stat of each object this
        call wrote. Cache hits whose object exists and is not flagged cost one stat; the
        rest are copied into the store while being hashed, in parallel."""
        entries: list[Entry] = []
        new_cache: dict[str, list[Any]] = {}
        misses: list[tuple[str, Path, list[Any]]] = []
        damaged = self.damaged_objects()
        for rel, path, st in files:
            key = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
            hit = cache.get(rel)
            if (hit and hit[:4] == key and hit[4] not in damaged
                    and os.path.isfile(self._obj(hit[4]))):
                entries.append(Entry(rel, st.st_size, hit[4]))
                new_cache[rel] = hit
            else:
                misses.append((rel, path, key))

        fresh: dict[str, Stat] = {}

        def add(item: tuple[str, Path, list[Any]]) -> tuple[Entry, list[Any], Stat | None]:
            rel, path, key = item
            sha, size, written = self._add_object(path, rel, damaged)
            return Entry(rel, size, sha), [*key, sha], written

        with futures.ThreadPoolExecutor(_workers()) as pool:
            for entry, cached, written in pool.map(add, misses):
                entries.append(entry)
                new_cache[entry.path] = cached
                if written is not None:
                    fresh[entry.sha256] = written
        return entries, new_cache, fresh

    def _add_object(self, path: Path, rel: str = "",
                    damaged: dict[str, dict[str, Any]] | None = None
                    ) -> tuple[str, int, Stat | None]:
        """Copy a file into the store while hashing it, so name and content always agree.

        Returns the sha256 and size of what was copied (the file may change meanwhile) and
        the stored object's stat if this call wrote it. An existing object of that name is
        kept unless it is flagged damaged or has the wrong size: then the fresh copy
        replaces it, which is how re-snapshotting the source repairs a damaged version.
        """
        tmp = self._tmp(".obj")
        h = hashlib.sha256()
        size = 0
        try:
            with path.open("rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
                dst.flush()
                os.fsync(dst.fileno())
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise StageError(f"no space left on device storing {path}") from exc
            raise StageError(f"cannot store {path}: {exc.strerror or exc}") from exc
        failpoint("after-object-tmp")
        sha = h.hexdigest()
        target = self.object_path(sha)
        try:
            existing = os.lstat(target)
        except FileNotFoundError:
            existing = None
        flagged = damaged is not None and sha in damaged
        if (existing is not None and stat.S_ISREG(existing.st_mode)
                and existing.st_size == size and not flagged):
            tmp.unlink()
            return sha, size, None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.chmod(0o444)
            tmp.replace(target)
        except OSError as exc:  # e.g. a directory where the object should be
            tmp.unlink(missing_ok=True)
            raise StageError(f"cannot store object {self.rel(target)} for {rel or path}: "
                             f"{exc.strerror or exc}; run `stylegan-ops store fsck`") from exc
        if flagged or existing is not None:
            self._unflag(sha)
        return sha, size, stat_key(os.stat(target))

    # --- what the store knows about objects ------------------------------------------

    def _shard(self, sha: str) -> Path:
        return self.root / "state" / "stat" / f"{sha[:2]}.json"

    def _read_shard(self, path: Path) -> dict[str, Stat]:
        try:
            data = read_json_record(path, self.rel(path))
        except StageError:
            return {}  # absent or broken: a cache, so everything in it is just rehashed
        if not isinstance(data, dict):
            return {}
        out = {}
        for sha, value in data.items():
            st = _valid_stat(value)
            if st is not None and isinstance(sha, str) and SHA_RE.match(sha):
                out[sha] = st
        return out

    def good_stats(self, shas: Iterable[str]) -> dict[str, Stat]:
        """The recorded known-good stat of each object that has one."""
        shards: dict[str, dict[str, Stat]] = {}
        out = {}
        for sha in shas:
            shard = shards.get(sha[:2])
            if shard is None:
                shard = shards[sha[:2]] = self._read_shard(self._shard(sha))
            if sha in shard:
                out[sha] = shard[sha]
        return out

    def _remember_good(self, stats: dict[str, Stat], forget: Iterable[str] = ()) -> None:
        """Record objects' known-good stats (and drop others'). Best effort: a cache."""
        if self.readonly or not (stats or forget):
            return
        by_shard: dict[str, dict[str, Stat | None]] = {}
        for sha in forget:
            by_shard.setdefault(sha[:2], {})[sha] = None
        for sha, st in stats.items():
            by_shard.setdefault(sha[:2], {})[sha] = st
        with contextlib.suppress(OSError, StageError), \
                self._lock(self.root / "state" / "stat" / ".lock", exclusive=True):
            for prefix, changes in by_shard.items():
                path = self.root / "state" / "stat" / f"{prefix}.json"
                shard: dict[str, Any] = dict(self._read_shard(path))
                for sha, change in changes.items():
                    if change is None:
                        shard.pop(sha, None)
                    else:
                        shard[sha] = change
                self._write(path, json.dumps({k: list(v) for k, v in shard.items()},
                                             sort_keys=True).encode(), sync=False)

    def damaged_objects(self) -> dict[str, dict[str, Any]]:
        """Objects flagged as altered, still the very file that was found altered."""
        ddir = self.root / "state" / "damaged"
        out: dict[str, dict[str, Any]] = {}
        try:
            names = os.listdir(ddir)
        except OSError:
            return out
        for fname in names:
            sha = fname.removesuffix(".json")
            if not SHA_RE.match(sha):
                continue
            try:
                flag = read_json_record(ddir / fname, f"state/damaged/{fname}")
                ino = flag["stat"][0]
                current = os.lstat(self.object_path(sha)).st_ino
            except (StageError, OSError, KeyError, TypeError, IndexError):
                continue  # unreadable flag or object gone: the check below decides again
            if ino == current:
                out[sha] = flag
        return out

    def _flag(self, sha: str, problem: str, st: os.stat_result | None, where: str) -> None:
        if self.readonly:
            return
        flag = {"problem": problem, "found": now(), "where": where,
                "stat": list(stat_key(st)) if st is not None else [-1, -1, -1, -1]}
        with contextlib.suppress(StageError, OSError):
            self._write(self.root / "state" / "damaged" / f"{sha}.json",
                        json.dumps(flag).encode())
        self._remember_good({}, forget=[sha])

    def _unflag(self, sha: str) -> None:
        with contextlib.suppress(OSError):
            (self.root / "state" / "damaged" / f"{sha}.json").unlink(missing_ok=True)

    # --- checking ---------------------------------------------------------------------

    def check_objects(self, ref: str, entries: Iterable[Entry], full: bool = False,
                      record: bool = True) -> tuple[list[Problem], dict[str, Stat]]:
        """Problems with a version's objects and the stat each good one has now.

        An object is good without rehashing when its stat equals its recorded good stat
        (``full`` rehashes every one). A bad one is flagged; a rehashed good one recorded
        (``record``: whether state may be written).
        """
        by_sha: dict[str, list[Entry]] = {}
        for e in entries:
            by_sha.setdefault(e.sha256, []).append(e)
        damaged = self.damaged_objects()
        known = self.good_stats(by_sha)
        bad: dict[str, str] = {}
        good: dict[str, Stat] = {}
        suspects: list[tuple[str, os.stat_result]] = []
        for sha, es in by_sha.items():
            try:
                st = os.lstat(self._obj(sha))
            except FileNotFoundError:
                bad[sha] = "missing"
                continue
            except OSError as exc:
                bad[sha] = f"unreadable: {exc.strerror}"
                continue
            if not stat.S_ISREG(st.st_mode):
                bad[sha] = "unreadable: not a regular file"
            elif st.st_size != es[0].size:
                bad[sha] = "size"
                if record:
                    self._flag(sha, "size", st, ref)
            elif sha in damaged and not full:
                bad[sha] = str(damaged[sha].get("problem", "hash"))
            elif not full and known.get(sha) == stat_key(st):
                good[sha] = stat_key(st)
            else:
                suspects.append((sha, st))

        def rehash(item: tuple[str, os.stat_result]) -> tuple[str, str | None, Stat]:
            sha, before = item
            try:
                digest = hash_file(self.object_path(sha))
                after = os.lstat(self.object_path(sha))
            except OSError as exc:
                return sha, f"unreadable: {exc.strerror}", stat_key(before)
            if digest != sha:
                return sha, "hash", stat_key(after)
            if stat_key(after) != stat_key(before):  # written to while being read
                return sha, "changed while being verified", stat_key(after)
            return sha, None, stat_key(after)

        newly_good: dict[str, Stat] = {}
        with futures.ThreadPoolExecutor(_workers()) as pool:
            for sha, problem, st_now in pool.map(rehash, suspects):
                if problem is None:
                    good[sha] = newly_good[sha] = st_now
                    if sha in damaged and record:
                        self._unflag(sha)  # written back to its true content
                else:
                    bad[sha] = problem
                    if record and problem in ("hash", "changed while being verified"):
                        with contextlib.suppress(OSError):
                            self._flag(sha, "hash", os.lstat(self.object_path(sha)), ref)
        if record:
            self._remember_good(newly_good)
        problems = [Problem(ref, e.path, sha, why) for sha, why in bad.items()
                    for e in by_sha[sha]]
        return sorted(problems, key=lambda p: p.path), good

    def object_condition(self, sha: str, size: int) -> str | None:
        """Cheap: None when an object is known good (stat as recorded), else why not
        (missing, damaged, or 'unverified' when it changed since it was last known good)."""
        try:
            st = os.lstat(self.object_path(sha))
        except OSError:
            return "missing"
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return "damaged (size)"
        if sha in self.damaged_objects():
            return "damaged (content altered)"
        if self.good_stats([sha]).get(sha) != stat_key(st):
            return "unverified"
        return None


def scan_tree(source: Path) -> list[tuple[str, Path, os.stat_result]]:
    """Every regular file under ``source``: (posix relative path, path, stat), sorted.

    Symbolic links to files are followed only when they stay inside the tree; links to
    directories are refused. A checkout's marker at the top is left out, so snapshotting a
    checkout gives back the version it came from.
    """
    root = source.resolve()
    out: list[tuple[str, Path, os.stat_result]] = []
    stack = [(source, "")]
    try:
        while stack:
            directory, prefix = stack.pop()
            with os.scandir(directory) as it:
                for entry in it:
                    rel = prefix + entry.name
                    if rel == CHECKOUT_MARKER:
                        continue
                    if entry.is_symlink():
                        target = Path(entry.path).resolve()
                        if not target.is_relative_to(root):
                            raise StageError(
                                f"refusing symlink that escapes the tree: {entry.path}")
                        if target.is_dir():
                            raise StageError(f"refusing symlinked directory {entry.path}")
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((Path(entry.path), rel + "/"))
                    elif entry.is_file():
                        out.append((check_path(rel), Path(entry.path), entry.stat()))
    except OSError as exc:
        raise StageError(f"cannot read {exc.filename or source}: {exc.strerror or exc}") from exc
    return sorted(out, key=lambda item: item[0])


def read_cache(path: Path) -> dict[str, list[Any]]:
    """A source directory's stat → sha256 cache; anything unreadable is an empty cache."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {rel: hit for rel, hit in data.items()
            if isinstance(hit, list) and len(hit) == 5 and _valid_stat(hit[:4]) is not None
            and isinstance(hit[4], str) and SHA_RE.match(hit[4])}
