"""Value objects of the version store: manifest entries, manifests, lineage, versions, refs."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any

from stylegan_ops.errors import StageError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
RESERVED_TAGS = frozenset({"latest"})


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise StageError(f"invalid version name {name!r}: use lowercase letters, digits, . _ -")
    return name


def check_tag(tag: str) -> str:
    if not TAG_RE.match(tag) or re.fullmatch(r"v\d+", tag) or tag in RESERVED_TAGS:
        raise StageError(f"invalid tag {tag!r}: letters, digits, . _ -; not 'latest' or vN")
    return tag


def check_path(path: str) -> str:
    """A manifest path must stay inside its directory: relative, no '..', no empty parts."""
    p = PurePosixPath(path)
    if (not path or path.startswith("/") or "\\" in path or p.is_absolute()
            or any(part in ("", ".", "..") for part in path.split("/"))):
        raise StageError(f"unsafe path in manifest: {path!r}")
    return path


@dataclass(frozen=True, order=True)
class Entry:
    """One file of a version: relative POSIX path, size in bytes, sha256."""

    path: str
    size: int
    sha256: str

    def __post_init__(self) -> None:
        check_path(self.path)
        if not SHA_RE.match(self.sha256) or self.size < 0:
            raise StageError(f"bad manifest entry for {self.path!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entry:
        return cls(str(d["path"]), int(d["size"]), str(d["sha256"]))


@dataclass(frozen=True)
class Manifest:
    """The files of a version, sorted by path; its id is the sha256 of its canonical JSON."""

    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        paths = [e.path for e in self.entries]
        if paths != sorted(paths) or len(set(paths)) != len(paths):
            raise StageError("manifest paths must be unique and sorted")

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.entries)

    def canonical(self) -> bytes:
        body = {"files": [e.to_dict() for e in self.entries], "total_size": self.total_size,
                "file_count": len(self.entries)}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @property
    def id(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.canonical())  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        return cls(tuple(Entry.from_dict(e) for e in d["files"]))

    @classmethod
    def from_bytes(cls, data: bytes, expected_id: str | None = None) -> Manifest:
        """Parse a stored manifest, refusing one whose content does not match its id."""
        try:
            manifest = cls.from_dict(json.loads(data))
        except (ValueError, KeyError, TypeError) as exc:
            raise StageError(f"corrupt manifest: {exc}") from exc
        if expected_id is not None and manifest.id != expected_id:
            raise StageError(f"manifest content does not match its id {expected_id}")
        return manifest


@dataclass(frozen=True)
class Lineage:
    """Who produced a version, from what: the Airflow task, the code, the inputs."""

    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    try_number: int | None = None
    git_commit: str | None = None
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)
    inputs: tuple[str, ...] = ()  # version ids (name@id) this one was made from
    image: str | None = None  # container image (with digest) the producing stage ran in

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = list(self.inputs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Lineage:
        d = d or {}
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise StageError(f"unknown lineage fields: {', '.join(unknown)}")
        known["inputs"] = tuple(known.get("inputs") or ())
        known["params"] = dict(known.get("params") or {})
        return cls(**known)


@dataclass(frozen=True)
class Version:
    """A numbered, immutable version of a name: manifest id, lineage, free metadata."""

    name: str
    number: int
    id: str
    created: str  # ISO 8601 UTC
    lineage: Lineage = field(default_factory=Lineage)
    meta: dict[str, Any] = field(default_factory=dict, hash=False)
    file_count: int = 0
    total_size: int = 0

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.number}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "number": self.number, "id": self.id,
                "created": self.created, "lineage": self.lineage.to_dict(), "meta": self.meta,
                "file_count": self.file_count, "total_size": self.total_size}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Version:
        try:
            version = cls(check_name(d["name"]), int(d["number"]), str(d["id"]),
                          str(d["created"]), Lineage.from_dict(d.get("lineage")),
                          dict(d.get("meta") or {}), int(d.get("file_count", 0)),
                          int(d.get("total_size", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise StageError(f"corrupt version record: {exc}") from exc
        if not SHA_RE.match(version.id):
            raise StageError(f"corrupt version record: bad id {version.id!r}")
        return version


@dataclass(frozen=True)
class Ref:
    """A parsed reference: name plus one selector (number, tag, id prefix or latest)."""

    name: str
    number: int | None = None
    tag: str | None = None
    id_prefix: str | None = None

    @classmethod
    def parse(cls, text: str) -> Ref:
        if "@" in text:
            name, prefix = text.split("@", 1)
            if not re.fullmatch(r"[0-9a-f]{4,64}", prefix):
                raise StageError(f"bad version id in ref {text!r}: need 4+ hex digits")
            return cls(check_name(name), id_prefix=prefix)
        name, _, selector = text.partition(":")
        check_name(name)
        if selector in ("", "latest"):
            return cls(name)
        if m := re.fullmatch(r"v(\d+)", selector):
            return cls(name, number=int(m.group(1)))
        if not TAG_RE.match(selector):
            raise StageError(f"bad ref {text!r}")
        return cls(name, tag=selector)
