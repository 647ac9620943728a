"""The content-addressed version store on a filesystem path.

Layout (plain files, so it can sit on shared storage or be served read-only over HTTP)::

    objects/sha256/ab/cdef…            file contents, stored once, read-only
    manifests/<id>.json                 canonical manifest; <id> = its sha256
    names/<name>/versions/000007.json   version record: number, id, lineage, meta
    names/<name>/tags/<tag>.json        {"number": 7}
    names/<name>/index.json             versions and tags, for remote readers
    state/                              stat records, damage flags, hash caches (caches)
    tmp/                                in-flight writes; anything here is garbage
    quarantine/                         what fsck moved out of the way, same paths
    lock                                flock: writers shared, gc and fsck exclusive

A version becomes visible only when its record is linked into ``versions/`` (an atomic,
exclusive link), after every object and the manifest are in place.

The store is split by role: ``base`` (paths, lock, atomic writes), ``objects`` (adding
objects, telling intact from altered), ``records`` (versions, tags, refs), ``checkout``,
``maintenance`` (verify, gc, fsck). ``Store`` here puts them together and commits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError
from stylegan_ops.store.base import Problem, default_root, failpoint
from stylegan_ops.store.maintenance import MaintenanceLayer
from stylegan_ops.store.model import Lineage, Manifest, Version, validate_name, validate_tag
from stylegan_ops.store.objects import Stat, hash_file, read_cache, scan_tree, stat_key
from stylegan_ops.store.records import select

__all__ = ["Problem", "Store", "default_root", "hash_file", "scan_tree", "select"]


class Store(MaintenanceLayer):
    """One store directory and every operation on it."""

    def snapshot(self, source: Path, name: str, tags: tuple[str, ...] = (),
                 lineage: Lineage | None = None, meta: dict[str, Any] | None = None
                 ) -> tuple[Version, bool]:
        """Commit a directory as a new version of ``name``; returns (version, created).

        Content identical to the name's latest version creates no new number (a retried
        task is idempotent); otherwise the next number is taken, even for content that an
        older version already had, because that is a new event in the name's history.
        """
        validate_name(name)
        for tag in tags:
            validate_tag(tag)
        if not isinstance(meta, dict | None):
            raise StageError("version metadata must be a JSON object")
        source = Path(source)
        if not source.is_dir():
            raise StageError(f"not a directory: {source}")
        files = scan_tree(source)
        cache_path = self.root / "state" / "hashcache" / (
            hashlib.sha256(str(source.resolve()).encode()).hexdigest() + ".json")
        cache = read_cache(cache_path)
        with self.locked():
            entries, new_cache, fresh = self._store_objects(files, cache)
            manifest = Manifest(tuple(sorted(entries)))
            failpoint("after-objects")
            self._put_manifest(manifest)
            self._remember_good(fresh)
            failpoint("after-manifest")
            version, created = self._commit(name, manifest, tuple(tags), lineage or Lineage(),
                                            meta or {})
        with contextlib.suppress(StageError, OSError):  # the cache is an optimisation only
            self._write(cache_path, json.dumps(new_cache).encode(), sync=False)
        return version, created

    def _put_manifest(self, manifest: Manifest) -> None:
        mpath = self.root / "manifests" / f"{manifest.id}.json"
        body = manifest.canonical()
        try:
            if mpath.is_file() and not mpath.is_symlink() and mpath.read_bytes() == body:
                return
        except OSError:
            pass
        self._write(mpath, body)  # absent or damaged: the right bytes are at hand

    def adopt(self, version: Version, manifest: Manifest, meta: dict[str, Any],
              fresh: frozenset[str] = frozenset()) -> tuple[Version, bool]:
        """Commit a version whose objects are already present (used by pull).

        ``fresh``: objects the caller has just written and hashed, recorded as known good.
        """
        validate_name(version.name)
        if manifest.id != version.id:
            raise StageError(f"manifest does not match version {version.ref}")
        with self.locked():
            for e in manifest.entries:
                if not self.object_path(e.sha256).is_file():
                    raise StageError(f"object {e.sha256} for {e.path} is missing")
            self._put_manifest(manifest)
            sizes = {e.sha256: e.size for e in manifest.entries}
            known: dict[str, Stat] = {}
            for sha in fresh & sizes.keys():  # hashed by the caller as they arrived
                st = os.lstat(self.object_path(sha))
                if st.st_size == sizes[sha]:
                    known[sha] = stat_key(st)
            self._remember_good(known)
            return self._commit(version.name, manifest, (), version.lineage,
                                {**version.meta, **meta})
