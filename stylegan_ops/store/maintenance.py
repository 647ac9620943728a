"""Keeping a store whole: verify (rehash), gc (delete the unreferenced) and fsck (clean
what killed writers left, quarantine damaged records, rebuild caches).

Nothing that might belong to a version is deleted: gc collects objects only while every
version record and every live manifest is readable, and fsck moves damaged records to
``quarantine/`` (same path as they had) instead of deleting them; version ids named in
quarantined records keep their manifests and objects alive, so a hand-repaired record can
be put back; a quarantined record that names no id stops collection altogether (any
unreferenced manifest might be its). ``rm -r quarantine`` gives that space up.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError
from stylegan_ops.store.base import Problem, failpoint, read_json_record, read_small
from stylegan_ops.store.checkout import CheckoutLayer
from stylegan_ops.store.model import SHA_RE, validate_name

HEX64 = re.compile(rb"[0-9a-f]{64}")


class MaintenanceLayer(CheckoutLayer):
    """verify, gc, fsck."""

    # --- verify -----------------------------------------------------------------------

    def verify(self, text: str | None = None, full: bool = True) -> tuple[int, list[Problem]]:
        """Rehash the objects of one version or of every version; (checked, problems).

        Problems include damaged records readers had to skip. ``full=False`` rehashes only
        objects whose stat changed since they were last known good.
        """
        with self.maybe_locked() as writable:
            if text is not None:
                versions = [self.resolve(text)]
                prefix = f"names/{versions[0].name}/"
            else:
                versions = [v for name in self.names() for v in self.versions(name)]
                for name in self.names():
                    self.tags(name)
                prefix = ""
            problems: list[Problem] = []
            seen: dict[str, list[Problem]] = {}
            for v in versions:
                if v.id not in seen:
                    try:
                        entries = self.manifest(v.id).entries
                    except StageError as exc:
                        seen[v.id] = [Problem(v.ref, "", v.id, f"manifest: {exc}")]
                    else:
                        seen[v.id] = self.check_objects(v.ref, entries, full, writable)[0]
                problems.extend(Problem(v.ref, p.path, p.sha256, p.problem) for p in seen[v.id])
        problems.extend(p for p in self.problems() if p.path.startswith(prefix))
        return len(versions), problems

    def leftovers(self) -> list[str]:
        """What killed writers left (cleaned by gc and fsck): tmp files, empty names."""
        out = [self.rel(p) for p in sorted((self.root / "tmp").glob("*"))]
        for ndir in sorted((self.root / "names").glob("*")):
            if ndir.is_dir() and not ndir.is_symlink() and self._is_leftover_name(ndir):
                out.append(self.rel(ndir))
        return out

    def _is_leftover_name(self, ndir: Path) -> bool:
        """A name directory with no version record and no tag file at all (anything it
        cannot tell, such as an unreadable or non-directory ``versions``, is not one)."""
        try:
            for sub in ("versions", "tags"):
                with contextlib.suppress(FileNotFoundError):
                    if os.listdir(ndir / sub):
                        return False
            return all(n in (".lock", "index.json", "versions", "tags", "uses")
                       for n in os.listdir(ndir))
        except OSError:
            return False

    # --- gc ---------------------------------------------------------------------------

    def _quarantined_ids(self) -> tuple[set[str], list[str]]:
        """Version ids named in quarantined version records (kept alive for a hand
        repair), and the quarantined records that name none (so any unreferenced
        manifest might be theirs)."""
        ids: set[str] = set()
        unknown: list[str] = []
        for path in sorted((self.root / "quarantine" / "names").glob("*/versions/*")):
            try:
                found = HEX64.findall(read_small(path, str(path)))
            except StageError:
                found = []
            ids.update(m.decode() for m in found)
            if not found:
                unknown.append(f"{self.rel(path)} names no version id; delete it once you "
                               "know its version is not needed")
        return ids, unknown

    def gc(self, dry_run: bool = False) -> dict[str, Any]:
        """Delete objects and manifests no version references, and what killed writers
        left. Collects nothing while a version record or live manifest is unreadable."""
        with self.locked(exclusive=True):
            self.record_problems.clear()
            versions = [v for name in self.names() for v in self.versions(name)]
            blocked = [f"{rel}: {msg}" for rel, msg in self.record_problems.items()
                       if "/tags/" not in rel]
            live_ids = {v.id for v in versions}
            quarantined, unknown = self._quarantined_ids()
            blocked.extend(unknown)
            kept_ids = live_ids | quarantined
            live_objects: set[str] = set()
            for vid in sorted(kept_ids):
                try:
                    live_objects.update(e.sha256 for e in self.manifest(vid).entries)
                except StageError as exc:
                    if vid in live_ids:
                        blocked.append(f"manifest {vid}: {exc}")
            removed = {"objects": 0, "bytes": 0, "manifests": 0, "tmp": 0, "leftovers": 0}
            removed_ids: list[str] = []
            self._clean_leftovers(removed, dry_run)
            if not blocked:
                self._collect(live_objects, kept_ids, removed, removed_ids, dry_run)
        report: dict[str, Any] = {"dry_run": dry_run, "removed": removed,
                                  "live_versions": len(live_ids),
                                  "removed_objects": sorted(removed_ids),
                                  "collected": not blocked}
        if blocked:
            report["not_collected_because"] = blocked
        return report

    def _clean_leftovers(self, removed: dict[str, int], dry_run: bool) -> None:
        for tmp in list((self.root / "tmp").glob("*")):  # no writer runs: all is garbage
            removed["tmp"] += 1
            if not dry_run:
                _remove(tmp)
        for ndir in list((self.root / "names").glob("*")):
            if ndir.is_dir() and not ndir.is_symlink() and self._is_leftover_name(ndir):
                removed["leftovers"] += 1
                if not dry_run:
                    shutil.rmtree(ndir, ignore_errors=True)

    def _collect(self, live_objects: set[str], kept_ids: set[str], removed: dict[str, int],
                 removed_ids: list[str], dry_run: bool) -> None:
        first = True
        for obj in sorted((self.root / "objects" / "sha256").glob("*/*")):
            sha = obj.parent.name + obj.name
            if not SHA_RE.match(sha) or sha in live_objects:
                continue  # a misnamed entry is for fsck to judge, not for gc to delete
            removed["objects"] += 1
            removed_ids.append(sha)
            with contextlib.suppress(OSError):
                removed["bytes"] += os.lstat(obj).st_size
            if not dry_run:
                _remove(obj)
                self._unflag(sha)
                if first:
                    failpoint("gc-after-first-object")
                    first = False
        if not dry_run:
            self._remember_good({}, forget=removed_ids)
        failpoint("gc-before-manifests")
        for mpath in sorted((self.root / "manifests").glob("*.json")):
            if SHA_RE.match(mpath.stem) and mpath.stem not in kept_ids:
                removed["manifests"] += 1
                if not dry_run:
                    _remove(mpath)

    # --- fsck -------------------------------------------------------------------------

    def fsck(self, dry_run: bool = False) -> dict[str, Any]:
        """Clean what killed writers left, move damaged records, manifests and flagged
        objects to quarantine/, drop broken caches and rebuild every index.json."""
        report: dict[str, Any] = {"dry_run": dry_run, "removed": [], "quarantined": [],
                                  "rebuilt": []}

        def quarantine(path: Path, why: str) -> None:
            report["quarantined"].append({"path": self.rel(path), "why": why})
            if not dry_run:
                self._quarantine(path)
                failpoint("fsck-after-first-move")

        def drop(path: Path) -> None:
            report["removed"].append(self.rel(path))
            if not dry_run:
                _remove(path)

        with self.locked(exclusive=True):
            for tmp in list((self.root / "tmp").glob("*")):
                drop(tmp)
            self._fsck_names(quarantine, drop, report, dry_run)
            self._fsck_manifests(quarantine)
            self._fsck_objects(quarantine)
            self._fsck_state(drop)
        return report

    def _fsck_names(self, quarantine: Any, drop: Any, report: dict[str, Any],
                    dry_run: bool) -> None:
        for entry in sorted((self.root / "names").glob("*")):
            try:
                if entry.is_symlink() or not entry.is_dir():
                    raise StageError("not a name directory")
                name = validate_name(entry.name)
            except StageError as exc:
                quarantine(entry, str(exc))
                continue
            self.record_problems.clear()
            versions = self.versions(name)
            tags = self.tags(name)
            self.uses(name)
            for rel, msg in sorted(self.record_problems.items()):
                quarantine(self.root / rel, msg)
            numbers = {v.number for v in versions}
            for tag, number in sorted(tags.items()):
                if number not in numbers:
                    quarantine(entry / "tags" / f"{tag}.json",
                               f"tag points to v{number}, which is missing or damaged")
            if dry_run:
                continue
            if self._is_leftover_name(entry):
                drop(entry)
            elif versions:
                self._write_index(name)
                report["rebuilt"].append(f"names/{name}/index.json")
        self.record_problems.clear()

    def _fsck_manifests(self, quarantine: Any) -> None:
        for mpath in sorted((self.root / "manifests").glob("*")):
            if not (mpath.name.endswith(".json") and SHA_RE.match(mpath.stem)):
                quarantine(mpath, "not a manifest name")
                continue
            try:
                self.manifest(mpath.stem)
            except StageError as exc:
                quarantine(mpath, str(exc))

    def _fsck_objects(self, quarantine: Any) -> None:
        damaged = self.damaged_objects()
        for sha, flag in sorted(damaged.items()):
            quarantine(self.object_path(sha), f"content altered ({flag.get('problem')}, found "
                                              f"{flag.get('found')} by {flag.get('where')})")
        for obj in sorted((self.root / "objects" / "sha256").glob("*/*")):
            sha = obj.parent.name + obj.name
            if sha in damaged:
                continue
            if not SHA_RE.match(sha) or len(obj.parent.name) != 2:
                quarantine(obj, "not an object name")
            elif obj.is_symlink() or not obj.is_file():
                quarantine(obj, "not a regular file")

    def _fsck_state(self, drop: Any) -> None:
        state = self.root / "state"
        if (state / "objstat").is_dir():  # per-manifest stat records of older versions
            drop(state / "objstat")
        damaged = self.damaged_objects()
        for path in sorted(state.glob("*/*.json")):
            try:
                read_json_record(path, self.rel(path))
            except StageError:
                drop(path)
                continue
            if path.parent.name == "damaged" and path.stem not in damaged:
                drop(path)  # the object is gone or is another file now: a stale flag

    def _quarantine(self, path: Path) -> None:
        target = self.root / "quarantine" / self.rel(path)
        n = 0
        while os.path.lexists(target):
            n += 1
            target = target.with_name(f"{target.name.split('~')[0]}~{n}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, target)
        if path.parent.parent.name == "sha256":
            self._unflag(path.parent.name + path.name)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)

