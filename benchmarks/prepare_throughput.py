"""Extraction throughput on a generated LSUN-like LMDB, side by side with its baselines.

(a) the unavoidable work alone: decode + center crop + Lanczos resize, nothing written
(b) a plain single-process reference: (a) + per-level box means + tf.io.TFRecordWriter
(c) `prepare` with 1 worker      (d) `prepare` with every core

Usage: python benchmarks/prepare_throughput.py [--images 2000] [--resolution 256]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import numpy as np
from PIL import Image

from stylegan_ops.data import sample

WORK = Path(os.environ.get("BENCH_DIR", "bench-out"))


def decode_crop_resize(value: bytes, res: int) -> np.ndarray | None:
    try:
        img = Image.open(io.BytesIO(value)).convert("RGB")
    except Exception:  # noqa: BLE001 - damaged records are skipped, as in every variant
        return None
    w, h = img.size
    c = min(w, h)
    img = img.crop(((w - c) // 2, (h - c) // 2, (w + c) // 2, (h + c) // 2))
    return np.asarray(img.resize((res, res), Image.LANCZOS))


def bench_a(lmdb_dir: Path, n: int, res: int) -> float:
    env = lmdb.open(str(lmdb_dir), readonly=True, lock=False)
    start = time.perf_counter()
    good = 0
    with env.begin() as txn:
        for _, value in txn.cursor():
            if decode_crop_resize(value, res) is not None:
                good += 1
                if good == n:
                    break
    env.close()
    return good / (time.perf_counter() - start)


def bench_b(lmdb_dir: Path, n: int, res: int, out: Path) -> float:
    import tensorflow as tf

    out.mkdir(parents=True, exist_ok=True)
    top = res.bit_length() - 1
    env = lmdb.open(str(lmdb_dir), readonly=True, lock=False)
    start = time.perf_counter()
    writers = {lvl: tf.io.TFRecordWriter(str(out / f"ref-r{lvl:02d}.tfrecords"))
               for lvl in range(2, top + 1)}
    good = 0
    with env.begin() as txn:
        for _, value in txn.cursor():
            hwc = decode_crop_resize(value, res)
            if hwc is None:
                continue
            img = hwc.transpose(2, 0, 1)
            f = img.astype(np.float32)
            for lvl in range(top, 1, -1):
                ex = tf.train.Example(features=tf.train.Features(feature={
                    "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=img.shape)),
                    "data": tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[img.tobytes()]))}))
                writers[lvl].write(ex.SerializeToString())
                if lvl > 2:
                    f = (f[:, 0::2, 0::2] + f[:, 0::2, 1::2] + f[:, 1::2, 0::2]
                         + f[:, 1::2, 1::2]) * 0.25
                    img = np.rint(f).clip(0, 255).astype(np.uint8)
            good += 1
            if good == n:
                break
    for w in writers.values():
        w.close()
    env.close()
    return good / (time.perf_counter() - start)


def bench_ours(lmdb_dir: Path, n: int, res: int, out: Path, workers: int) -> float:
    """The real command, as a user or an Airflow task runs it (startup included)."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "stylegan_ops.cli", "prepare", "lsun",
                           str(lmdb_dir), "--out", str(out), "--resolution", str(res),
                           "--max-images", str(n), "--workers", str(workers)],
                          capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    return int(json.loads(proc.stdout.splitlines()[-1])["count"]) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=256)
    args = parser.parse_args()
    n, res, cores = args.images, args.resolution, os.cpu_count() or 1
    lmdb_dir = WORK / f"lmdb-{n}"
    if not lmdb_dir.exists():
        print(f"generating {n} LSUN-like WebP images ...", flush=True)
        sample.run(sample.SampleConfig(lmdb_dir, count=n, seed=1, workers=cores))
    rates = {
        "a": bench_a(lmdb_dir, n, res),
        "c": bench_ours(lmdb_dir, n, res, WORK / "ours-1", 1),
        "d": bench_ours(lmdb_dir, n, res, WORK / f"ours-{cores}", cores),
        # Last: once TensorFlow is loaded here, its idle threads slow the other runs.
        "b": bench_b(lmdb_dir, n, res, WORK / "ref"),
    }
    same = all((WORK / "ours-1" / f"ours-1-r{lvl:02d}.tfrecords").read_bytes()
               == (WORK / f"ours-{cores}" / f"ours-{cores}-r{lvl:02d}.tfrecords").read_bytes()
               for lvl in range(2, res.bit_length()))
    print(f"\n{n} images at {res} px, {cores} cores")
    print(f"(a) decode+crop+resize only      {rates['a']:8.1f} img/s")
    print(f"(b) plain reference (tf writer)  {rates['b']:8.1f} img/s")
    print(f"(c) prepare --workers 1          {rates['c']:8.1f} img/s")
    print(f"(d) prepare --workers {cores:<2d}         {rates['d']:8.1f} img/s")
    print(f"c/b = {rates['c'] / rates['b']:.2f}  (target >= 1.00)")
    print(f"c/a = {rates['c'] / rates['a']:.2f}  (target >= 0.85)")
    print(f"d/c = {rates['d'] / rates['c']:.2f}  (target >= 1.80)")
    print(f"1 vs {cores} workers byte-identical: {same}")


if __name__ == "__main__":
    main()
