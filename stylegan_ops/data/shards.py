"""Shards: one position range of a request, extracted on its own (a local worker, an Airflow
task, another host), and the merge that concatenates them in order.

A shard directory holds ``shard-rNN.tfrecords`` per level, ``labels.npy`` when the request
has labels, and ``shard.json``. Merge treats every shard.json as hostile: its types, its
range (recomputed from the request), its counts (against the files' sizes) and its file
names are checked before anything is concatenated, truncated or read.
"""

from __future__ import annotations

import concurrent.futures as futures
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stylegan_ops.data import tfrecord
from stylegan_ops.data.extract import LevelWriters, extract
from stylegan_ops.data.layout import (
    MAX_RESOLUTION,
    PrepareResult,
    check_files,
    existing_dataset,
    file_digests,
    finish,
    is_count,
    is_power_of_two,
    level_file,
    load_meta,
    make_parent,
    read_labels,
)
from stylegan_ops.data.sources import SOURCES, open_source
from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import atomic_dir, dump_json

if TYPE_CHECKING:
    from stylegan_ops.data.prepare import PrepareConfig

log = logging.getLogger(__name__)

SHARD_NAME = "shard"
SHARD_KIND = "stylegan-ops-shard"


def shard_range(entries: int, max_images: int | None, index: int, count: int) -> tuple[int,
                                                                                    int]:
    """Shard ``index`` of ``count`` over the positions needed for ``max_images``.

    The span reaches 1/64 past ``max_images`` so that a few damaged records are replaced in
    parallel; merge cuts the surplus, and tops up sequentially only when that was not enough.
    """
    span = entries if max_images is None else min(entries, max_images + max_images // 64 + 1)
    return index * span // count, (index + 1) * span // count


def plan(entries: int, max_images: int | None, shards: int) -> list[tuple[int, int]]:
    """Every shard's range, in order (for local workers: ``shards`` is small)."""
    return [shard_range(entries, max_images, i, shards) for i in range(shards)]


# --- shard.json --------------------------------------------------------------------------

def check_request(request: Any, what: Path) -> dict[str, Any]:
    """The request recorded in a shard.json, with every type and range checked."""
    def bad(field: str) -> StageError:
        return StageError(f"{what}: malformed request: {field}")

    if not isinstance(request, dict):
        raise bad("not an object")
    src = request.get("source")
    if not (isinstance(src, dict) and src.get("kind") in SOURCES
            and isinstance(src.get("path"), str) and Path(src["path"]).is_absolute()
            and is_count(src.get("entries"))):
        raise bad("source needs kind (lsun|images), an absolute path and entries >= 0")
    res: Any = request.get("resolution")
    if not (is_count(res) and is_power_of_two(res) and res <= MAX_RESOLUTION):
        raise bad(f"resolution {res!r} is not a power of two in 4..{MAX_RESOLUTION}")
    max_images = request.get("max_images")
    if max_images is not None and not (is_count(max_images) and max_images >= 1):
        raise bad(f"max_images {max_images!r} is not null or an integer >= 1")
    labels = request.get("labels")
    if labels is not None and not (isinstance(labels, str) and Path(labels).is_absolute()):
        raise bad(f"labels {labels!r} is not null or an absolute path")
    shard = request.get("shard")
    if not (isinstance(shard, list) and len(shard) == 2 and all(map(is_count, shard))
            and shard[0] < shard[1]):
        raise bad(f"shard {shard!r} is not [i, N] with 0 <= i < N")
    return request


def load_shard(path: Path, need_digests: bool) -> dict[str, Any]:
    """A shard directory's shard.json, checked against itself, its request and its files."""
    if not path.is_dir():
        raise StageError(f"not a shard directory: {path}")
    what = path / "shard.json"
    meta = load_meta(what)

    def bad(field: str) -> StageError:
        return StageError(f"{what}: malformed shard record: {field}")

    if not isinstance(meta, dict) or meta.get("kind") != SHARD_KIND:
        raise bad(f"kind is not {SHARD_KIND!r}")
    request = check_request(meta.get("request"), what)
    for key in ("start", "stop", "next_position", "count"):
        if not is_count(meta.get(key)):
            raise bad(f"{key} is not an integer >= 0")
    index, total = request["shard"]
    want = shard_range(request["source"]["entries"], request["max_images"], index, total)
    start, stop, next_position = meta["start"], meta["stop"], meta["next_position"]
    if (start, stop) != want:
        raise bad(f"range [{start}, {stop}) is not shard {index}/{total} of its request "
                  f"({list(want)})")
    if not start <= next_position <= stop:
        raise bad(f"next_position {next_position} is outside [{start}, {stop}]")
    skipped = meta.get("skipped")
    if not isinstance(skipped, list):
        raise bad("skipped is not a list")
    last = start - 1
    for rec in skipped:
        if not (isinstance(rec, dict) and is_count(rec.get("position"))
                and isinstance(rec.get("key"), str) and isinstance(rec.get("reason"), str)
                and last < rec["position"] < next_position):
            raise bad("skipped records need increasing positions inside the range, a key "
                      "and a reason")
        last = rec["position"]
    count = meta["count"]
    if count + len(skipped) != next_position - start:
        raise bad(f"count {count} + {len(skipped)} skipped != {next_position - start} "
                  f"positions read")
    resolution = request["resolution"]
    names = {level_file(SHARD_NAME, lvl) for lvl in range(2, resolution.bit_length())}
    for lvl in range(2, resolution.bit_length()):
        part = path / level_file(SHARD_NAME, lvl)
        if part.is_symlink() or not part.is_file():
            raise StageError(f"{part} is missing or not a regular file")
        size, want_size = part.stat().st_size, count * tfrecord.record_size((3, 2**lvl, 2**lvl))
        if size != want_size:
            raise StageError(f"{part} is {size} bytes; {count} images at this level take "
                             f"{want_size}")
    files = meta.get("files")
    if files or need_digests:
        if not isinstance(files, dict) or set(files) != names:
            raise bad(f"files must list exactly {', '.join(sorted(names))}")
        check_files(path, files, what)
    if request["labels"] is not None:
        read_labels(path / "labels.npy", count)
    return meta


def write_shard(cfg: PrepareConfig, request: dict[str, Any], index: int, count: int,
                start: int, stop: int, out: Path, labels: np.ndarray | None,
                tick: Callable[[], None] = lambda: None, digests: bool = True) -> None:
    """Extract one range into a shard directory; ``digests`` records file hashes for merges
    on other hosts (local workers skip them: their files never leave this process tree)."""
    source = open_source(cfg.kind, cfg.source)
    try:
        make_parent(out)
        with atomic_dir(out) as tmp:
            writers = LevelWriters(tmp, SHARD_NAME, cfg.resolution)
            done = extract(source, start, stop, None, cfg.resolution, writers, labels, tick)
            writers.close()
            if labels is not None:
                np.save(tmp / "labels.npy", np.asarray(writers.labels, np.float32)
                        .reshape(-1, labels.shape[1]))
            meta = {"kind": SHARD_KIND, "request": request | {"shard": [index, count]},
                    "start": start, "stop": stop, "next_position": done.next_position,
                    "count": done.count, "skipped": done.skipped,
                    "files": file_digests(sorted(tmp.glob("*.tfrecords"))) if digests else {}}
            (tmp / "shard.json").write_bytes(dump_json(meta))
    finally:
        source.close()


def existing_shard(out: Path, request: dict[str, Any]) -> PrepareResult | None:
    """An earlier identical shard in ``out`` (checked), None if absent; refuses other content."""
    if not (out.exists() or out.is_symlink()):
        return None
    if out.is_dir() and (out / "shard.json").is_file():
        meta = load_meta(out / "shard.json")
        if isinstance(meta, dict) and meta.get("request") == request:
            meta = load_shard(out, need_digests=True)
            log.info("%s already holds this output; reusing it", out)
            return PrepareResult(str(out), meta["count"], request["resolution"],
                                 len(meta["skipped"]), meta["files"], reused=True)
    raise StageError(f"output directory already exists with other content: {out}")


# --- local workers -----------------------------------------------------------------------

_counter: Any = None  # shared progress counter, set in each forked worker


def _init_worker(counter: Any) -> None:
    global _counter
    _counter = counter


def _tick() -> None:
    with _counter.get_lock():
        _counter.value += 1


def _shard_job(cfg: PrepareConfig, request: dict[str, Any], index: int, count: int,
               start: int, stop: int, out: Path) -> None:
    labels = (read_labels(cfg.labels, int(request["source"]["entries"]))
              if cfg.labels is not None else None)
    write_shard(cfg, request, index, count, start, stop, out, labels, _tick, digests=False)


def extract_parallel(cfg: PrepareConfig, request: dict[str, Any],
                     ranges: list[tuple[int, int]], shard_dirs: list[Path]) -> None:
    """Extract ``ranges`` into ``shard_dirs`` with one forked process each."""
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
        try:
            for job in jobs:
                job.result()  # re-raise a worker's error here
        except BrokenProcessPool as exc:  # killed by the OOM killer or a signal
            raise StageError(f"an extraction worker for {cfg.source} died: {exc}") from exc


# --- merge -------------------------------------------------------------------------------

def assemble(shard_dirs: list[Path], out: Path, move: bool) -> PrepareResult:
    """Merge shards; ``move`` lets the first shard's files be renamed instead of copied
    (local workers' scratch shards, whose digests were never computed)."""
    if not shard_dirs:
        raise StageError("merge needs at least one shard directory")
    metas = [load_shard(d, need_digests=not move) for d in shard_dirs]
    request = {k: v for k, v in metas[0]["request"].items() if k != "shard"}
    total = metas[0]["request"]["shard"][1]
    for path, meta in zip(shard_dirs, metas, strict=True):
        other = {k: v for k, v in meta["request"].items() if k != "shard"}
        if other != request:
            raise StageError(f"shard {path} was made from a different request than "
                             f"{shard_dirs[0]}")
    indices = sorted(m["request"]["shard"][0] for m in metas)
    if len(metas) != total or indices != list(range(total)):
        raise StageError(f"merge needs shards 0..{total - 1} exactly once, got "
                         f"{indices[:20]}{'…' if len(indices) > 20 else ''}")
    order = sorted(range(len(metas)), key=lambda i: metas[i]["request"]["shard"][0])
    if (done := existing_dataset(out, request)) is not None:
        return done

    resolution, max_images = int(request["resolution"]), request["max_images"]
    src = request["source"]
    if not move:  # shards from elsewhere (other tasks, other hosts): check their bytes
        for path, meta in zip(shard_dirs, metas, strict=True):
            if file_digests(sorted(path.glob("*.tfrecords"))) != meta["files"]:
                raise StageError(f"shard {path}: files do not match its shard.json")
    make_parent(out)
    with atomic_dir(out) as tmp:
        for level in range(2, resolution.bit_length()):
            dest = tmp / level_file(out.name, level)
            for rank, i in enumerate(order):
                part = shard_dirs[i] / level_file(SHARD_NAME, level)
                if rank == 0 and move:
                    part.rename(dest)
                else:
                    append_file(part, dest)
        count = sum(m["count"] for m in metas)
        skipped = [rec for i in order for rec in metas[i]["skipped"]]
        labels: list[np.ndarray] = []
        if request["labels"] is not None:
            for i in order:
                labels.extend(read_labels(shard_dirs[i] / "labels.npy", metas[i]["count"]))
        next_position = metas[order[-1]]["next_position"]
        if max_images is not None and count > max_images:
            cut = cut_position([metas[i] for i in order], max_images)
            for level in range(2, resolution.bit_length()):
                shape = (3, 2**level, 2**level)
                # Sizes were checked against counts, so this only ever shortens the file.
                os.truncate(tmp / level_file(out.name, level),
                            max_images * tfrecord.record_size(shape))
            skipped = [rec for rec in skipped if rec["position"] < cut]
            labels, count, next_position = labels[:max_images], max_images, cut
        if max_images is not None and count < max_images and next_position < src["entries"]:
            writers = LevelWriters(tmp, out.name, resolution, append=True)
            count += top_up(request, next_position, max_images - count, writers, skipped)
            writers.close()
            labels.extend(writers.labels)
        return finish(tmp, out, request, count, skipped, labels)


def cut_position(metas: list[dict[str, Any]], keep: int) -> int:
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


def append_file(src: Path, dst: Path) -> None:
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


def top_up(request: dict[str, Any], position: int, need: int, writers: LevelWriters,
           skipped: list[dict[str, Any]]) -> int:
    """Extract past the planned ranges until skipped records are replaced."""
    src = request["source"]
    source = open_source(src["kind"], Path(src["path"]))
    try:
        if len(source) != src["entries"]:
            raise StageError(f"{src['path']} now holds {len(source)} records; the shards were "
                             f"made when it held {src['entries']}")
        labels = (read_labels(Path(request["labels"]), src["entries"])
                  if request["labels"] else None)
        started = time.monotonic()
        done = extract(source, position, src["entries"], need, int(request["resolution"]),
                       writers, labels)
        log.info("topped up %d images from position %d in %.1fs", done.count, position,
                 time.monotonic() - started)
    finally:
        source.close()
    skipped.extend(done.skipped)
    return done.count
