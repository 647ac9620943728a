"""Extract an NVIDIA-layout TFRecord training set from an image source: the stage entry.

The first ``max_images`` decodable records in source order become the dataset. Work splits
into position ranges ("shards") that run in separate processes or separate Airflow tasks;
``merge`` concatenates them in order and tops up from the source when skipped records left
the set short, so any split gives the same bytes as a single pass.

Where things live: reading sources in ``sources`` (LMDB checked by ``lmdbcheck``), decoding
and the pyramid in ``extract``, shards and merge in ``shards``, file names, dataset.json and
reuse in ``layout``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stylegan_ops.data.extract import LevelWriters, extract, pyramid
from stylegan_ops.data.layout import (
    MAX_RESOLUTION,
    PrepareResult,
    existing_dataset,
    file_digests,
    finish,
    is_power_of_two,
    labels_file,
    level_file,
    make_parent,
    read_labels,
)
from stylegan_ops.data.shards import (
    SHARD_NAME,
    assemble,
    existing_shard,
    extract_parallel,
    load_shard,
    plan,
    shard_range,
    write_shard,
)
from stylegan_ops.data.sources import SOURCES, Source, open_source
from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import atomic_dir, temp_sibling

__all__ = ["MAX_WORKERS", "SHARD_NAME", "PrepareConfig", "PrepareResult", "file_digests",
           "is_power_of_two", "labels_file", "level_file", "merge", "plan", "pyramid", "run"]

MAX_WORKERS = 256  # local processes; more is a typo, not a machine
MAX_SHARDS = 1 << 20  # Airflow tasks for one request; each shard.json is then tiny


@dataclass(frozen=True)
class PrepareConfig:
    """What to extract and where; ``shard=(i, n)`` extracts only the i-th of n ranges."""

    kind: str  # source kind: "lsun" (LMDB in key order) or "images" (folder in path order)
    source: Path
    out: Path
    resolution: int = 256  # output size in pixels; a power of two in 4..8192
    max_images: int | None = None  # stop after this many decodable images; None = all
    workers: int = 1  # local processes (at most 256); the result does not depend on it
    labels: Path | None = None  # .npy float32 [N, label_dim], one row per source record
    shard: tuple[int, int] | None = None  # (index, count): write one shard for `merge`

    def __post_init__(self) -> None:
        if self.kind not in SOURCES:
            raise StageError(f"unknown source kind {self.kind!r}")
        if not is_power_of_two(self.resolution) or self.resolution > MAX_RESOLUTION:
            raise StageError(f"resolution must be a power of two in 4..{MAX_RESOLUTION}, got "
                             f"{self.resolution}")
        if self.max_images is not None and self.max_images < 1:
            raise StageError(f"max-images must be >= 1, got {self.max_images}")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise StageError(f"workers must be in 1..{MAX_WORKERS}, got {self.workers}")
        if self.shard is not None:
            index, count = self.shard
            if count < 1 or not 0 <= index < count or count > MAX_SHARDS:
                raise StageError(f"shard must be i/N with 0 <= i < N <= {MAX_SHARDS}, got "
                                 f"{index}/{count}")


def _load_labels(cfg: PrepareConfig, entries: int) -> np.ndarray | None:
    return None if cfg.labels is None else read_labels(cfg.labels, entries)


def _request(cfg: PrepareConfig, entries: int) -> dict[str, Any]:
    """The inputs that determine the output bytes; shards and reruns must agree on it."""
    return {
        "source": {"kind": cfg.kind, "path": str(cfg.source.resolve()), "entries": entries},
        "resolution": cfg.resolution,
        "max_images": cfg.max_images,
        "labels": str(cfg.labels.resolve()) if cfg.labels else None,
    }


def run(cfg: PrepareConfig) -> PrepareResult:
    """Extract a dataset (or one shard of it) as NVIDIA TFRecords."""
    source = open_source(cfg.kind, cfg.source)
    try:
        entries = len(source)
        labels = _load_labels(cfg, entries)
        request = _request(cfg, entries)
        if cfg.shard is not None:
            source.close()  # the shard writer opens its own (an LMDB opens once a process)
            return _run_shard(cfg, request, labels)
        if (done := existing_dataset(cfg.out, request)) is not None:
            return done
        if cfg.workers == 1:
            return _run_sequential(cfg, request, source, labels)
    finally:
        source.close()  # forked workers open their own handle
    ranges = plan(entries, cfg.max_images, cfg.workers)
    make_parent(cfg.out)
    scratch = temp_sibling(cfg.out)
    try:
        scratch.mkdir()
        shard_dirs = [scratch / f"{SHARD_NAME}-{i}" for i in range(len(ranges))]
        extract_parallel(cfg, request, ranges, shard_dirs)
        return assemble(shard_dirs, cfg.out, move=True)
    except OSError as exc:
        raise StageError(f"cannot write {cfg.out}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def merge(shard_dirs: list[Path], out: Path) -> PrepareResult:
    """Concatenate shards in order into one dataset; top up from the source if short."""
    return assemble(shard_dirs, out, move=False)


def _run_sequential(cfg: PrepareConfig, request: dict[str, Any], source: Source,
                    labels: np.ndarray | None) -> PrepareResult:
    from tqdm import tqdm

    total = len(source) if cfg.max_images is None else min(len(source), cfg.max_images)
    make_parent(cfg.out)
    with atomic_dir(cfg.out) as tmp, tqdm(total=total, unit="img", desc="extract",
                                          mininterval=1.0) as bar:
        writers = LevelWriters(tmp, cfg.out.name, cfg.resolution)
        done = extract(source, 0, len(source), cfg.max_images, cfg.resolution, writers,
                       labels, bar.update)
        writers.close()
        return finish(tmp, cfg.out, request, done.count, done.skipped, writers.labels)


def _run_shard(cfg: PrepareConfig, request: dict[str, Any],
               labels: np.ndarray | None) -> PrepareResult:
    assert cfg.shard is not None
    index, count = cfg.shard
    if (done := existing_shard(cfg.out, request | {"shard": [index, count]})) is not None:
        return done
    start, stop = shard_range(int(request["source"]["entries"]), cfg.max_images, index, count)
    write_shard(cfg, request, index, count, start, stop, cfg.out, labels)
    meta = load_shard(cfg.out, need_digests=True)
    return PrepareResult(str(cfg.out), meta["count"], cfg.resolution, len(meta["skipped"]),
                         meta["files"])
