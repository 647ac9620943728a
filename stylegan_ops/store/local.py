"""The content-addressed version store on a filesystem path.

Layout (plain files, so it can sit on shared storage or be served read-only over HTTP)::

    objects/sha256/ab/cdef…            file contents, stored once, read-only
    manifests/<id>.json                 canonical manifest; <id> = its sha256
    names/<name>/versions/000007.json   version record: number, id, lineage, meta
    names/<name>/tags/<tag>.json        {"number": 7}
    names/<name>/index.json             versions and tags, for remote readers
    state/                              hash cache and object stat records (caches only)
    tmp/                                in-flight writes; anything here is garbage
    lock                                flock: snapshots shared, gc exclusive

A version becomes visible only when its record is linked into ``versions/`` (an atomic,
exclusive link), after every object and the manifest are in place.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import dump_json
from stylegan_ops.store.model import (
    SHA_RE,
    Entry,
    Lineage,
    Manifest,
    Ref,
    Version,
    check_name,
    check_path,
    check_tag,
)

CHUNK = 1 << 22


def _failpoint(name: str) -> None:
    """Crash here (SIGKILL) when STYLEGAN_STORE_FAILPOINT names this point: crash tests."""
    if os.environ.get("STYLEGAN_STORE_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def default_root() -> Path:
    return Path(os.environ.get("STYLEGAN_STORE", ".stylegan-store"))


@dataclass(frozen=True)
class Problem:
    """Something ``verify`` found wrong."""

    version: str
    path: str
    sha256: str
    problem: str  # missing | size | hash | manifest

    def to_dict(self) -> dict[str, str]:
        return {"version": self.version, "path": self.path, "sha256": self.sha256,
                "problem": self.problem}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class Store:
    """One store directory and every operation on it."""

    def __init__(self, root: Path, create: bool = True) -> None:
        """Open the store at ``root``; ``create=False`` refuses a path that holds none."""
        self.root = root
        if not create and not (root / "objects").is_dir():
            raise StageError(f"no version store at {root}")
        for sub in ("objects/sha256", "manifests", "names", "state", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    # --- paths and locks ------------------------------------------------------------

    def object_path(self, sha: str) -> Path:
        if not SHA_RE.match(sha):
            raise StageError(f"bad object id {sha!r}")
        return self.root / "objects" / "sha256" / sha[:2] / sha[2:]

    def _tmp(self, hint: str = "") -> Path:
        return self.root / "tmp" / f"{os.getpid()}-{secrets.token_hex(6)}{hint}"

    @contextlib.contextmanager
    def _lock(self, path: Path, exclusive: bool) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock; a killed process releases it too

    def _write(self, path: Path, data: bytes) -> None:
        """Atomically create or replace a small file."""
        tmp = self._tmp()
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(path)

    # --- reading --------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(p.name for p in (self.root / "names").iterdir()
                      if (p / "versions").is_dir())

    def versions(self, name: str) -> list[Version]:
        vdir = self.root / "names" / check_name(name) / "versions"
        if not vdir.is_dir():
            return []
        out = [Version.from_dict(json.loads(p.read_text()))
               for p in sorted(vdir.glob("[0-9]*.json"))]
        return sorted(out, key=lambda v: v.number)

    def tags(self, name: str) -> dict[str, int]:
        tdir = self.root / "names" / check_name(name) / "tags"
        if not tdir.is_dir():
            return {}
        return {p.stem: int(json.loads(p.read_text())["number"])
                for p in sorted(tdir.glob("*.json"))}

    def resolve(self, text: str) -> Version:
        """The version a ref names; unknown or ambiguous refs raise StageError naming it."""
        ref = Ref.parse(text)
        versions = self.versions(ref.name)
        if not versions:
            raise StageError(f"unknown version name in ref {text!r}")
        return select(ref, text, versions, self.tags(ref.name))

    def manifest(self, version_id: str) -> Manifest:
        path = self.root / "manifests" / f"{version_id}.json"
        if not path.is_file():
            raise StageError(f"manifest {version_id} is missing from the store")
        return Manifest.from_bytes(path.read_bytes(), version_id)

    # --- snapshot -------------------------------------------------------------------

    def snapshot(self, source: Path, name: str, tags: tuple[str, ...] = (),
                 lineage: Lineage | None = None, meta: dict[str, Any] | None = None
                 ) -> tuple[Version, bool]:
        """Commit a directory as a new version of ``name``; returns (version, created).

        Content identical to the name's latest version creates no new number (a retried
        task is idempotent); otherwise the next number is taken, even for content that an
        older version already had, because that is a new event in the name's history.
        """
        check_name(name)
        for tag in tags:
            check_tag(tag)
        if not source.is_dir():
            raise StageError(f"not a directory: {source}")
        files = scan_tree(source)
        cache_path = self.root / "state" / "hashcache" / (
            hashlib.sha256(str(source.resolve()).encode()).hexdigest() + ".json")
        cache = _read_cache(cache_path)
        with self._lock(self.root / "lock", exclusive=False):
            entries, new_cache = self._store_objects(files, cache)
            manifest = Manifest(tuple(sorted(entries)))
            _failpoint("after-objects")
            mpath = self.root / "manifests" / f"{manifest.id}.json"
            if not mpath.exists():
                self._write(mpath, manifest.canonical())
            self._record_stats(manifest)
            _failpoint("after-manifest")
            version, created = self._commit(name, manifest, tags, lineage or Lineage(),
                                            meta or {})
        with contextlib.suppress(OSError):  # the cache is an optimisation only
            self._write(cache_path, json.dumps(new_cache).encode())
        return version, created

    def _store_objects(self, files: list[tuple[str, Path, os.stat_result]],
                       cache: dict[str, list[Any]]) -> tuple[list[Entry], dict[str, list[Any]]]:
        """Entries for every file: cache hits whose object exists cost one stat; the rest
        are copied into the store while being hashed, in parallel."""
        entries: list[Entry] = []
        new_cache: dict[str, list[Any]] = {}
        misses: list[tuple[str, Path, list[Any]]] = []
        for rel, path, st in files:
            key = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
            hit = cache.get(rel)
            if hit and hit[:4] == key and os.path.exists(self.object_path(hit[4])):
                entries.append(Entry(rel, st.st_size, hit[4]))
                new_cache[rel] = hit
            else:
                misses.append((rel, path, key))

        def add(item: tuple[str, Path, list[Any]]) -> tuple[Entry, list[Any]]:
            rel, path, key = item
            sha, size = self._add_object(path)
            return Entry(rel, size, sha), [*key, sha]

        with futures.ThreadPoolExecutor(min(8, (os.cpu_count() or 1) * 2)) as pool:
            for entry, cached in pool.map(add, misses):
                entries.append(entry)
                new_cache[entry.path] = cached
        return entries, new_cache

    def _add_object(self, path: Path) -> tuple[str, int]:
        """Copy a file into the store while hashing it, so name and content always agree.

        Returns the sha256 and size of what was copied (the file may change meanwhile).
        """
        tmp = self._tmp(".obj")
        h = hashlib.sha256()
        size = 0
        with path.open("rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                dst.write(chunk)
                size += len(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        _failpoint("after-object-tmp")
        sha = h.hexdigest()
        target = self.object_path(sha)
        if target.exists():
            tmp.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.chmod(0o444)
            tmp.replace(target)
        return sha, size

    def _record_stats(self, manifest: Manifest) -> None:
        """Remember each object's (size, mtime) so checkout can skip rehashing intact ones."""
        stats = {}
        for e in manifest.entries:
            st = self.object_path(e.sha256).stat()
            stats[e.sha256] = [st.st_size, st.st_mtime_ns]
        self._write(self.root / "state" / "objstat" / f"{manifest.id}.json",
                    json.dumps(stats).encode())

    def _commit(self, name: str, manifest: Manifest, tags: tuple[str, ...], lineage: Lineage,
                meta: dict[str, Any]) -> tuple[Version, bool]:
        ndir = self.root / "names" / name
        with self._lock(ndir / ".lock", exclusive=True):
            existing = self.versions(name)
            if existing and existing[-1].id == manifest.id:
                version, created = existing[-1], False
            else:
                number = existing[-1].number + 1 if existing else 1
                version = Version(name, number, manifest.id, _now(), lineage, meta,
                                  len(manifest.entries), manifest.total_size)
                self._link_version(ndir, version)
                created = True
            for tag in tags:
                self._write(ndir / "tags" / f"{tag}.json", dump_json({"number": version.number}))
            self._write_index(name)
        return version, created

    def _link_version(self, ndir: Path, version: Version) -> None:
        tmp = self._tmp(".version")
        tmp.write_bytes(dump_json(version.to_dict()))
        target = ndir / "versions" / f"{version.number:06d}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        _failpoint("before-version-link")
        try:
            os.link(tmp, target)  # atomic and exclusive: a number is never taken twice
        except FileExistsError as exc:
            raise StageError(f"version {version.ref} was taken concurrently") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def _write_index(self, name: str) -> None:
        index = {"name": name, "versions": [{"number": v.number, "id": v.id}
                                            for v in self.versions(name)],
                 "tags": self.tags(name)}
        self._write(self.root / "names" / name / "index.json", dump_json(index))

    def adopt(self, version: Version, manifest: Manifest, meta: dict[str, Any]) -> tuple[
            Version, bool]:
        """Commit a version whose objects are already present (used by pull)."""
        with self._lock(self.root / "lock", exclusive=False):
            for e in manifest.entries:
                if not self.object_path(e.sha256).exists():
                    raise StageError(f"object {e.sha256} for {e.path} is missing")
            mpath = self.root / "manifests" / f"{manifest.id}.json"
            if not mpath.exists():
                self._write(mpath, manifest.canonical())
            self._record_stats(manifest)
            return self._commit(version.name, manifest, (), version.lineage,
                                {**version.meta, **meta})

    # --- tags -----------------------------------------------------------------------

    def tag(self, text: str, tag: str) -> Version:
        version = self.resolve(text)
        check_tag(tag)
        with self._lock(self.root / "names" / version.name / ".lock", exclusive=True):
            self._write(self.root / "names" / version.name / "tags" / f"{tag}.json",
                        dump_json({"number": version.number}))
            self._write_index(version.name)
        return version

    def untag(self, name: str, tag: str) -> None:
        check_name(name)
        path = self.root / "names" / name / "tags" / f"{check_tag(tag)}.json"
        if not path.exists():
            raise StageError(f"no tag {tag!r} on {name}")
        with self._lock(self.root / "names" / name / ".lock", exclusive=True):
            path.unlink()
            self._write_index(name)

    # --- checkout and verify --------------------------------------------------------

    def check_version(self, version: Version, full: bool = False) -> list[Problem]:
        """Objects of a version that are missing or altered; ``full`` rehashes every one."""
        try:
            manifest = self.manifest(version.id)
        except StageError as exc:
            return [Problem(version.ref, "", version.id, f"manifest: {exc}")]
        stats_path = self.root / "state" / "objstat" / f"{version.id}.json"
        stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}

        problems: list[Problem] = []
        suspects: list[Entry] = []
        for e in manifest.entries:
            try:
                st = os.stat(self.object_path(e.sha256))
            except FileNotFoundError:
                problems.append(Problem(version.ref, e.path, e.sha256, "missing"))
                continue
            if st.st_size != e.size:
                problems.append(Problem(version.ref, e.path, e.sha256, "size"))
            elif full or stats.get(e.sha256) != [st.st_size, st.st_mtime_ns]:
                suspects.append(e)

        def rehash(e: Entry) -> Problem | None:
            if _hash_file(self.object_path(e.sha256)) != e.sha256:
                return Problem(version.ref, e.path, e.sha256, "hash")
            return None

        with futures.ThreadPoolExecutor(min(8, (os.cpu_count() or 1) * 2)) as pool:
            problems.extend(p for p in pool.map(rehash, suspects) if p is not None)
        return sorted(problems, key=lambda p: p.path)

    def checkout(self, text: str, dest: Path, verify: bool = False,
                 replace: bool = False) -> Version:
        """Materialise a version read-only at ``dest`` (hard links, else copies);
        ``replace`` swaps out an existing directory only once the new one is complete."""
        version = self.resolve(text)
        if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not replace)):
            raise StageError(f"checkout target is not an empty directory: {dest}")
        problems = self.check_version(version, full=verify)
        if problems:
            raise StageError(f"{version.ref} is damaged ({len(problems)} files, first: "
                             f"{problems[0].path} {problems[0].problem}); run store verify")
        manifest = self.manifest(version.id)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.checkout-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            # check_path refuses '..' and absolute paths, and tmp is fresh and holds only
            # what we create, so no target can leave it.
            made = {str(tmp)}
            for e in manifest.entries:
                target = os.path.join(tmp, check_path(e.path))
                parent = os.path.dirname(target)
                if parent not in made:
                    os.makedirs(parent, exist_ok=True)
                    made.add(parent)
                obj = self.object_path(e.sha256)
                try:
                    os.link(obj, target)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK,
                                         errno.ENOTSUP):
                        raise
                    shutil.copyfile(obj, target)
                    os.chmod(target, 0o444)
            if dest.exists():
                old = dest.parent / f".{dest.name}.old-{secrets.token_hex(4)}"
                dest.rename(old)
                tmp.rename(dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return version

    def verify(self, text: str | None = None) -> tuple[int, list[Problem]]:
        """Rehash the objects of one version or of every version; (checked, problems)."""
        if text is not None:
            versions = [self.resolve(text)]
        else:
            versions = [v for name in self.names() for v in self.versions(name)]
        problems: list[Problem] = []
        seen: dict[str, list[Problem]] = {}
        for v in versions:
            if v.id not in seen:
                seen[v.id] = self.check_version(v, full=True)
            problems.extend(Problem(v.ref, p.path, p.sha256, p.problem) for p in seen[v.id])
        return len(versions), problems

    # --- gc -------------------------------------------------------------------------

    def gc(self, dry_run: bool = False) -> dict[str, Any]:
        """Delete objects and manifests no version references, and stale temp files."""
        with self._lock(self.root / "lock", exclusive=True):
            live_ids = {v.id for name in self.names() for v in self.versions(name)}
            live_objects: set[str] = set()
            for vid in live_ids:
                live_objects.update(e.sha256 for e in self.manifest(vid).entries)
            removed = {"objects": 0, "bytes": 0, "manifests": 0, "tmp": 0}
            removed_ids: list[str] = []
            for obj in (self.root / "objects" / "sha256").glob("*/*"):
                sha = obj.parent.name + obj.name
                if sha not in live_objects:
                    removed["objects"] += 1
                    removed_ids.append(sha)
                    removed["bytes"] += obj.stat().st_size
                    if not dry_run:
                        obj.unlink()
            for mpath in (self.root / "manifests").glob("*.json"):
                if mpath.stem not in live_ids:
                    removed["manifests"] += 1
                    if not dry_run:
                        mpath.unlink()
                        (self.root / "state" / "objstat" / mpath.name).unlink(missing_ok=True)
            for tmp in (self.root / "tmp").iterdir():  # no snapshot runs: all is garbage
                removed["tmp"] += 1
                if not dry_run:
                    if tmp.is_dir():
                        shutil.rmtree(tmp, ignore_errors=True)
                    else:
                        tmp.unlink(missing_ok=True)
        return {"dry_run": dry_run, "removed": removed, "live_versions": len(live_ids),
                "removed_objects": sorted(removed_ids)}


def select(ref: Ref, text: str, versions: list[Version], tags: dict[str, int]) -> Version:
    """Pick the version a parsed ref names from a name's versions and tags."""
    by_number = {v.number: v for v in versions}
    if ref.number is not None:
        if ref.number not in by_number:
            raise StageError(f"unknown version {text!r}")
        return by_number[ref.number]
    if ref.tag is not None:
        if ref.tag not in tags or tags[ref.tag] not in by_number:
            raise StageError(f"unknown tag in ref {text!r}")
        return by_number[tags[ref.tag]]
    if ref.id_prefix is not None:
        matches = {v.id for v in versions if v.id.startswith(ref.id_prefix)}
        if not matches:
            raise StageError(f"unknown version id in ref {text!r}")
        if len(matches) > 1:
            raise StageError(f"ambiguous version id prefix in ref {text!r}")
        return [v for v in versions if v.id in matches][-1]
    return versions[-1]


def scan_tree(source: Path) -> list[tuple[str, Path, os.stat_result]]:
    """Every regular file under ``source``: (posix relative path, path, stat), sorted.

    Symbolic links to files are followed only when they stay inside the tree; links to
    directories are refused.
    """
    root = source.resolve()
    out: list[tuple[str, Path, os.stat_result]] = []
    stack = [(source, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as it:
            for entry in it:
                rel = prefix + entry.name
                if entry.is_symlink():
                    target = Path(entry.path).resolve()
                    if not target.is_relative_to(root):
                        raise StageError(f"refusing symlink that escapes the tree: {entry.path}")
                    if target.is_dir():
                        raise StageError(f"refusing symlinked directory {entry.path}")
                if entry.is_dir(follow_symlinks=False):
                    stack.append((Path(entry.path), rel + "/"))
                elif entry.is_file():
                    out.append((check_path(rel), Path(entry.path), entry.stat()))
    return sorted(out, key=lambda item: item[0])


def _read_cache(path: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
