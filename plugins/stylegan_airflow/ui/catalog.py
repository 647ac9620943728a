"""What the StyleGAN2 page shows, read from the version store only (never written to).

Versions are immutable, so everything keyed by a version or object id (manifests, parsed
metric files, generate.json) is cached in memory; listings are read fresh on each request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError
from stylegan_ops.store.local import Store
from stylegan_ops.store.model import Entry, Manifest, Ref, Use, Version, check_name, check_path
from stylegan_ops.store.objects import hash_file
from stylegan_ops.training import FAKES_RE, name_kimg

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
SEED_RE = re.compile(r"^seed(\d+)\.png$")
METRIC_FILE_RE = re.compile(r"^metric-(.+)\.jsonl$")
STAND_IN = "@stand-in"
SMALL_FILE = 2 << 20  # metadata files larger than this are not parsed by the page
REPAIR = ("run `stylegan-ops store verify --repair`, then re-pull or re-snapshot it "
          "to restore it")


class UIError(Exception):
    """A request the page answers with an error status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def not_found(message: str) -> UIError:
    """A 404 with a message."""
    return UIError(404, message)


def refused(message: str) -> UIError:
    """A 400 for malformed or unsafe input."""
    return UIError(400, message)


@dataclass(frozen=True)
class Image:
    """One picture of a version, with what it shows."""

    path: str
    sha256: str
    size: int
    kind: str  # reals | fakes | seed | image
    caption: str
    order: float = 0  # kimg for fakes grids, seed number for seeds


class ReadOnlyStore(Store):
    """The store's read operations: creates nothing, writes nothing (not even caches)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, create=False, readonly=True)


@dataclass
class VersionView:
    """A version plus its tags and manifest, ready for templates and JSON."""

    version: Version
    tags: list[str]
    manifest: Manifest
    entries: dict[str, Entry] = field(repr=False)
    problem: str | None = None  # manifest missing or corrupt, files altered: shown, not hidden

    @property
    def ref(self) -> str:
        return self.version.ref

    @property
    def pinned(self) -> str:
        """The immutable ref ``name@id``: URLs built from it can be cached forever."""
        return f"{self.version.name}@{self.version.id}"

    @property
    def kind(self) -> str:
        return kind_of(self.entries)

    def images(self) -> list[Image]:
        return images_of(self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {**self.version.to_dict(), "ref": self.ref, "pinned": self.pinned,
                "tags": self.tags, "kind": self.kind, "problem": self.problem}


def kind_of(entries: dict[str, Entry]) -> str:
    """What a version holds, judged by its files (names are free to choose)."""
    top = {p.split("/", 1)[0] for p in entries}
    # before the metric files: a training run evaluated at its snapshots holds some too
    if "stats.jsonl" in top or any(p.startswith(("network-snapshot-", "network-final"))
                                   for p in top):
        return "network"
    if any(METRIC_FILE_RE.match(p) for p in top):
        return "evaluation"
    if "generate.json" in top or any(SEED_RE.match(p) for p in top):
        return "generated"
    if "config.json" in top and any(p.endswith(".npz") for p in entries):
        return "network"
    if "dataset.json" in top or any(p.endswith(".tfrecords") for p in top):
        return "dataset"
    return "files"


def kimg_text(kimg: float) -> str:
    """A kimg as exactly as names record it (three decimals at most): 0.512, 4.5, 8."""
    return f"{kimg:.3f}".rstrip("0").rstrip(".")


def images_of(entries: dict[str, Entry]) -> list[Image]:
    """Top-level pictures: reals, fakes grids by kimg (ours and NVIDIA's names mix, so
    never by name), seeds by number, then the rest."""
    out = []
    for path, e in entries.items():
        if "/" in path or not path.lower().endswith(IMAGE_SUFFIXES):
            continue
        if path == "reals.png":
            out.append(Image(path, e.sha256, e.size, "reals", "real images", -1))
        elif path == "fakes_init.png":
            out.append(Image(path, e.sha256, e.size, "fakes", "fakes at 0 kimg (init)", -1))
        elif FAKES_RE.match(path) and (kimg := name_kimg(path)) is not None:
            out.append(Image(path, e.sha256, e.size, "fakes",
                             f"fakes at {kimg_text(kimg)} kimg", kimg))
        elif m := SEED_RE.match(path):
            seed = int(m.group(1))
            out.append(Image(path, e.sha256, e.size, "seed", f"seed {seed}", seed))
        else:
            out.append(Image(path, e.sha256, e.size, "image", path))
    rank = {"reals": 0, "fakes": 1, "seed": 2, "image": 3}
    return sorted(out, key=lambda i: (rank[i.kind], i.order, i.path))


@lru_cache(maxsize=512)
def _manifest(root: str, version_id: str) -> Manifest:
    return ReadOnlyStore(Path(root)).manifest(version_id)


TORN = "torn"  # what ``_numbered_lines`` gives for a line that is not JSON


@lru_cache(maxsize=1024)
def _numbered_lines(object_path: str) -> tuple[tuple[int, bool, Any], ...]:
    """(line number, parsed, value) of each non-empty line of a small immutable object
    (keyed by its sha path); a line that is not JSON is (n, False, TORN)."""
    out: list[tuple[int, bool, Any]] = []
    with open(object_path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append((number, True, json.loads(line)))
            except ValueError:  # a torn or foreign line must not hide the rest of the file
                out.append((number, False, TORN))
    return tuple(out)


class Catalog:
    """Read access to one store for the page; every lookup error is a UIError."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._store: ReadOnlyStore | None = None
        self._flagged: dict[str, dict[str, Any]] | None = None
        self._numbered: dict[str, list[Version]] = {}  # name → versions, for labels
        self._uses: dict[str, list[Use]] = {}  # name → its readable use records

    @property
    def store(self) -> Store:
        """One reader per request, so the damaged records it skips are reported once."""
        if self._store is None:
            if not (self.root / "objects").is_dir():
                raise not_found(f"no version store at {self.root} (set STYLEGAN_STORE)")
            self._store = ReadOnlyStore(self.root)
        return self._store

    def skipped(self) -> dict[str, str]:
        """Damaged records (store-relative path → why) the readers skipped so far."""
        return dict(self._store.record_problems) if self._store is not None else {}

    def flagged(self) -> dict[str, dict[str, Any]]:
        """Objects the store has found altered (a write through a hard-linked checkout)."""
        if self._flagged is None:
            self._flagged = self.store.damaged_objects() if self.exists() else {}
        return self._flagged

    def exists(self) -> bool:
        return (self.root / "objects").is_dir()

    # --- versions ---------------------------------------------------------------------

    def names(self) -> list[str]:
        return self.store.names() if self.exists() else []

    def versions(self, name: str) -> list[VersionView]:
        """Every version of ``name``, newest first."""
        store = self.store
        try:
            check_name(name)
        except StageError as exc:
            raise refused(str(exc)) from exc
        try:
            versions = store.versions(name)
            tags = store.tags(name)
        except (StageError, OSError, ValueError) as exc:  # a damaged record
            raise UIError(500, f"cannot read the versions of {name!r}: {exc}") from exc
        if not versions:
            raise not_found(f"unknown version name {name!r}")
        return [self._view(v, tags) for v in reversed(versions)]

    def resolve(self, text: str) -> VersionView:
        """The version a ref names; a malformed ref is refused, an unknown one is 404."""
        try:
            Ref.parse(text)
        except StageError as exc:
            raise refused(f"bad version ref: {exc}") from exc
        store = self.store
        try:
            version = store.resolve(text)
        except StageError as exc:
            raise not_found(str(exc)) from exc
        return self._view(version, store.tags(version.name))

    def _view(self, version: Version, tags: dict[str, int]) -> VersionView:
        own_tags = sorted(t for t, n in tags.items() if n == version.number)
        try:
            manifest = _manifest(str(self.root), version.id)
        except StageError as exc:  # one damaged version must not hide the others
            return VersionView(version, own_tags, Manifest(()), {},
                               f"{exc}; run `stylegan-ops store verify`")
        entries = {e.path: e for e in manifest.entries}
        flagged = self.flagged()
        altered = [p for p, e in entries.items() if e.sha256 in flagged] if flagged else []
        problem = (f"{len(altered)} files altered since stored (first: {altered[0]}); "
                   f"{REPAIR}") if altered else None
        return VersionView(version, own_tags, manifest, entries, problem)

    def _listed(self, name: str) -> list[Version]:
        """The readable versions of ``name`` by number, read once per request."""
        if name not in self._numbered:
            try:
                self._numbered[name] = self.store.versions(name) if self.exists() else []
            except (StageError, OSError, ValueError):  # a bad name or a damaged record
                self._numbered[name] = []
        return self._numbered[name]

    def input_version(self, text: str) -> Version | None:
        """The version of this store a lineage input (``name@id``) names, else None: a
        pulled or foreign input is shown as it was recorded, not guessed at."""
        try:
            ref = Ref.parse(text)
        except StageError:
            return None
        if ref.id_prefix is None:
            return None
        return next((v for v in self._listed(ref.name) if v.id.startswith(ref.id_prefix)),
                    None)

    def previous(self, version: Version) -> Version | None:
        """The version of the same name just before ``version`` (numbers may have gaps
        where a record is damaged)."""
        older = [v for v in self._listed(version.name) if v.number < version.number]
        return older[-1] if older else None

    def all_versions(self) -> Iterator[VersionView]:
        for name in self.names():
            yield from self.versions(name)

    def of_kind(self, kind: str) -> list[VersionView]:
        """Every version, of every name, that holds ``kind`` (dataset, network, …)."""
        return [v for name in self.names() for v in self.versions(name) if v.kind == kind]

    # --- files ------------------------------------------------------------------------

    def entry(self, view: VersionView, path: str) -> Entry:
        """The manifest entry for ``path``: user input is looked up, never joined to a path."""
        try:
            check_path(path)
        except StageError as exc:
            raise refused(f"refused path {path!r}: {exc}") from exc
        entry = view.entries.get(path)
        if entry is None:
            raise not_found(f"{view.ref} has no file {path!r}")
        return entry

    def object_file(self, entry: Entry) -> Path:
        """The object holding ``entry``, never one that is not what the manifest says:
        known altered is refused; changed since last verified is rehashed when small and
        refused when large (this reader writes nothing, so `store verify` must vouch)."""
        store = self.store
        path = store.object_path(entry.sha256)
        condition = store.object_condition(entry.sha256, entry.size)
        if condition == "missing":
            raise not_found(f"object for {entry.path!r} is missing from the store; "
                            "run `stylegan-ops store verify`")
        if condition == "unverified" and entry.size <= SMALL_FILE:
            try:
                condition = None if hash_file(path) == entry.sha256 else "damaged (hash)"
            except OSError as exc:
                condition = f"unreadable ({exc.strerror})"
        if condition == "unverified":
            raise UIError(409, f"{entry.path!r} changed since it was last verified; run "
                               "`stylegan-ops store verify` to check it")
        if condition is not None:
            raise UIError(409, f"{entry.path!r} is {condition}; {REPAIR}")
        return path

    def json_lines(self, view: VersionView, path: str) -> list[dict[str, Any]]:
        """Parsed JSON lines of a small file of a version ([] when absent or too big)."""
        entry = view.entries.get(path)
        if entry is None or entry.size > SMALL_FILE:
            return []
        try:
            lines = _numbered_lines(str(self.object_file(entry)))
        except (OSError, UIError):
            return []
        return [value for _, ok, value in lines if ok and isinstance(value, dict)]

    def numbered_lines(self, view: VersionView, path: str
                       ) -> tuple[tuple[tuple[int, bool, Any], ...], str | None]:
        """Each line of a small file of a version as ``_numbered_lines`` gives it, and
        why there are none when the file cannot be read (too big, damaged, missing)."""
        entry = view.entries.get(path)
        if entry is None:
            return (), "not in this version"
        if entry.size > SMALL_FILE:
            return (), f"{entry.size} bytes, over the {SMALL_FILE}-byte limit the page reads"
        try:
            return _numbered_lines(str(self.object_file(entry))), None
        except UIError as exc:
            return (), exc.message
        except OSError as exc:
            return (), f"unreadable ({exc.strerror})"

    def json_file(self, view: VersionView, path: str) -> dict[str, Any]:
        """A small JSON document of a version ({} when absent, too big or not an object)."""
        entry = view.entries.get(path)
        if entry is None or entry.size > SMALL_FILE:
            return {}
        try:
            value = json.loads(self.object_file(entry).read_bytes())
        except (OSError, ValueError, UIError):
            return {}
        return value if isinstance(value, dict) else {}

    # --- metrics and generation details -----------------------------------------------

    def metric_records(self, view: VersionView) -> list[dict[str, Any]]:
        """The latest record of each metric file of an evaluation version."""
        out = []
        for path in sorted(view.entries):
            if METRIC_FILE_RE.match(path):
                records = self.json_lines(view, path)
                if records:
                    out.append(records[-1])
        return out

    def results(self, view: VersionView) -> dict[str, float]:
        """Metric name → value; the files win over the version's meta (which may be stale)."""
        values: dict[str, float] = {}
        for record in self.metric_records(view):
            standard = not str(record.get("metric", "")).endswith(STAND_IN)
            for key, value in dict(record.get("results") or {}).items():
                if isinstance(value, int | float):
                    values[key if standard or key.endswith(STAND_IN) else key + STAND_IN] = (
                        float(value))
        if not values:
            meta = view.version.meta.get("metrics")
            for key, value in (meta.items() if isinstance(meta, dict) else ()):
                if isinstance(value, int | float):
                    values[str(key)] = float(value)
                elif isinstance(value, dict):  # {metric: {name: value}} as a stage reports it
                    values.update({str(k): float(v) for k, v in value.items()
                                   if isinstance(v, int | float)})
        return values

    def generation(self, view: VersionView) -> dict[str, Any]:
        """Network and truncation a generated version came from (meta first, then files)."""
        info = self.json_file(view, "generate.json")
        meta = view.version.meta
        return {"network": meta.get("network") or info.get("network"),
                "truncation_psi": meta.get("truncation_psi", info.get("truncation_psi")),
                "seeds": meta.get("seeds") or info.get("seeds") or []}

    def produced_by(self, dag_id: str, run_id: str) -> list[VersionView]:
        """Versions whose lineage names this DAG run."""
        return [v for v in self.all_versions()
                if v.version.lineage.dag_id == dag_id and v.version.lineage.run_id == run_id]

    # --- reuse ------------------------------------------------------------------------

    def uses(self, name: str) -> list[Use]:
        """The use records of ``name``'s versions, oldest first, read once per request.
        A damaged record is skipped and noted by the store; one naming a version this
        store does not hold (a number with another id, or none) is skipped and noted here."""
        if name not in self._uses:
            try:
                found = self.store.uses(name) if self.exists() else []
            except (StageError, OSError, ValueError):  # a bad name or an unreadable folder
                found = []
            held = {v.number: v.id for v in self._listed(name)}
            kept = []
            for use in found:
                if held.get(use.number) == use.id:
                    kept.append(use)
                else:
                    self.store.note(f"names/{name}/uses", f"a use of {use.ref} "
                                    f"(id {use.id[:12]}) that names no version of this store")
            self._uses[name] = kept
        return self._uses[name]

    def used_by(self, dag_id: str, run_id: str) -> list[tuple[VersionView, Use]]:
        """The versions this DAG run used instead of making them, each with its first use
        record (a retried commit task records its use again)."""
        out = []
        for name in self.names():
            mine = [u for u in self.uses(name) if u.dag_id == dag_id and u.run_id == run_id]
            if not mine:
                continue
            try:
                views = {v.version.number: v for v in self.versions(name)}
            except UIError:  # its versions went unreadable since listed: the index says so
                continue
            seen: set[int] = set()
            for use in mine:
                if use.number not in seen and use.number in views:
                    seen.add(use.number)
                    out.append((views[use.number], use))
        return out


def is_stand_in(metric: str) -> bool:
    """Whether a metric name marks a non-standard detector."""
    return metric.endswith(STAND_IN)


def ref_of_input(text: str) -> str | None:
    """A lineage input (``name@id``) as a ref the page can link to, or None if malformed."""
    try:
        Ref.parse(text)
    except StageError:
        return None
    return text
