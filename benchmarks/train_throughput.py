"""Training throughput: the bare compiled steps and the real `stylegan-ops train` command,
side by side, for the `small` preset at batch 32 on the r05 level of a 256 px dataset (what
the demo trains); when a GPU is visible, also config-f at 256 px, batch 32 (NVIDIA's TF1
reference: ~112 sec/kimg on one V100; target here: <= 8 sec/kimg on one H100/H200).

Bare: d_step/d_reg_step/g_step/g_reg_step/ema called as the loop calls them, after warm-up.
Train: the CLI in a subprocess; its rate comes from its own stats.jsonl, the first tick
(compilation) left out. Bare and train alternate ``--repeats`` times and the medians are
compared, because a shared machine's load changes between runs. Target: train >= 90% of bare.

XLA: the bare steps again with ``--xla`` (jit_compile), side by side: without, with, ratio.

Input pipeline: ``image_dataset`` alone (parse, shuffle, batch, prefetch; nothing consumes
the batches) in img/s at 32 px (the small preset's level) and at 256 px (config-f's), against
the step rates it has to feed: the small bare steps measured here, and a GPU-class config-f
rate — the target 8 sec/kimg = 125 img/s, and the measured config-f rate when a GPU is
visible. The margin is pipeline img/s / step img/s: above 1 the pipeline is not the
bottleneck.

Usage: python benchmarks/train_throughput.py [--steps 48] [--kimg 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tensorflow as tf

from stylegan_ops.data import prepare, sample
from stylegan_ops.networks.presets import preset
from stylegan_ops.training.dataset import image_dataset, level_file
from stylegan_ops.training.loop import TrainConfig, Trainer

TARGET = 0.90  # train's rate / the bare steps' rate
TICK_KIMG = 0.5  # the demo's
GPU_CLASS_IMG_S = 125.0  # config-f 256 px at the target 8 sec/kimg on one H100/H200
PIPELINE_BATCH = 32


def bare(data: Path, config: str, batch: int, steps: int, xla: bool = False,
         mixed_precision: bool = False, warmup: int | None = None) -> float:
    """img/s of the compiled steps alone, fed by the same tf.data pipeline as training;
    ``warmup`` untimed steps first (None: one lazy-R1 interval and one step: the first
    compiles every step kind, the rest let the runtime settle)."""
    cfg = TrainConfig(data=data, out=Path(tempfile.mkdtemp()) / "run", config=config,
                      batch=batch, xla=xla, mixed_precision=mixed_precision)
    net = preset(config)
    trainer = Trainer(cfg, net)
    reals = iter(image_dataset(level_file(data, net.resolution), batch, False, 0))

    def step(i: int) -> None:
        r = next(reals)
        trainer.d_step(r)
        if i % cfg.r1_interval == 0:
            trainer.d_reg_step(r)
        trainer.g_step()
        if i % cfg.pl_interval == 0 and trainer.pl_weight > 0:  # as the loop: 0 skips it
            trainer.g_reg_step()
        trainer.ema(tf.constant(cfg.ema_beta(i * batch), tf.float32))

    for i in range(max(cfg.r1_interval, cfg.pl_interval) + 1 if warmup is None else warmup):
        step(i)  # step 0 runs (and compiles) every step kind
    float(trainer.pl_mean.numpy())  # wait for queued work (a GPU runs asynchronously)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    float(trainer.pl_mean.numpy())
    return steps * batch / (time.perf_counter() - start)


def pipeline(data: Path, resolution: int, batches: int, batch: int = PIPELINE_BATCH) -> float:
    """img/s of the training input pipeline alone at ``resolution``, after a warm-up that
    fills its shuffle buffer."""
    it = iter(image_dataset(level_file(data, resolution), batch, False, 0))
    for _ in range(4):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - start)


def train(data: Path, config: str, batch: int, kimg: float) -> tuple[float, float]:
    """(img/s over every tick after the first, wall seconds of the whole command) of
    `stylegan-ops train` run as a user runs it."""
    out = Path(tempfile.mkdtemp()) / "run"
    cmd = [sys.executable, "-m", "stylegan_ops.cli", "train", "--config", config,
           "--batch", str(batch), "--data", str(data), "--out", str(out),
           "--total-kimg", str(kimg), "--tick-kimg", str(TICK_KIMG)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"train failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    if len(rows) < 2:
        sys.exit(f"--kimg {kimg} gives {len(rows)} tick(s): need two or more")
    # a tick's images over its seconds, summed: the rate over all ticks, not a mean of rates
    images = seconds = 0.0
    for prev, row in itertools.pairwise(rows):
        dkimg = row["kimg"] - prev["kimg"]
        images += dkimg * 1000
        seconds += dkimg * row["sec_per_kimg"]
    return images / seconds, wall


def dataset(work: Path, resolution: int, count: int) -> Path:
    out = work / f"cats{resolution}"
    if not out.exists():
        lmdb = work / f"lmdb-{count}"
        if not lmdb.exists():
            sample.run(sample.SampleConfig(lmdb, count=count, workers=os.cpu_count() or 1))
        prepare.run(prepare.PrepareConfig("lsun", lmdb, out, resolution, count,
                                          os.cpu_count() or 1))
    return out


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPU cores ({model}); load average {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=48, help="bare steps timed (default 48)")
    parser.add_argument("--kimg", type=float, default=3.0,
                        help="train's --total-kimg (default 3: 6 ticks of 0.5 kimg)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="bare/train pairs, alternating (default 2)")
    parser.add_argument("--images", type=int, default=300, help="dataset size (default 300)")
    parser.add_argument("--pipeline-batches", type=int, default=64,
                        help="batches timed through the input pipeline alone (default 64)")
    args = parser.parse_args()
    work = Path(os.environ.get("BENCH_DIR", "bench-out"))
    work.mkdir(exist_ok=True)
    data = dataset(work, 256, args.images)
    print(f"machine: {machine()}", file=sys.stderr)
    bares, trains, walls = [], [], []
    for i in range(args.repeats):
        bares.append(bare(data, "small", 32, args.steps))
        rate, wall = train(data, "small", 32, args.kimg)
        trains.append(rate)
        walls.append(wall)
        print(f"pair {i + 1}: bare {bares[-1]:.1f} img/s, train {rate:.1f} img/s "
              f"({rate / bares[-1]:.0%}), train command {wall:.1f} s", file=sys.stderr)
    gpus = tf.config.list_physical_devices("GPU")
    xla = bare(data, "small", 32, args.steps, xla=True)
    pipe32 = pipeline(data, 32, args.pipeline_batches)
    pipe256 = pipeline(data, 256, args.pipeline_batches)
    b, t = statistics.median(bares), statistics.median(trains)
    print()
    print(f"machine: {machine()}")
    print(f"small 32 px (r05 of a 256 px dataset, {args.images} images), batch 32, "
          f"{'GPU' if gpus else 'CPU'}; median of {args.repeats}")
    print(f"  bare steps        {b:8.1f} img/s  {1000 / b:8.1f} sec/kimg")
    print(f"  stylegan-ops train{t:8.1f} img/s  {1000 / t:8.1f} sec/kimg  (ticks after the "
          f"first, {TICK_KIMG} kimg each)")
    print(f"  train / bare      {t / b:8.0%}        target >= {TARGET:.0%}: "
          f"{'met' if t / b >= TARGET else 'NOT met'}")
    print(f"  bare steps --xla  {xla:8.1f} img/s  {1000 / xla:8.1f} sec/kimg  (one run; "
          f"without {b:.1f}, with {xla:.1f}: ratio with/without {xla / b:.2f})")
    rates = [("small bare steps, measured", 32, b),
             ("config-f target 8 sec/kimg (GPU class)", 256, GPU_CLASS_IMG_S)]
    if gpus:
        img_s = bare(data, "config-f", 32, args.steps)
        img_x = bare(data, "config-f", 32, args.steps, xla=True)
        print(f"config-f 256 px, batch 32, fp32, {gpus[0].name}: bare steps {img_s:.1f} img/s "
              f"{1000 / img_s:.1f} sec/kimg; --xla {img_x:.1f} img/s {1000 / img_x:.1f} "
              f"sec/kimg (ratio {img_x / img_s:.2f}; NVIDIA TF1 ~112 sec/kimg on a V100; "
              "target <= 8 on an H100/H200)")
        rates.append((f"config-f measured on {gpus[0].name}", 256, max(img_s, img_x)))
    else:
        print("config-f 256 px: no GPU visible here (NVIDIA TF1 reference ~112 sec/kimg on a "
              "V100; target <= 8 sec/kimg on an H100/H200)")
    pipes = {32: pipe32, 256: pipe256}
    print(f"input pipeline alone (image_dataset, batch {PIPELINE_BATCH}, "
          f"{args.pipeline_batches} batches, {os.cpu_count()} CPU cores): 32 px "
          f"{pipe32:.0f} img/s, 256 px {pipe256:.0f} img/s")
    for what, res, rate in rates:
        margin = pipes[res] / rate
        print(f"  vs {what:42} {rate:8.1f} img/s: margin {margin:6.1f}x "
              f"({'not the bottleneck' if margin >= 1 else 'THE BOTTLENECK'})")


if __name__ == "__main__":
    main()
