"""The dataset directory: NVIDIA's file names, ``dataset.json``, and checking an earlier
output before it is reused."""

from __future__ import annotations

import concurrent.futures as futures
import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stylegan_ops import __version__
from stylegan_ops.data import tfrecord
from stylegan_ops.data.montage import save_grid
from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import dump_json

log = logging.getLogger(__name__)

MONTAGE_IMAGES = 32  # reals.png shows the first 32 images, 8 per row
MAX_RESOLUTION = 8192  # NVIDIA's networks stop at 1024; beyond 8192 a value is a typo
MAX_META_BYTES = 64 << 20  # a dataset.json/shard.json bigger than this was not written by us


def level_file(name: str, level: int) -> str:
    """NVIDIA's file name for the level whose images are 2**level pixels square."""
    return f"{name}-r{level:02d}.tfrecords"


def labels_file(name: str) -> str:
    return f"{name}-rxx.labels"


def is_power_of_two(n: int) -> bool:
    return n >= 4 and n & (n - 1) == 0


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


def make_parent(out: Path) -> None:
    """Create ``out``'s parent, or refuse naming the path (a file in the way, no permission)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StageError(f"cannot create the parent directory of {out}: "
                         f"{exc.strerror or exc}") from exc


def load_meta(path: Path) -> Any:
    """A JSON record another run wrote: size-capped, any damage a StageError naming it."""
    try:
        if path.is_symlink() or not path.is_file():
            raise StageError(f"{path} is not a regular file")
        if path.stat().st_size > MAX_META_BYTES:
            raise StageError(f"{path} is over {MAX_META_BYTES} bytes; not written by this tool")
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise StageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        raise StageError(f"{path} is not valid JSON: {exc}") from exc


def check_files(directory: Path, files: Any, what: Path) -> dict[str, dict[str, Any]]:
    """``files`` as recorded in ``what`` (name -> sha256, size), checked against the
    directory by type and size (cheap: one stat each); refuses any name with a path in it."""
    if not isinstance(files, dict):
        raise StageError(f"{what}: 'files' is not an object")
    for name, entry in files.items():
        if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
            raise StageError(f"{what}: file name {name!r} is not a plain file name")
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and is_count(entry.get("size"))):
            raise StageError(f"{what}: entry for {name} needs sha256 and size")
        path = directory / name
        if path.is_symlink() or not path.is_file():
            raise StageError(f"{path} is missing or not a regular file")
        if path.stat().st_size != entry["size"]:
            raise StageError(f"{path} is {path.stat().st_size} bytes, {what} says "
                             f"{entry['size']}")
    return files


def is_count(value: Any) -> bool:
    """A JSON integer >= 0 (not a bool, not a float)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_labels(path: Path, rows: int) -> np.ndarray:
    """A labels .npy (float32 [rows, label_dim]); the header's shape is checked against the
    file's size before anything is allocated."""
    fmt = np.lib.format
    try:
        with path.open("rb") as f:
            version = fmt.read_magic(f)
            read_header = (fmt.read_array_header_1_0 if version == (1, 0)
                           else fmt.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            left = os.fstat(f.fileno()).st_size - f.tell()
            if dtype.hasobject or dtype.kind not in "fiub":
                raise StageError(f"labels file {path} is not a numeric .npy array")
            if math.prod(shape) * dtype.itemsize != left:
                raise StageError(f"labels file {path}: its header says {shape} {dtype}, but "
                                 f"{left} bytes follow it")
            f.seek(0)
            labels = np.load(f, allow_pickle=False)
    except OSError as exc:
        raise StageError(f"cannot read labels file {path}: {exc.strerror or exc}") from exc
    except (ValueError, EOFError, SyntaxError) as exc:  # not a .npy, damaged header
        raise StageError(f"cannot read labels file {path}: {exc}") from exc
    if labels.ndim != 2 or labels.shape[0] != rows:
        raise StageError(f"labels file {path} has shape {labels.shape}; expected "
                         f"[{rows}, label_dim], one row per source image")
    return np.asarray(labels, dtype=np.float32)


def recorded_request(request: dict[str, Any]) -> dict[str, Any]:
    """The request as dataset.json keeps it: the source and labels by file name, not by
    path, so the same extraction from another run's directory makes the same bytes (and
    so one version in the store)."""
    src = dict(request["source"])
    src["path"] = Path(src["path"]).name
    labels = request.get("labels")
    return {**request, "source": src, "labels": Path(labels).name if labels else None}


def existing_dataset(out: Path, request: dict[str, Any]) -> PrepareResult | None:
    """An earlier identical run's dataset in ``out``, checked file by file, so a retried task
    is a no-op; None when ``out`` does not exist; refuses anything else in its place."""
    if not (out.exists() or out.is_symlink()):
        return None
    meta_path = out / "dataset.json"
    if out.is_dir() and meta_path.is_file():
        meta = load_meta(meta_path)
        if isinstance(meta, dict) and meta.get("request") == recorded_request(request):
            skipped = meta.get("skipped")
            if not (is_count(meta.get("count")) and isinstance(skipped, dict)
                    and is_count(skipped.get("count"))):
                raise StageError(f"{meta_path} is damaged; remove {out} to extract again")
            files = check_files(out, meta.get("files"), meta_path)
            log.info("%s already holds this output; reusing it", out)
            return PrepareResult(str(out), meta["count"], request["resolution"],
                                 skipped["count"], files, reused=True)
    raise StageError(f"output directory already exists with other content: {out}")


def file_digests(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """sha256 and size of each file, hashed concurrently (hashlib releases the GIL)."""
    def digest(path: Path) -> tuple[str, dict[str, Any]]:
        h = hashlib.sha256()
        try:
            with path.open("rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
                size = os.fstat(f.fileno()).st_size
        except OSError as exc:
            raise StageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        return path.name, {"sha256": h.hexdigest(), "size": size}

    with futures.ThreadPoolExecutor(max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        return dict(pool.map(digest, paths))


def finish(tmp: Path, out: Path, request: dict[str, Any], count: int,
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
        "request": recorded_request(request),
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
