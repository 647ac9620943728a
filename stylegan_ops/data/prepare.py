"""Extract an NVIDIA-layout TFRecord training set from an image source.

The first ``max_images`` decodable records in source order become the dataset. Work splits
into position ranges ("shards") that run in separate processes or separate Airflow tasks;
``merge`` concatenates them in order and tops up from the source when skipped records left
the set short, so any split gives the same bytes as a single pass.
"""

from __future__ import annotations

import concurrent.futures as futures
import hashlib
import logging
import multiprocessing
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stylegan_ops import __version__
from stylegan_ops.data import tfrecord
from stylegan_ops.data.montage import save_grid
from stylegan_ops.data.sources import SOURCES, Source, decode_square, open_source
from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import atomic_dir, dump_json, read_json, temp_sibling

log = logging.getLogger(__name__)

SHARD_NAME = "shard"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # PIL names objects by address: not reproducible
MONTAGE_IMAGES = 32  # reals.png shows the first 32 images, 8 per row


def level_file(name: str, level: int) -> str:
    """NVIDIA's file name for the level whose images are 2**level pixels square."""
    return f"{name}-r{level:02d}.tfrecords"


def labels_file(name: str) -> str:
    return f"{name}-rxx.labels"


def is_power_of_two(n: int) -> bool:
    return n >= 4 and n & (n - 1) == 0


def pyramid(image: np.ndarray) -> list[np.ndarray]:
    """The image and its 2×2 box means down to 4×4, top level first (CHW uint8).

    Each level is computed from the previous level's float32 values, not from its rounded
    bytes, and only then written as rint().clip(0, 255).
    """
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[0] in (1, 3)
    levels = [image]
    img = image.astype(np.float32)
    while img.shape[1] > 4:
        img = (img[:, 0::2, 0::2] + img[:, 0::2, 1::2] + img[:, 1::2, 0::2]
               + img[:, 1::2, 1::2]) * np.float32(0.25)
        levels.append(np.rint(img).clip(0, 255).astype(np.uint8))
    return levels


@dataclass(frozen=True)
class PrepareConfig:
    """What to extract and where; ``shard=(i, n)`` extracts only the i-th of n ranges."""

    kind: str  # source kind: "lsun" (LMDB in key order) or "images" (folder in path order)
    source: Path
    out: Path
    resolution: int = 256  # output size in pixels; a power of two >= 4
    max_images: int | None = None  # stop after this many decodable images; None = all
    workers: int = 1  # local processes; the result does not depend on it
    labels: Path | None = None  # .npy float32 [N, label_dim], one row per source record
    shard: tuple[int, int] | None = None  # (index, count): write one shard for `merge`

    def __post_init__(self) -> None:
        if self.kind not in SOURCES:
            raise StageError(f"unknown source kind {self.kind!r}")
        if not is_power_of_two(self.resolution):
            raise StageError(f"resolution must be a power of two >= 4, got {self.resolution}")
        if self.max_images is not None and self.max_images < 1:
            raise StageError(f"max-images must be >= 1, got {self.max_images}")
        if self.workers < 1:
            raise StageError(f"workers must be >= 1, got {self.workers}")
        if self.shard is not None:
            index, count = self.shard
            if count < 1 or not 0 <= index < count:
                raise StageError(f"shard must be i/N with 0 <= i < N, got {index}/{count}")


@dataclass(frozen=True)
class PrepareResult:
    """A finished dataset (or shard) directory and what went into it."""

    out: str
    count: int
    resolution: int
    skipped: int
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    reused: bool = False  # True when an identical earlier run's output was found

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- writing ---------------------------------------------------------------------------

class LevelWriters:
    """One TFRecord writer per level, plus the label rows, in a directory."""

    def __init__(self, directory: Path, name: str, resolution: int, channels: int = 3,
                 append: bool = False) -> None:
        top = resolution.bit_length() - 1
        self.writers = {
            level: tfrecord.LevelWriter(directory / level_file(name, level),
                                        (channels, 2**level, 2**level), append)
            for level in range(top, 1, -1)
        }
        self.labels: list[np.ndarray] = []

    def write_image(self, chw: np.ndarray, label: np.ndarray | None) -> None:
        for writer, level_image in zip(self.writers.values(), pyramid(chw), strict=True):
            writer.write(level_image)
        if label is not None:
            self.labels.append(label)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


@dataclass
class Progress:
    """What an extraction pass did: good images, skipped records, the next position."""

    count: int = 0
    next_position: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)


def extract(source: Source, start: int, stop: int, limit: int | None, resolution: int,
            writers: LevelWriters, labels: np.ndarray | None,
            tick: Callable[[], object] = lambda: None) -> Progress:
    """Decode records in [start, stop) into ``writers`` until ``limit`` good images."""
    done = Progress(next_position=start)
    for record in source.read(start, stop):
        if limit is not None and done.count >= limit:
            break
        done.next_position = record.position + 1
        tick()
        try:
            hwc = decode_square(record.data, resolution)
        except ValueError as exc:
            log.warning("skipping record %d (%s): %s", record.position, record.key, exc)
            done.skipped.append({"position": record.position, "key": record.key,
                                 "reason": _ADDRESS.sub("", str(exc))[:200]})
            continue
        label = labels[record.position] if labels is not None else None
        writers.write_image(np.ascontiguousarray(hwc.transpose(2, 0, 1)), label)
        done.count += 1
    return done


# --- planning and requests -------------------------------------------------------------

def _load_labels(cfg: PrepareConfig, entries: int) -> np.ndarray | None:
    if cfg.labels is None:
        return None
    try:
        labels = np.load(cfg.labels, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StageError(f"cannot read labels file {cfg.labels}: {exc}") from exc
    if labels.ndim != 2 or labels.shape[0] != entries:
        raise StageError(f"labels file {cfg.labels} has shape {labels.shape}; expected "
                         f"[{entries}, label_dim], one row per source image")
    return np.asarray(labels, dtype=np.float32)


def _request(cfg: PrepareConfig, entries: int) -> dict[str, Any]:
    """The inputs that determine the output bytes; shards and reruns must agree on it."""
    return {
        "source": {"kind": cfg.kind, "path": str(cfg.source.resolve()), "entries": entries},
        "resolution": cfg.resolution,
        "max_images": cfg.max_images,
        "labels": str(cfg.labels.resolve()) if cfg.labels else None,
    }


def plan(entries: int, max_images: int | None, shards: int) -> list[tuple[int, int]]:
    """Split the positions needed for ``max_images`` (all when None) into contiguous ranges.

    The span reaches 1/64 past ``max_images`` so that a few damaged records are replaced in
    parallel; merge cuts the surplus, and tops up sequentially only when that was not enough.
    """
    span = entries if max_images is None else min(entries, max_images + max_images // 64 + 1)
    return [(i * span // shards, (i + 1) * span // shards) for i in range(shards)]


def _existing(out: Path, request: dict[str, Any], marker: str) -> PrepareResult | None:
    """An earlier identical run's result, so a retried task is a no-op; else refuse ``out``."""
    if not out.exists():
        return None
    meta_path = out / marker
    if meta_path.is_file():
        meta = read_json(meta_path)
        if meta.get("request") == request:
            log.info("%s already holds this output; reusing it", out)
            return PrepareResult(str(out), meta["count"], request["resolution"],
                                 meta["skipped"]["count"] if marker == "dataset.json"
                                 else len(meta["skipped"]), meta["files"], reused=True)
    raise StageError(f"output directory already exists with other content: {out}")


# --- the stage -------------------------------------------------------------------------

def run(cfg: PrepareConfig) -> PrepareResult:
    """Extract a dataset (or one shard of it) as NVIDIA TFRecords."""
    source = open_source(cfg.kind, cfg.source)
    entries = len(source)
    labels = _load_labels(cfg, entries)
    request = _request(cfg, entries)
    if cfg.shard is not None:
        source.close()
        return _run_shard(cfg, request, labels)
    if (done := _existing(cfg.out, request, "dataset.json")) is not None:
        source.close()
        return done
    if cfg.workers == 1:
        try:
            return _run_sequential(cfg, request, source, labels)
        finally:
            source.close()
    ranges = plan(entries, cfg.max_images, cfg.workers)
    source.close()  # forked workers open their own handle
    scratch = temp_sibling(cfg.out)
    scratch.mkdir(parents=True)
    try:
        shard_dirs = [scratch / f"{SHARD_NAME}-{i}" for i in range(len(ranges))]
        _extract_parallel(cfg, request, ranges, shard_dirs)
        return _assemble(shard_dirs, cfg.out, move=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_sequential(cfg: PrepareConfig, request: dict[str, Any], source: Source,
                    labels: np.ndarray | None) -> PrepareResult:
    from tqdm import tqdm

    total = len(source) if cfg.max_images is None else min(len(source), cfg.max_images)
    with atomic_dir(cfg.out) as tmp, tqdm(total=total, unit="img", desc="extract",
                                          mininterval=1.0) as bar:
        writers = LevelWriters(tmp, cfg.out.name, cfg.resolution)
        done = extract(source, 0, len(source), cfg.max_images, cfg.resolution, writers,
                       labels, bar.update)
        writers.close()
        return _finish(tmp, cfg.out, request, done.count, done.skipped, writers.labels)


def _run_shard(cfg: PrepareConfig, request: dict[str, Any],
               labels: np.ndarray | None) -> PrepareResult:
    assert cfg.shard is not None
    index, count = cfg.shard
    if (done := _existing(cfg.out, request | {"shard": [index, count]}, "shard.json")) is not None:
        return done
    start, stop = plan(int(request["source"]["entries"]), cfg.max_images, count)[index]
    _write_shard(cfg, request, index, count, start, stop, cfg.out, labels)
    meta = read_json(cfg.out / "shard.json")
    return PrepareResult(str(cfg.out), meta["count"], cfg.resolution, len(meta["skipped"]),
                         meta["files"])


def _write_shard(cfg: PrepareConfig, request: dict[str, Any], index: int, count: int,
                 start: int, stop: int, out: Path, labels: np.ndarray | None,
                 tick: Callable[[], None] = lambda: None, digests: bool = True) -> None:
    """Extract one range into a shard directory; ``digests`` records file hashes for merges
    on other hosts (local workers skip them: their files never leave this process tree)."""
    source = open_source(cfg.kind, cfg.source)
    try:
        with atomic_dir(out) as tmp:
            writers = LevelWriters(tmp, SHARD_NAME, cfg.resolution)
            done = extract(source, start, stop, None, cfg.resolution, writers, labels, tick)
            writers.close()
            if labels is not None:
                np.save(tmp / "labels.npy", np.asarray(writers.labels, np.float32)
                        .reshape(-1, labels.shape[1]))
            meta = {"kind": "stylegan-ops-shard", "request": request | {"shard": [index, count]},
                    "start": start, "stop": stop, "next_position": done.next_position,
                    "count": done.count, "skipped": done.skipped,
                    "files": file_digests(sorted(tmp.glob("*.tfrecords"))) if digests else {}}
            (tmp / "shard.json").write_bytes(dump_json(meta))
    finally:
        source.close()


_counter: Any = None  # shared progress counter, set in each forked worker


def _init_worker(counter: Any) -> None:
    global _counter
    _counter = counter


def _tick() -> None:
    with _counter.get_lock():
        _counter.value += 1


def _shard_job(cfg: PrepareConfig, request: dict[str, Any], index: int, count: int,
               start: int, stop: int, out: Path) -> None:
    labels = _load_labels(cfg, int(request["source"]["entries"]))
    _write_shard(cfg, request, index, count, start, stop, out, labels, _tick, digests=False)


def _extract_parallel(cfg: PrepareConfig, request: dict[str, Any],
                      ranges: list[tuple[int, int]], shard_dirs: list[Path]) -> None:
    from tqdm import tqdm

    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", 0)
    total = ranges[-1][1] if ranges else 0
    with tqdm(total=total, unit="img", desc="extract", mininterval=1.0) as bar, \
            futures.ProcessPoolExecutor(len(ranges), mp_context=ctx, initializer=_init_worker,
                                        initargs=(counter,)) as pool:
        jobs = [pool.submit(_shard_job, cfg, request, i, len(ranges), start, stop, out)
                for i, ((start, stop), out) in enumerate(zip(ranges, shard_dirs, strict=True))]
        pending = set(jobs)
        while pending:
            _, pending = futures.wait(pending, timeout=0.5)
            bar.update(counter.value - bar.n)
        for job in jobs:
            job.result()  # re-raise a worker's error here


def merge(shard_dirs: list[Path], out: Path) -> PrepareResult:
    """Concatenate shards in order into one dataset; top up from the source if short."""
    return _assemble(shard_dirs, out, move=False)


def _assemble(shard_dirs: list[Path], out: Path, move: bool) -> PrepareResult:
    """Merge shards; ``move`` lets the first shard's files be renamed instead of copied."""
    metas = [read_json(d / "shard.json") for d in shard_dirs]
    if not metas:
        raise StageError("merge needs at least one shard directory")
    request = {k: v for k, v in metas[0]["request"].items() if k != "shard"}
    total = metas[0]["request"]["shard"][1]
    for path, meta in zip(shard_dirs, metas, strict=True):
        other = {k: v for k, v in meta["request"].items() if k != "shard"}
        if other != request:
            raise StageError(f"shard {path} was made from a different request than "
                             f"{shard_dirs[0]}")
    indices = sorted(m["request"]["shard"][0] for m in metas)
    if indices != list(range(total)):
        raise StageError(f"merge needs shards 0..{total - 1} exactly once, got {indices}")
    order = sorted(range(len(metas)), key=lambda i: metas[i]["request"]["shard"][0])
    if (done := _existing(out, request, "dataset.json")) is not None:
        return done

    resolution, max_images = int(request["resolution"]), request["max_images"]
    src = request["source"]
    if not move:  # shards from elsewhere (other tasks, other hosts): check them first
        for path, meta in zip(shard_dirs, metas, strict=True):
            if file_digests(sorted(path.glob("*.tfrecords"))) != meta["files"]:
                raise StageError(f"shard {path}: files do not match its shard.json")
    with atomic_dir(out) as tmp:
        for level in range(2, resolution.bit_length()):
            dest = tmp / level_file(out.name, level)
            for rank, i in enumerate(order):
                part = shard_dirs[i] / level_file(SHARD_NAME, level)
                if rank == 0 and move:
                    part.rename(dest)
                else:
                    _append_file(part, dest)
        count = sum(m["count"] for m in metas)
        skipped = [rec for i in order for rec in metas[i]["skipped"]]
        labels: list[np.ndarray] = []
        for i in order:
            if (shard_dirs[i] / "labels.npy").is_file():
                labels.extend(np.load(shard_dirs[i] / "labels.npy"))
        next_position = metas[order[-1]]["next_position"]
        if max_images is not None and count > max_images:
            cut = _cut_position([metas[i] for i in order], max_images)
            for level in range(2, resolution.bit_length()):
                shape = (3, 2**level, 2**level)
                os.truncate(tmp / level_file(out.name, level),
                            max_images * tfrecord.record_size(shape))
            skipped = [rec for rec in skipped if rec["position"] < cut]
            labels, count, next_position = labels[:max_images], max_images, cut
        if max_images is not None and count < max_images and next_position < src["entries"]:
            writers = LevelWriters(tmp, out.name, resolution, append=True)
            count += _top_up(request, next_position, max_images - count, writers, skipped)
            writers.close()
            labels.extend(writers.labels)
        return _finish(tmp, out, request, count, skipped, labels)


def _cut_position(metas: list[dict[str, Any]], keep: int) -> int:
    """The position just past the ``keep``-th good image of shards taken in order."""
    seen = 0
    for meta in metas:
        bad = {rec["position"] for rec in meta["skipped"]}
        for position in range(meta["start"], meta["next_position"]):
            if position not in bad:
                seen += 1
                if seen == keep:
                    return position + 1
    raise StageError(f"shards hold fewer than {keep} images")


def _append_file(src: Path, dst: Path) -> None:
    """Append ``src`` to ``dst`` in the kernel where it can (copy_file_range).

    ``dst`` is opened without O_APPEND, which copy_file_range refuses.
    """
    fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with src.open("rb") as fi:
            offset_out = os.lseek(fd_out, 0, os.SEEK_END)
            remaining = os.fstat(fi.fileno()).st_size
            offset_in = 0
            try:
                while remaining:
                    n = os.copy_file_range(fi.fileno(), fd_out, remaining, offset_in,
                                           offset_out)
                    if n == 0:
                        break
                    remaining, offset_in, offset_out = (remaining - n, offset_in + n,
                                                        offset_out + n)
            except OSError:  # filesystems without copy_file_range
                fi.seek(offset_in)
                os.lseek(fd_out, offset_out, os.SEEK_SET)
                while chunk := fi.read(1 << 22):
                    os.write(fd_out, chunk)
    finally:
        os.close(fd_out)


def file_digests(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """sha256 and size of each file, hashed concurrently (hashlib releases the GIL)."""
    def digest(path: Path) -> tuple[str, dict[str, Any]]:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        return path.name, {"sha256": h.hexdigest(), "size": path.stat().st_size}

    with futures.ThreadPoolExecutor(max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        return dict(pool.map(digest, paths))


def _finish(tmp: Path, out: Path, request: dict[str, Any], count: int,
            skipped: list[dict[str, Any]], labels: list[np.ndarray]) -> PrepareResult:
    """Write labels, montage and dataset.json next to the records in ``tmp``."""
    src = request["source"]
    if count == 0:
        raise StageError(f"no decodable images in {src['path']} "
                         f"({len(skipped)} records skipped)")
    resolution = int(request["resolution"])
    paths = sorted(tmp.glob("*.tfrecords"))
    if labels:
        with (tmp / labels_file(out.name)).open("wb") as f:
            np.save(f, np.asarray(labels, np.float32))
        paths.append(tmp / labels_file(out.name))
    top = tmp / level_file(out.name, resolution.bit_length() - 1)
    reals = [chw.transpose(1, 2, 0) for chw in tfrecord.read_images(top, MONTAGE_IMAGES)]
    with futures.ThreadPoolExecutor(1) as pool:  # PNG encoding overlaps the hashing
        montage = pool.submit(save_grid, reals, tmp / "reals.png", 8, min(resolution, 256))
        files = file_digests(paths)
        montage.result()
    meta = {
        "format": "nvidia-tfrecords",
        "tool": f"stylegan-ops {__version__}",
        "name": out.name,
        "request": request,
        "count": count,
        "resolution": resolution,
        "channels": 3,
        "levels": list(range(2, resolution.bit_length())),
        "skipped": {"count": len(skipped), "records": skipped},
        "files": files,
    }
    (tmp / "dataset.json").write_bytes(dump_json(meta))
    log.info("wrote %d images (%d skipped) to %s", count, len(skipped), out)
    return PrepareResult(str(out), count, resolution, len(skipped), files)


def _top_up(request: dict[str, Any], position: int, need: int, writers: LevelWriters,
            skipped: list[dict[str, Any]]) -> int:
    """Extract past the planned ranges until skipped records are replaced."""
    src = request["source"]
    labels = None
    if request["labels"]:
        labels = np.load(request["labels"]).astype(np.float32)
    source = open_source(src["kind"], Path(src["path"]))
    try:
        started = time.monotonic()
        done = extract(source, position, src["entries"], need, int(request["resolution"]),
                       writers, labels)
        log.info("topped up %d images from position %d in %.1fs", done.count, position,
                 time.monotonic() - started)
    finally:
        source.close()
    skipped.extend(done.skipped)
    return done.count
