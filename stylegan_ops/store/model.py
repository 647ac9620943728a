"""Value objects of the version store: manifest entries, manifests, lineage, versions, refs.

Also the one validator of names, tags and refs (``validate_name``, ``validate_tag``,
``parse_ref``) that every entry point (store API, CLI, DAG operators, UI) uses: ASCII only,
so no Unicode look-alike can name a second version, and nothing that could act as a path.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from stylegan_ops.errors import StageError

MAX_NAME = 128
# re.ASCII and fullmatch: '$' would accept a trailing newline and \d Unicode digits.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}", re.ASCII)
TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)
NUMBER_TAG_RE = re.compile(r"[vV][0-9]+", re.ASCII)
SHA_RE = re.compile(r"^[0-9a-f]{64}\Z", re.ASCII)
ID_PREFIX_RE = re.compile(r"[0-9a-f]{4,64}", re.ASCII)
RESERVED_TAGS = frozenset({"latest"})
MAX_REF = 2 * MAX_NAME + 1
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_PATH_PART = 255  # bytes, the usual NAME_MAX
MAX_LINEAGE_TEXT = 4096


def _shown(value: object) -> str:
    """A bad value for a message: repr, cut short so one line stays one line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_name(name: object) -> str:
    """A version name: 1–128 of lowercase ASCII letters, digits, ``. _ -``, first alnum."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise StageError(f"invalid version name {_shown(name)}: use 1-{MAX_NAME} lowercase "
                         "ASCII letters, digits, . _ - (starting with a letter or digit)")
    return name


def validate_tag(tag: object) -> str:
    """A tag: 1–128 ASCII letters, digits, ``. _ -``, first alnum; not ``latest`` or vN."""
    if (not isinstance(tag, str) or not TAG_RE.fullmatch(tag) or NUMBER_TAG_RE.fullmatch(tag)
            or tag.lower() in RESERVED_TAGS):
        raise StageError(f"invalid tag {_shown(tag)}: 1-{MAX_NAME} ASCII letters, digits, "
                         ". _ - (starting with a letter or digit); not 'latest' or vN")
    return tag


# The names older code imports.
check_name = validate_name
check_tag = validate_tag


def check_path(path: object) -> str:
    """A manifest path must stay inside its directory: relative, no '..', no empty parts,
    no control characters, each part short enough for a filesystem."""
    if not isinstance(path, str):
        raise StageError(f"unsafe path in manifest: {_shown(path)}")
    parts = path.split("/")
    if (not path or path.startswith("/") or "\\" in path or CONTROL_RE.search(path)
            or any(part in ("", ".", "..") for part in parts)
            or any(len(part.encode("utf-8", "surrogateescape")) > MAX_PATH_PART
                   for part in parts)):
        raise StageError(f"unsafe path in manifest: {_shown(path)}")
    return path


def _int(value: object, what: str, minimum: int = 0) -> int:
    """An integer that is really one (JSON true is not 1, "7" is not 7)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StageError(f"{what} must be an integer >= {minimum}, got {_shown(value)}")
    return value


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StageError(f"{what} must be a JSON object, got {_shown(value)}")
    return value


@dataclass(frozen=True, order=True)
class Entry:
    """One file of a version: relative POSIX path, size in bytes, sha256."""

    path: str
    size: int
    sha256: str

    def __post_init__(self) -> None:
        check_path(self.path)
        if (isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0
                or not isinstance(self.sha256, str) or not SHA_RE.match(self.sha256)):
            raise StageError(f"bad manifest entry for {self.path!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, d: object) -> Entry:
        d = _object(d, "manifest entry")
        return cls(d["path"], d["size"], d["sha256"])


@dataclass(frozen=True)
class Manifest:
    """The files of a version, sorted by path; its id is the sha256 of its canonical JSON."""

    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        paths = [e.path for e in self.entries]
        if paths != sorted(paths) or len(set(paths)) != len(paths):
            raise StageError("manifest paths must be unique and sorted")
        # A file that is also a directory of another entry cannot be checked out.
        files = set(paths)
        for p in paths:
            parts = p.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in files:
                    raise StageError(f"manifest path {p!r} lies under the file "
                                     f"{'/'.join(parts[:i])!r}")

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.entries)

    def canonical(self) -> bytes:
        return self._canonical

    @functools.cached_property
    def _canonical(self) -> bytes:  # a manifest of 100k files: computed once
        body = {"files": [e.to_dict() for e in self.entries], "total_size": self.total_size,
                "file_count": len(self.entries)}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @functools.cached_property
    def id(self) -> str:
        return hashlib.sha256(self._canonical).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.canonical())  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, d: object) -> Manifest:
        files = _object(d, "manifest").get("files")
        if not isinstance(files, list):
            raise StageError("manifest 'files' must be a list")
        return cls(tuple(Entry.from_dict(e) for e in files))

    @classmethod
    def from_bytes(cls, data: bytes, expected_id: str | None = None) -> Manifest:
        """Parse a stored manifest, refusing one whose content does not match its id."""
        try:
            manifest = cls.from_dict(load_json(data))
        except (StageError, KeyError, TypeError) as exc:
            raise StageError(f"corrupt manifest: {exc}") from exc
        if expected_id is not None and manifest.id != expected_id:
            raise StageError(f"manifest content does not match its id {expected_id}")
        return manifest


def load_json(data: bytes | str) -> Any:
    """JSON from bytes, every way it can fail (syntax, encoding, nesting) a StageError."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise StageError(f"not valid JSON: {str(exc)[:100]}") from exc


def _text(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_LINEAGE_TEXT or CONTROL_RE.search(value):
        raise StageError(f"lineage {what} must be a one-line string, got {_shown(value)}")
    return value


def parse_input(text: object) -> str:
    """A lineage input: a pinned version ref ``name@<hex id>``."""
    if isinstance(text, str) and "@" in text:
        name, _, prefix = text.partition("@")
        if NAME_RE.fullmatch(name) and ID_PREFIX_RE.fullmatch(prefix):
            return text
    raise StageError(f"lineage input {_shown(text)} is not a version ref name@<id>")


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
    # the stage's cache key, {"key": hex, "parts": {...}, "continue_key": hex|None}: what a
    # later task with the same key reuses (see stylegan_ops.store.reuse)
    cache: dict[str, Any] | None = field(default=None, hash=False, compare=True)
    continued_from: str | None = None  # the snapshot or version training resumed from

    def __post_init__(self) -> None:
        for what in ("dag_id", "run_id", "task_id", "git_commit", "image", "continued_from"):
            _text(getattr(self, what), what)
        if self.cache is not None:
            key = _object(self.cache, "lineage cache").get("key")
            if not isinstance(key, str) or not SHA_RE.match(key):
                raise StageError(f"lineage cache key must be 64 hex digits, got {_shown(key)}")
        if self.try_number is not None:
            _int(self.try_number, "lineage try_number")
        if not isinstance(self.params, dict) or not all(isinstance(k, str) for k in self.params):
            raise StageError(f"lineage params must be a JSON object, got {_shown(self.params)}")
        if not isinstance(self.inputs, tuple):
            raise StageError(f"lineage inputs must be a list, got {_shown(self.inputs)}")
        for text in self.inputs:
            parse_input(text)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = list(self.inputs)
        return d

    @classmethod
    def from_dict(cls, d: object) -> Lineage:
        if d is None:
            return cls()
        d = _object(d, "lineage")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        unknown = sorted(str(k) for k in set(d) - set(known))
        if unknown:
            raise StageError(f"unknown lineage fields: {', '.join(unknown)}")
        inputs = known.get("inputs")
        if inputs is None:
            known["inputs"] = ()
        elif isinstance(inputs, list):
            known["inputs"] = tuple(inputs)
        else:
            raise StageError(f"lineage inputs must be a list, got {_shown(inputs)}")
        if known.get("params") is None:
            known["params"] = {}
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
    def from_dict(cls, d: object) -> Version:
        """A version record, every field of the type it claims, or StageError."""
        try:
            d = _object(d, "version record")
            vid = d["id"]
            if not isinstance(vid, str) or not SHA_RE.match(vid):
                raise StageError(f"bad id {_shown(vid)}")
            created = d["created"]
            if not isinstance(created, str):
                raise StageError(f"created must be a string, got {_shown(created)}")
            meta = d.get("meta")
            return cls(validate_name(d["name"]), _int(d["number"], "number", 1), vid, created,
                       Lineage.from_dict(d.get("lineage")),
                       {} if meta is None else _object(meta, "meta"),
                       _int(d.get("file_count", 0), "file_count"),
                       _int(d.get("total_size", 0), "total_size"))
        except KeyError as exc:
            raise StageError(f"corrupt version record: missing {exc}") from exc
        except StageError as exc:
            raise StageError(f"corrupt version record: {exc}") from exc


@dataclass(frozen=True)
class Ref:
    """A parsed reference: name plus one selector (number, tag, id prefix or latest)."""

    name: str
    number: int | None = None
    tag: str | None = None
    id_prefix: str | None = None

    @classmethod
    def parse(cls, text: object) -> Ref:
        return parse_ref(text)


def parse_ref(text: object) -> Ref:
    """``name``, ``name:latest``, ``name:vN``, ``name:TAG`` or ``name@HEX`` (4–64 digits)."""
    if not isinstance(text, str) or len(text) > MAX_REF:
        raise StageError(f"bad ref {_shown(text)}")
    if "@" in text:
        name, prefix = text.split("@", 1)
        validate_name(name)
        if not ID_PREFIX_RE.fullmatch(prefix):
            raise StageError(f"bad version id in ref {text!r}: need 4-64 lowercase hex digits")
        return Ref(name, id_prefix=prefix)
    name, colon, selector = text.partition(":")
    validate_name(name)
    if not colon or selector == "latest":
        return Ref(name)
    if m := re.fullmatch(r"v([1-9][0-9]{0,17})", selector, re.ASCII):
        return Ref(name, number=int(m.group(1)))
    if NUMBER_TAG_RE.fullmatch(selector) or not TAG_RE.fullmatch(selector):
        raise StageError(f"bad ref {text!r}: after ':' use latest, vN (N >= 1) or a tag")
    return Ref(name, tag=selector)


USE_REASONS = ("cache", "same-content")


@dataclass(frozen=True)
class Use:
    """A task that used an existing version instead of making one.

    ``reason``: ``cache`` (a stage task found a version carrying its cache key and did no
    work) or ``same-content`` (the task ran, and what it made was the name's latest version
    byte for byte). ``made_by_*`` name the run whose lineage the version carries. Versions
    are immutable, so a reuse is this separate record beside them, never an edit of one.
    """

    name: str
    number: int
    id: str
    at: str  # ISO 8601 UTC
    reason: str
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    try_number: int | None = None
    key: str | None = None  # the cache key the using task had
    made_by_dag_id: str | None = None
    made_by_run_id: str | None = None

    def __post_init__(self) -> None:
        validate_name(self.name)
        _int(self.number, "use number", 1)
        if not isinstance(self.id, str) or not SHA_RE.match(self.id):
            raise StageError(f"use record: bad version id {_shown(self.id)}")
        if self.reason not in USE_REASONS:
            raise StageError(f"use record: unknown reason {_shown(self.reason)}")
        for what in ("at", "dag_id", "run_id", "task_id", "made_by_dag_id", "made_by_run_id"):
            _text(getattr(self, what), what)
        if self.try_number is not None:
            _int(self.try_number, "use try_number")
        if self.key is not None and (not isinstance(self.key, str) or not SHA_RE.match(self.key)):
            raise StageError(f"use record: bad cache key {_shown(self.key)}")

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.number}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: object) -> Use:
        d = _object(d, "use record")
        unknown = sorted(str(k) for k in set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise StageError(f"use record: unknown fields: {', '.join(unknown)}")
        try:
            return cls(**d)
        except TypeError as exc:
            raise StageError(f"use record: {exc}") from exc
