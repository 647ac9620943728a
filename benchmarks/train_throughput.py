"""Training throughput: img/s and sec/kimg for the `small` preset on the CPU and, when a
GPU is visible, config-f at 256 px, batch 32 (NVIDIA's TF1 reference: ~112 sec/kimg on one
V100; target here: <= 15 sec/kimg on one H100). Compilation is excluded (warm-up steps).

Usage: python benchmarks/train_throughput.py [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import tensorflow as tf

from stylegan_ops.data import prepare, sample
from stylegan_ops.networks.presets import preset
from stylegan_ops.training.dataset import image_dataset, top_level
from stylegan_ops.training.loop import TrainConfig, Trainer


def measure(data: Path, config: str, batch: int, steps: int) -> tuple[float, float]:
    cfg = TrainConfig(data=data, out=Path(tempfile.mkdtemp()), config=config, batch=batch)
    trainer = Trainer(cfg, preset(config))
    path, _ = top_level(data)
    reals = iter(image_dataset(path, batch, False, 0))

    def step(i: int) -> None:
        r = next(reals)
        trainer.d_step(r)
        if i % cfg.r1_interval == 0:
            trainer.d_reg_step(r)
        trainer.g_step()
        if i % cfg.pl_interval == 0:
            trainer.g_reg_step()
        trainer.ema()

    for i in range(max(cfg.r1_interval, cfg.pl_interval) + 1):  # compile every step kind
        step(i)
    float(trainer.pl_mean.numpy())  # wait for queued work
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    float(trainer.pl_mean.numpy())
    seconds = time.perf_counter() - start
    img_s = steps * batch / seconds
    return img_s, 1000 / img_s


def dataset(work: Path, resolution: int, count: int) -> Path:
    out = work / f"cats{resolution}"
    if not out.exists():
        lmdb = work / f"lmdb-{count}"
        if not lmdb.exists():
            sample.run(sample.SampleConfig(lmdb, count=count, workers=os.cpu_count() or 1))
        prepare.run(prepare.PrepareConfig("lsun", lmdb, out, resolution, count,
                                          os.cpu_count() or 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    work = Path(os.environ.get("BENCH_DIR", "bench-out"))
    work.mkdir(exist_ok=True)
    gpus = tf.config.list_physical_devices("GPU")
    rows = []
    img_s, sec = measure(dataset(work, 32, 300), "small", 32, args.steps)
    rows.append(("small 32 px, batch 32, " + ("GPU" if gpus else f"{os.cpu_count()} CPU cores"),
                 img_s, sec))
    if gpus:
        img_s, sec = measure(dataset(work, 256, 300), "config-f", 32, args.steps)
        rows.append((f"config-f 256 px, batch 32, fp32, {gpus[0].name}", img_s, sec))
    print()
    for name, img_s, sec in rows:
        print(f"{name:48s} {img_s:8.1f} img/s  {sec:8.1f} sec/kimg")
    if not gpus:
        print("config-f 256 px: no GPU visible here (NVIDIA TF1 reference ~112 sec/kimg on a "
              "V100; target <= 15 sec/kimg on an H100)")


if __name__ == "__main__":
    main()
