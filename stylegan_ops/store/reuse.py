"""Reuse by lineage: a stage's cache key, the version that carries it, and the training an
earlier run left behind.

A key is the sha256 of the canonical JSON of four parts (``CacheKey.parts``):

``stage``
    the sub-command, e.g. ``train``.
``args``
    its arguments as run, less the values of output flags (``--out``) and of flags named
    unkeyed by the task (paths of inputs that ``inputs`` identifies by content), with the
    run's own directory written ``<run>`` and input files written ``sha256:<digest>``.
``inputs``
    the versions it reads, ``name@id``, sorted.
``code``
    what runs it: the stage image's id on its Docker host, or ``stylegan-ops <version> src
    <sha256 of the package's source>`` for a local subprocess. ``None`` only for a download
    checked against a published checksum: the same bytes whatever code fetched them.

Nothing else goes in: not the run id, the try number, the time, the host or the profile
(a CPU and a GPU run of one image and arguments make the same result up to float noise,
and the profile is where it ran, not what it made).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import dump_json
from stylegan_ops.store.base import read_json_record
from stylegan_ops.store.model import SHA_RE, Use, Version
from stylegan_ops.training import SNAPSHOT_RE

FORMAT = "stylegan-cache/1"


@dataclass(frozen=True)
class CacheKey:
    """The parts of a cache key (see the module docstring); ``key`` is their digest."""

    stage: str
    args: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    code: str | None = None

    def parts(self) -> dict[str, Any]:
        return {"format": FORMAT, "stage": self.stage, "args": list(self.args),
                "inputs": sorted(self.inputs), "code": self.code}

    @property
    def key(self) -> str:
        body = json.dumps(self.parts(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()

    def without(self, flag: str) -> CacheKey:
        """This key less one flag and its value: training continued to another length
        shares everything but ``--total-kimg``."""
        args = list(self.args)
        if flag in args:
            i = args.index(flag)
            del args[i:i + 2]
        return CacheKey(self.stage, tuple(args), self.inputs, self.code)

    def record(self, continue_flag: str | None = None) -> dict[str, Any]:
        """What the lineage keeps: the key, its parts, and the continuation key."""
        return {"key": self.key, "parts": self.parts(),
                "continue_key": self.without(continue_flag).key if continue_flag else None}

    @classmethod
    def from_parts(cls, parts: dict[str, Any]) -> CacheKey:
        """The key a lineage recorded; parts of the wrong types (a hand-made or pulled
        record) are a StageError."""
        args, inputs, code = parts.get("args") or [], parts.get("inputs") or [], parts.get("code")
        if not (isinstance(args, list) and isinstance(inputs, list)
                and all(isinstance(a, str) for a in (*args, *inputs))
                and isinstance(code, str | None)):
            raise StageError(f"lineage cache parts of the wrong types: {str(parts)[:80]}")
        return cls(str(parts.get("stage")), tuple(args), tuple(inputs), code)


def differences(old: CacheKey, new: CacheKey) -> list[str]:
    """What changed from ``old`` to ``new``, one short phrase per part."""
    out = []
    if old.stage != new.stage:
        out.append(f"stage {old.stage} → {new.stage}")
    if old.args != new.args:
        a, b = _flags(old.args), _flags(new.args)
        changed = [f"{k} {a.get(k, '(none)')} → {b.get(k, '(none)')}"
                   for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        out.append("arguments " + ", ".join(changed) if changed else "argument order")
    if sorted(old.inputs) != sorted(new.inputs):
        gone = sorted(set(old.inputs) - set(new.inputs))
        came = sorted(set(new.inputs) - set(old.inputs))
        out.append(f"inputs {', '.join(gone) or '(none)'} → {', '.join(came) or '(none)'}")
    if old.code != new.code:
        out.append(f"code {_short(old.code)} → {_short(new.code)}")
    return out


def _flags(args: tuple[str, ...]) -> dict[str, str]:
    """``--flag value`` pairs and positional arguments (keyed by position) of an argv."""
    out: dict[str, str] = {}
    i, pos = 0, 0
    while i < len(args):
        if args[i].startswith("--"):
            value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") \
                else "(set)"
            out[args[i]] = value
            i += 2 if value != "(set)" else 1
        else:
            out[f"argument {pos + 1}"] = args[i]
            pos += 1
            i += 1
    return out


def _short(code: str | None) -> str:
    if code is None:
        return "(not keyed)"
    return re.sub(r"[0-9a-f]{16,}", lambda m: m.group(0)[:12], code)


# --- what the code is ----------------------------------------------------------------------

@functools.cache
def source_digest() -> str:
    """sha256 over every ``.py`` file of the installed ``stylegan_ops`` (path and bytes)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if "__pycache__" in rel:
            continue
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def local_code() -> str:
    from stylegan_ops import __version__

    return f"stylegan-ops {__version__} src {source_digest()}"


# --- finding an earlier result -------------------------------------------------------------

def cache_of(version: Version) -> dict[str, Any] | None:
    return version.lineage.cache


def find(store: Any, name: str, key: str) -> tuple[Version, Use | None] | None:
    """The newest version of ``name`` made for ``key``: one whose lineage carries it, or
    one a task with this key made again byte for byte (a ``same-content`` use)."""
    versions = store.versions(name)
    for v in reversed(versions):
        if (cache_of(v) or {}).get("key") == key:
            return v, None
    by_number = {v.number: v for v in versions}
    for use in reversed(store.uses(name)):
        v = by_number.get(use.number)
        if use.reason == "same-content" and use.key == key and v is not None and v.id == use.id:
            return v, use
    return None


def closest(store: Any, name: str, want: CacheKey) -> tuple[Version, list[str]] | None:
    """The earlier version of ``name`` from the same stage whose key differs least."""
    best: tuple[int, int, Version, list[str]] | None = None
    for v in store.versions(name):
        parts = (cache_of(v) or {}).get("parts")
        if not isinstance(parts, dict) or parts.get("stage") != want.stage:
            continue
        try:
            diff = differences(CacheKey.from_parts(parts), want)
        except StageError:
            continue  # nothing to compare with; it is no candidate for reuse either
        rank = (len(diff), -v.number)
        if best is None or rank < best[:2]:
            best = (*rank, v, diff)
    return (best[2], best[3]) if best else None


# --- training left behind ------------------------------------------------------------------

@dataclass(frozen=True)
class Start:
    """A snapshot training can continue from: where it is, how far it got, whose it was."""

    path: Path  # a snapshot directory (network-snapshot-NNNNNN or network-final)
    kimg: float
    what: str  # for the log and the lineage, e.g. "stylegan2-trained-network:v3@ab12…"
    version: Version | None = None  # the version holding it, when it comes from the store


def _training_dir(store: Any, continue_key: str) -> Path:
    if not SHA_RE.match(continue_key):
        raise StageError(f"bad continuation key {continue_key!r}")
    return Path(store.root) / "state" / "training" / continue_key


def register_training(store: Any, continue_key: str, dag_id: str, run_id: str,
                      out: Path) -> None:
    """Remember that this run trains into ``out``: a later run with the same continuation
    key finds its snapshots there if it never finishes. (A cache: losing it only means a
    later run starts over.)"""
    record = {"dag_id": dag_id, "run_id": run_id, "out": str(out)}
    name = hashlib.sha256(f"{dag_id}\0{run_id}\0{out}".encode()).hexdigest()[:32]
    with store.locked():
        store._write(_training_dir(store, continue_key) / f"{name}.json", dump_json(record))


def _snapshot_kimg(path: Path) -> float | None:
    try:
        value = json.loads((path / "state.json").read_text())["kimg"]
        if isinstance(value, bool):
            return None
        kimg = round(float(value), 3)  # as the stage reports it: sums of batch/1000
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return kimg if (path / "G.npz").is_file() and (path / "D.npz").is_file() else None


def left_snapshots(store: Any, continue_key: str, exclude_out: Path,
                   max_kimg: float) -> list[Start]:
    """Snapshots that runs registered under ``continue_key`` left in their directories,
    at most ``max_kimg`` far (a longer run's snapshot would overshoot this one)."""
    out = []
    tdir = _training_dir(store, continue_key)
    for rec_path in sorted(tdir.glob("*.json")) if tdir.is_dir() else ():
        try:
            rec = read_json_record(rec_path, store.rel(rec_path))
            run_out = Path(rec["out"])
        except (StageError, KeyError, TypeError):
            continue
        if run_out == exclude_out or not run_out.is_dir():
            continue
        try:
            snaps = sorted(run_out.iterdir())
        except OSError:  # unreadable: nothing to continue from there
            continue
        for snap in snaps:
            if SNAPSHOT_RE.match(snap.name) and (kimg := _snapshot_kimg(snap)) is not None \
                    and kimg <= max_kimg:
                out.append(Start(snap, kimg, f"run {rec.get('run_id')}'s {snap.name} "
                                             f"({kimg:g} kimg)"))
    return out


def finished_networks(store: Any, name: str, continue_key: str,
                      max_kimg: float) -> list[tuple[Version, float]]:
    """Committed training results sharing ``continue_key``, at most ``max_kimg`` long."""
    found = []
    for v in store.versions(name):
        if (cache_of(v) or {}).get("continue_key") != continue_key:
            continue
        stage = v.meta.get("stage")  # free metadata: anything may be there
        result = stage.get("result") if isinstance(stage, dict) else None
        kimg = result.get("kimg") if isinstance(result, dict) else None
        if isinstance(kimg, int | float) and not isinstance(kimg, bool) and kimg <= max_kimg:
            found.append((v, float(kimg)))
    return found


def is_own_snapshot_dir(out: Path) -> bool:
    """Whether ``out`` already holds a snapshot (then ``--resume auto`` continues there)."""
    return out.is_dir() and any(SNAPSHOT_RE.match(p.name) for p in out.iterdir())


def relocate(value: Any, old: str, new: str) -> Any:
    """``value`` (a stage result) with every string path under ``old`` moved under ``new``."""
    if isinstance(value, str):
        if value == old or value.startswith(old.rstrip("/") + "/"):
            return new + value[len(old):]
        return value
    if isinstance(value, list):
        return [relocate(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: relocate(v, old, new) for k, v in value.items()}
    return value

