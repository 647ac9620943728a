"""A training version's metrics over kimg, as ``train --metrics`` records them.

Each snapshot's evaluation is one line of ``metric-<name>.jsonl`` (the evaluate record plus
``kimg`` and ``snapshot``); ``--keep-best`` adds ``best.json`` and ``network-best/``. What
another writer damaged is skipped line by line and said in a note, never a 500.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from stylegan_airflow.ui.catalog import (
    METRIC_FILE_RE,
    STAND_IN,
    Catalog,
    VersionView,
    kimg_text,
)
from stylegan_ops.training import SNAPSHOT_RE, name_kimg

BEST_FILE = "best.json"


@dataclass(frozen=True)
class Sample:
    """One snapshot's value of one result key."""

    kimg: float
    value: float | None  # None: recorded as null (not a finite number), drawn as a gap
    snapshot: str  # as recorded ('' when the record names none)
    why: str = ""  # the record's reason for a null


@dataclass(frozen=True)
class Curve:
    """The headline values of one metric file, one list of samples per result key."""

    path: str  # metric-swd.jsonl
    metric: str  # as recorded: swd, fid50k@stand-in
    keys: dict[str, tuple[Sample, ...]]  # swd_avg → samples in kimg order

    @property
    def stand_in(self) -> bool:
        return self.metric.endswith(STAND_IN)


@dataclass(frozen=True)
class Best:
    """``best.json``: the snapshot ``--keep-best`` kept as ``network-best``."""

    metric: str  # the result key ranked (swd_avg)
    value: float
    kimg: float
    snapshot: str
    kept: bool  # network-best/ is in the version


@dataclass
class Progress:
    """Everything a page plots for one training version."""

    curves: list[Curve] = field(default_factory=list)
    best: Best | None = None
    notes: list[str] = field(default_factory=list)  # what was skipped, and why

    def best_curve(self) -> tuple[Curve, str] | None:
        """The curve and key the best snapshot was ranked by."""
        if self.best is None:
            return None
        want = base_key(self.best.metric)
        return next(((c, k) for c in self.curves for k in c.keys if base_key(k) == want),
                    None)

    def to_dict(self) -> dict[str, Any]:
        return {"curves": [{"path": c.path, "metric": c.metric, "stand_in": c.stand_in,
                            "keys": {k: [{"kimg": s.kimg, "value": s.value,
                                          "snapshot": s.snapshot} for s in samples]
                                     for k, samples in c.keys.items()}}
                           for c in self.curves],
                "best": None if self.best is None else {
                    "metric": self.best.metric, "value": self.best.value,
                    "kimg": self.best.kimg, "snapshot": self.best.snapshot,
                    "kept": self.best.kept},
                "notes": self.notes}


def base_key(key: str) -> str:
    """A result key without the stand-in mark: best.json ranks by the plain key."""
    return key[:-len(STAND_IN)] if key.endswith(STAND_IN) else key


def headline(metric: str, keys: list[str]) -> list[str]:
    """The result keys a metric is judged by: the one named like the metric (fid50k,
    ppl2_wend), else the averages (swd_avg), else all but spreads (precision and recall)."""
    name = base_key(metric)
    same = [k for k in keys if base_key(k) == name]
    if same:
        return same
    averages = [k for k in keys if base_key(k).endswith("_avg")]
    return averages or [k for k in keys if not base_key(k).endswith("_std")] or keys


def _number(value: Any) -> float | None:
    """A finite JSON number, else None (JSON's true is no kimg)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _kimg(record: dict[str, Any]) -> float | None:
    """The kimg of a record: its own number, else the one its snapshot's name says."""
    kimg = _number(record.get("kimg"))
    if kimg is None and isinstance(record.get("snapshot"), str):
        kimg = name_kimg(record["snapshot"])
    return kimg if kimg is not None and kimg >= 0 else None


def progress(catalog: Catalog, view: VersionView) -> Progress | None:
    """The metrics over kimg of a training version; None when it has none (an evaluate
    stage's output, whose records have no kimg, keeps its per-version plots)."""
    found = Progress()
    training = view.kind == "network"
    if BEST_FILE in view.entries:
        found.best = _best(catalog, view, found.notes)
    ranked = base_key(found.best.metric) if found.best else None
    for path in sorted(p for p in view.entries if METRIC_FILE_RE.match(p)):
        lines, problem = catalog.numbered_lines(view, path)
        if problem is not None:
            if training:
                found.notes.append(f"{path}: {problem}; not plotted")
            continue
        if not training and not any(ok and isinstance(v, dict) and "kimg" in v
                                    for _, ok, v in lines):
            continue
        curve = _curve(path, lines, found.notes, ranked)
        if curve is not None:
            found.curves.append(curve)
    if found.best is not None and found.best_curve() is None:
        found.notes.append(f"{BEST_FILE} ranks by {found.best.metric!r}, which no metric "
                           "file records; the best snapshot is not marked")
    return found if found.curves or found.notes or found.best else None


def _curve(path: str, lines: tuple[tuple[int, bool, Any], ...], notes: list[str],
           ranked: str | None) -> Curve | None:
    """The headline keys of one file, and the key best.json ranks by if this file has it."""
    metric = METRIC_FILE_RE.match(path)
    assert metric is not None
    series: dict[str, list[Sample]] = {}
    for number, ok, record in lines:
        where = f"{path} line {number}"
        if not ok or not isinstance(record, dict):
            notes.append(f"{where}: {'not JSON' if not ok else 'not a JSON object'}, skipped")
            continue
        kimg = _kimg(record)
        results = record.get("results")
        if kimg is None:
            notes.append(f"{where}: kimg {record.get('kimg')!r} is not a number of kimg, "
                         "skipped")
            continue
        if not isinstance(results, dict) or not results:
            notes.append(f"{where}: no results, skipped")
            continue
        named = record.get("snapshot")
        snapshot = named if isinstance(named, str) and SNAPSHOT_RE.match(named) else ""
        invalid = record.get("invalid")
        reasons: dict[str, Any] = invalid if isinstance(invalid, dict) else {}
        for key, raw in results.items():
            value = _number(raw)
            if raw is not None and value is None:
                notes.append(f"{where}: {key} is {raw!r}, not a number; drawn as a gap")
            why = reasons.get(key)
            series.setdefault(str(key), []).append(
                Sample(kimg, value, snapshot, why if isinstance(why, str) else ""))
    if not series:
        return None
    keys = headline(metric.group(1), list(series))
    keys += [k for k in series if k not in keys and base_key(k) == ranked]
    return Curve(path, metric.group(1),
                 {k: tuple(sorted(series[k], key=lambda s: s.kimg)) for k in keys})


def _best(catalog: Catalog, view: VersionView, notes: list[str]) -> Best | None:
    info = catalog.json_file(view, BEST_FILE)
    metric, value = info.get("metric"), _number(info.get("value"))
    named = info.get("snapshot")
    snapshot: str = named if isinstance(named, str) else ""
    # the name is what the run wrote (three decimals); the number may carry float noise
    kimg = name_kimg(snapshot) if snapshot and SNAPSHOT_RE.match(snapshot) else None
    kimg = kimg if kimg is not None else _number(info.get("kimg"))
    if not isinstance(metric, str) or not metric or value is None or kimg is None:
        notes.append(f"{BEST_FILE} is not a best-snapshot record (metric, value, kimg, "
                     "snapshot); the best snapshot is not marked")
        return None
    kept = any(p.startswith("network-best/") for p in view.entries)
    return Best(metric, value, kimg, snapshot, kept)


def best_label(best: Best) -> str:
    """How the best snapshot is named on a page."""
    return f"{best.metric} {best.value:.4g} at {kimg_text(best.kimg)} kimg"
