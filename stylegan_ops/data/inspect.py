"""Check any NVIDIA-layout TFRecord directory: levels, counts and the box-mean relation."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stylegan_ops.data import tfrecord
from stylegan_ops.errors import StageError

LEVEL_RE = re.compile(r"^(?P<name>.+)-r(?P<level>\d\d)\.tfrecords$")
TOLERANCE = 1.0  # chained float box means, rounded per level, stay within 1 of the bytes


@dataclass(frozen=True)
class InspectConfig:
    path: Path
    limit: int | None = None  # images whose pyramid is checked; None = every image

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise StageError(f"limit must be >= 0, got {self.limit}")


@dataclass
class InspectReport:
    path: str
    name: str = ""
    count: int = 0
    resolution: int = 0
    channels: int = 0
    levels: list[int] = field(default_factory=list)
    labels: bool = False
    checked: int = 0  # images whose whole pyramid was compared
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _box_mean(chw: np.ndarray) -> np.ndarray:
    f = chw.astype(np.float32)
    return (f[:, 0::2, 0::2] + f[:, 0::2, 1::2] + f[:, 1::2, 0::2] + f[:, 1::2, 1::2]) / 4


def run(cfg: InspectConfig) -> InspectReport:
    """Describe the dataset; every problem found is listed in ``problems``."""
    if not cfg.path.is_dir():
        raise StageError(f"not a directory: {cfg.path}")
    found: dict[str, dict[int, Path]] = {}
    for p in cfg.path.iterdir():
        if m := LEVEL_RE.match(p.name):
            found.setdefault(m["name"], {})[int(m["level"])] = p
    if not found:
        raise StageError(f"no *-rNN.tfrecords files in {cfg.path}")
    if len(found) > 1:
        raise StageError(f"{cfg.path} mixes datasets: {', '.join(sorted(found))}")
    name, files = next(iter(found.items()))
    for path in files.values():
        if not path.is_file():  # a directory, a FIFO or a dangling link under a level's name
            raise StageError(f"level file {path} is not a regular file")
    report = InspectReport(str(cfg.path), name=name, levels=sorted(files))
    top = max(files)
    report.resolution = 2**top
    report.labels = (cfg.path / f"{name}-rxx.labels").is_file()
    missing = [lvl for lvl in range(2, top + 1) if lvl not in files]
    if missing:
        report.problems.append("missing levels: " + ", ".join(f"r{m:02d}" for m in missing))

    # Walk every level in lockstep: image i is record i in each file.
    order = sorted(files, reverse=True)
    streams = [tfrecord.iter_records(files[lvl]) for lvl in order]
    counts = dict.fromkeys(order, 0)
    try:
        for i, payloads in enumerate(_zip_longest(streams)):
            images: dict[int, np.ndarray] = {}
            for lvl, payload in zip(order, payloads, strict=True):
                if payload is None:
                    continue
                counts[lvl] += 1
                if cfg.limit is not None and i >= cfg.limit:
                    continue
                img = tfrecord.decode_example(payload)
                if img.shape[1:] != (2**lvl, 2**lvl):
                    report.problems.append(f"record {i} of r{lvl:02d} has shape {img.shape}")
                images[lvl] = img
            report.channels = report.channels or next(
                (im.shape[0] for im in images.values()), 0)
            if images:
                report.checked += 1
                _check_pyramid(i, images, report)
            if len(report.problems) > 20:
                report.problems.append("too many problems; stopped")
                break
    except (StageError, ValueError) as exc:
        report.problems.append(str(exc))
    report.count = counts[top]
    if len(set(counts.values())) > 1:
        report.problems.append("levels hold different image counts: " + ", ".join(
            f"r{lvl:02d}={n}" for lvl, n in sorted(counts.items())))
    if report.count == 0:
        report.problems.append("the dataset holds no images")
    return report


def _zip_longest(streams: list[Any]) -> Any:
    iterators = [iter(s) for s in streams]
    while True:
        row = [next(it, None) for it in iterators]
        if all(r is None for r in row):
            return
        yield row


def _check_pyramid(index: int, images: dict[int, np.ndarray], report: InspectReport) -> None:
    for lvl, img in images.items():
        lower = images.get(lvl - 1)
        if lower is None or img.shape[1] != 2 * lower.shape[1]:
            continue
        err = float(np.abs(_box_mean(img) - lower.astype(np.float32)).max())
        if err > TOLERANCE:
            report.problems.append(f"image {index}: r{lvl - 1:02d} is not the 2x2 box mean of "
                                   f"r{lvl:02d} (max error {err:.1f})")
