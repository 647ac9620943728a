"""Versions and refs: the records under ``names/`` that make objects into versions.

Readers tolerate damage: a version record or tag file that is truncated, of the wrong
types, empty, a directory, a symlink or says it is another version is skipped and noted
(``record_problems``), so one bad file never hides the rest of the store. A name whose
``versions/`` holds no readable record (what a snapshot killed before its link leaves) is
not listed. ``index.json`` is derived (for remote readers) and rebuilt on every write.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import time
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import dump_json
from stylegan_ops.store.base import failpoint, now, read_json_record
from stylegan_ops.store.model import (
    SHA_RE,
    Lineage,
    Manifest,
    Ref,
    Use,
    Version,
    parse_ref,
    validate_name,
    validate_tag,
)
from stylegan_ops.store.objects import ObjectLayer

RECORD_RE = re.compile(r"([0-9]{6,18})\.json", re.ASCII)
USE_RE = re.compile(r"[0-9]{20}-[0-9a-f]{8}\.json", re.ASCII)
MAX_MANIFEST = 256 << 20  # about two million files


class RecordLayer(ObjectLayer):
    """Names, versions, tags and refs."""

    # --- reading --------------------------------------------------------------------

    def _entries(self, directory: Path) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(directory) as it:
                return sorted(it, key=lambda e: e.name)
        except NotADirectoryError:
            self.note(directory, "not a directory")
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.note(directory, f"cannot list: {exc.strerror}")
        return []

    def names(self) -> list[str]:
        """Names with at least one readable version."""
        out = []
        for entry in self._entries(self.root / "names"):
            if not entry.is_dir(follow_symlinks=False):
                self.note(Path(entry.path), "not a name directory")
                continue
            try:
                validate_name(entry.name)
            except StageError as exc:
                self.note(Path(entry.path), str(exc))
                continue
            if self.versions(entry.name):
                out.append(entry.name)
        return out

    def versions(self, name: str) -> list[Version]:
        """The readable versions of ``name`` by number; damaged records are noted."""
        vdir = self.root / "names" / validate_name(name) / "versions"
        out = []
        for entry in self._entries(vdir):
            m = RECORD_RE.fullmatch(entry.name)
            path = Path(entry.path)
            if not m:
                self.note(path, "unexpected file among version records")
                continue
            try:
                version = Version.from_dict(read_json_record(path, self.rel(path)))
                if version.name != name or version.number != int(m.group(1)):
                    raise StageError(f"record says it is {version.ref}")
            except StageError as exc:
                self.note(path, str(exc))
                continue
            out.append(version)
        return sorted(out, key=lambda v: v.number)

    def tags(self, name: str) -> dict[str, int]:
        """Tag → version number; damaged tag files are noted and left out."""
        tdir = self.root / "names" / validate_name(name) / "tags"
        out = {}
        for entry in self._entries(tdir):
            path = Path(entry.path)
            try:
                if not entry.name.endswith(".json"):
                    raise StageError("unexpected file among tags")
                tag = validate_tag(entry.name[:-5])
                data = read_json_record(path, self.rel(path))
                number = data.get("number") if isinstance(data, dict) else None
                if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                    raise StageError(f"tag record must be {{\"number\": N}}, got {data!r:.60}")
            except StageError as exc:
                self.note(path, str(exc))
                continue
            out[tag] = number
        return out

    def uses(self, name: str) -> list[Use]:
        """The recorded uses of ``name``'s versions, oldest first; damaged ones are noted."""
        udir = self.root / "names" / validate_name(name) / "uses"
        out = []
        for entry in self._entries(udir):
            path = Path(entry.path)
            try:
                if not USE_RE.fullmatch(entry.name):
                    raise StageError("unexpected file among use records")
                use = Use.from_dict(read_json_record(path, self.rel(path)))
                if use.name != name:
                    raise StageError(f"record says it is a use of {use.name}")
            except StageError as exc:
                self.note(path, str(exc))
                continue
            out.append(use)
        return out

    def record_use(self, use: Use) -> None:
        """Add a use record (a new file: records are never rewritten)."""
        ndir = self.root / "names" / validate_name(use.name)

        def check() -> None:
            if not any(v.number == use.number and v.id == use.id
                       for v in self.versions(use.name)):
                raise StageError(f"cannot record a use of {use.ref}: no such version")

        check()  # before any lock: a use of an unknown name creates nothing
        with self.locked(), self._lock(ndir / ".lock", exclusive=True):
            check()
            self._write(ndir / "uses" / f"{time.time_ns():020d}-{secrets.token_hex(4)}.json",
                        dump_json(use.to_dict()))

    def damaged_records(self, name: str) -> list[str]:
        """Noted problems under ``names/<name>/`` (after reading it)."""
        prefix = f"names/{name}/"
        return [rel for rel in self.record_problems if rel.startswith(prefix)]

    def resolve(self, text: str) -> Version:
        """The version a ref names; unknown or ambiguous refs raise StageError naming it."""
        ref = parse_ref(text)
        versions = self.versions(ref.name)
        tags = self.tags(ref.name)
        damaged = self.damaged_records(ref.name)
        hint = (f" ({len(damaged)} damaged records under names/{ref.name}, first: "
                f"{damaged[0]}; run `stylegan-ops store fsck`)") if damaged else ""
        if not versions:
            raise StageError(f"unknown version name in ref {text!r}{hint}")
        try:
            return select(ref, text, versions, tags)
        except StageError as exc:
            raise StageError(f"{exc}{hint}") from exc

    def manifest(self, version_id: str) -> Manifest:
        if not isinstance(version_id, str) or not SHA_RE.match(version_id):
            raise StageError(f"bad manifest id {version_id!r}")
        path = self.root / "manifests" / f"{version_id}.json"
        if not os.path.lexists(path):
            raise StageError(f"manifest {version_id} is missing from the store")
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                raise StageError(f"manifest {version_id} is not a regular file")
            if st.st_size > MAX_MANIFEST:
                raise StageError(f"manifest {version_id} is {st.st_size} bytes, too large")
            data = path.read_bytes()
        except OSError as exc:
            raise StageError(f"cannot read manifest {version_id}: {exc.strerror}") from exc
        return Manifest.from_bytes(data, version_id)

    # --- writing --------------------------------------------------------------------

    def _max_number(self, name: str) -> int:
        """The highest number ever given in ``name``, readable or not, quarantined or
        not: a number is never given twice."""
        best = 0
        for vdir in (self.root / "names" / name / "versions",
                     self.root / "quarantine" / "names" / name / "versions"):
            try:
                names = os.listdir(vdir)
            except OSError:
                continue
            for fname in names:
                if m := RECORD_RE.match(fname):
                    best = max(best, int(m.group(1)))
        return best

    def _commit(self, name: str, manifest: Manifest, tags: tuple[str, ...], lineage: Lineage,
                meta: dict[str, Any]) -> tuple[Version, bool]:
        ndir = self.root / "names" / name
        with self._lock(ndir / ".lock", exclusive=True):
            existing = self.versions(name)
            top = self._max_number(name)
            if existing and existing[-1].id == manifest.id and existing[-1].number == top:
                version, created = existing[-1], False
            else:
                version = Version(name, top + 1, manifest.id, now(), lineage, meta,
                                  len(manifest.entries), manifest.total_size)
                self._link_version(ndir, version)
                created = True
            for tag in tags:
                self._write(ndir / "tags" / f"{tag}.json", dump_json({"number": version.number}))
            self._write_index(name)
        return version, created

    def _link_version(self, ndir: Path, version: Version) -> None:
        tmp = self._tmp(".version")
        try:
            with open(tmp, "wb") as f:
                f.write(dump_json(version.to_dict()))
                f.flush()
                os.fsync(f.fileno())
            target = ndir / "versions" / f"{version.number:06d}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            failpoint("before-version-link")
            try:
                os.link(tmp, target)  # atomic and exclusive: a number is never taken twice
            except FileExistsError as exc:
                raise StageError(f"version {version.ref} was taken concurrently") from exc
            except OSError as exc:
                raise StageError(f"cannot write {target}: {exc.strerror}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def _write_index(self, name: str) -> None:
        failpoint("before-index")
        index = {"name": name, "versions": [{"number": v.number, "id": v.id}
                                            for v in self.versions(name)],
                 "tags": self.tags(name)}
        self._write(self.root / "names" / name / "index.json", dump_json(index))

    # --- tags -----------------------------------------------------------------------

    def tag(self, text: str, tag: str) -> Version:
        """Point ``tag`` at the version ``text`` names (moving it if it exists)."""
        validate_tag(tag)
        name = self.resolve(text).name  # before any lock: an unknown name creates nothing
        with self.locked(), self._lock(self.root / "names" / name / ".lock", exclusive=True):
            version = self.resolve(text)
            failpoint("tag-before-write")
            self._write(self.root / "names" / name / "tags" / f"{tag}.json",
                        dump_json({"number": version.number}))
            failpoint("tag-after-write")
            self._write_index(name)
        return version

    def untag(self, name: str, tag: str) -> None:
        """Remove ``tag`` from ``name`` (also the way to drop a damaged tag file)."""
        validate_name(name)
        validate_tag(tag)
        path = self.root / "names" / name / "tags" / f"{tag}.json"
        if not os.path.lexists(path):
            raise StageError(f"no tag {tag!r} on {name}")
        with self.locked(), self._lock(self.root / "names" / name / ".lock", exclusive=True):
            if not os.path.lexists(path):
                raise StageError(f"no tag {tag!r} on {name}")
            failpoint("untag-before-unlink")
            try:
                if path.is_dir() and not path.is_symlink():
                    os.rmdir(path)
                else:
                    path.unlink()
            except OSError as exc:
                raise StageError(f"cannot remove tag file {path}: {exc.strerror}") from exc
            failpoint("untag-after-unlink")
            self._write_index(name)


def select(ref: Ref, text: str, versions: list[Version], tags: dict[str, int]) -> Version:
    """Pick the version a parsed ref names from a name's versions and tags."""
    by_number = {v.number: v for v in versions}
    if ref.number is not None:
        if ref.number not in by_number:
            raise StageError(f"unknown version {text!r}")
        return by_number[ref.number]
    if ref.tag is not None:
        if ref.tag not in tags:
            raise StageError(f"unknown tag in ref {text!r}")
        if tags[ref.tag] not in by_number:
            raise StageError(f"tag in ref {text!r} points to v{tags[ref.tag]}, which is "
                             "missing or damaged")
        return by_number[tags[ref.tag]]
    if ref.id_prefix is not None:
        matches = {v.id for v in versions if v.id.startswith(ref.id_prefix)}
        if not matches:
            raise StageError(f"unknown version id in ref {text!r}")
        if len(matches) > 1:
            raise StageError(f"ambiguous version id prefix in ref {text!r}")
        return [v for v in versions if v.id in matches][-1]
    return versions[-1]
