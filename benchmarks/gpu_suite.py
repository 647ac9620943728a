"""The GPU suite's driver (run it through benchmarks/gpu_suite.sh): config-f 256 px training
sec/kimg at batch 32 for fp32 and mixed precision, each without and with --xla, with peak GPU
memory; config-f generation img/s and Inception img/s, without and with --xla; and the
projected ``fid50k`` wall time with cached real statistics. Nothing is fetched: the dataset
is generated here (``stylegan_ops.data.sample`` + ``prepare``), the networks have random
weights (speed does not depend on them), and Inception is the real graph only when
``stylegan-ops fetch-weights inception`` already put it in the weight cache, else the Keras
architecture stand-in, labelled so.

Writes OUT_DIR/gpu_suite.json and OUT_DIR/gpu_suite.md after every measurement, so a crash
leaves what was measured. A measurement that fails is recorded with its error and the others
still run; the exit status is then 1.

Time budget on one H100/H200 (the suite must stay under 8 minutes; BUDGET_S stops it
earlier, recording what it had no time for). Estimates per part, compilation included:
dataset of 64 images at 256 px ~10 s; generation + Inception (1024 images each, batch 32)
~30 s plain and ~60 s with XLA; training (bare steps as train_throughput.bare: 17 warm-up
steps, the first compiling every step kind, then 32 timed steps = 1024 images, ~8 s at the 8
sec/kimg target) ~60 s per precision plain and ~120 s with XLA, which compiles the
double-backprop R1 and path-length steps. XLA's parts run last: they are the likeliest to
run out of time. ``--smoke`` runs the same parts at tiny sizes (the ``small`` preset at
32 px, batch 8, one warm-up and 2 timed steps, 8 images per rate; no targets, as the
sizes are not the real ones) so that CPUs finish in well under 2 minutes.

Usage: python benchmarks/gpu_suite.py [--smoke] OUT_DIR
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import metrics_throughput
import tensorflow as tf
import train_throughput

FULL = {"config": "config-f", "resolution": 256, "batch": 32, "steps": 32, "warmup": None,
        "dataset": 64, "rate_images": 1024, "rate_batch": 32, "budget_s": 450.0}
SMOKE = {"config": "small", "resolution": 32, "batch": 8, "steps": 2, "warmup": 1,
         "dataset": 16, "rate_images": 8, "rate_batch": 4, "budget_s": 300.0}
TRAIN_TARGET_S_KIMG = 8.0  # config-f 256 px on one H100/H200 (NVIDIA's TF1: ~112 on a V100)
FID_TARGET_S = 90.0
NO_GPU = "no GPU: TensorFlow's peak memory counter is for GPUs"


class Suite:
    """The measurements so far, written out after each one."""

    def __init__(self, out: Path, sizes: dict[str, Any], smoke: bool) -> None:
        self.out, self.sizes, self.smoke = out, sizes, smoke
        self.started = time.monotonic()
        self.gpus = tf.config.list_physical_devices("GPU")
        self.device = device_name(self.gpus)
        self.rows: list[dict[str, Any]] = []

    def left_s(self) -> float:
        return float(self.sizes["budget_s"]) - (time.monotonic() - self.started)

    def add(self, name: str, what: str, value: float | None, unit: str, *,
            target: float | None = None, lower: bool = True, reason: str | None = None,
            error: str | None = None, seconds: float | None = None) -> None:
        met = None
        if target is not None and value is not None:
            met = value <= target if lower else value >= target
        self.rows.append({"name": name, "what": what, "value": value, "unit": unit,
                          "target": target, "target_is": "max" if lower else "min",
                          "met": met, "reason": reason, "error": error, "seconds": seconds})
        self.write()

    def part(self, names: list[tuple[str, str, str]], fn: Callable[[], dict[str, Any]]
             ) -> dict[str, Any] | None:
        """Run one measurement; on failure, or with no time left, record its rows
        (name, what, unit) as failed and go on."""
        if self.left_s() <= 0:
            for name, what, unit in names:
                self.add(name, what, None, unit, error=f"skipped: the suite's "
                         f"{self.sizes['budget_s']:.0f} s budget was spent")
            return None
        start = time.monotonic()
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - one failed measurement must not stop the rest
            print(traceback.format_exc(), file=sys.stderr)
            for name, what, unit in names:
                self.add(name, what, None, unit, error=f"{type(exc).__name__}: {exc}"[:500],
                         seconds=round(time.monotonic() - start, 1))
            return None
        finally:
            gc.collect()

    def write(self) -> None:
        doc = {"device": self.device, "tensorflow": tf.__version__, "smoke": self.smoke,
               "sizes": self.sizes, "wall_s": round(time.monotonic() - self.started, 1),
               "measurements": self.rows,
               "failed": [r["name"] for r in self.rows if r["error"]]}
        atomic_write(self.out / "gpu_suite.json", json.dumps(doc, indent=2, allow_nan=False))
        atomic_write(self.out / "gpu_suite.md", markdown(doc))


def device_name(gpus: list[Any]) -> str:
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)} ({len(gpus)} visible)"
    return f"CPU: {train_throughput.machine()} (no GPU)"


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def markdown(doc: dict[str, Any]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, bool):
            return "yes" if v else "NO"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = [f"# GPU suite{' (smoke: tiny sizes, not the real figures)' if doc['smoke'] else ''}",
             "", f"- device: {doc['device']}", f"- TensorFlow: {doc['tensorflow']}",
             f"- wall time: {doc['wall_s']} s", "",
             "| measurement | value | unit | target | met? |", "|---|---|---|---|---|"]
    for r in doc["measurements"]:
        value = cell(r["value"])
        if r["value"] is None:
            value = f"— ({r['error'] or r['reason']})"
        target = "—" if r["target"] is None else (
            f"{'≤' if r['target_is'] == 'max' else '≥'} {cell(r['target'])}")
        lines.append(f"| {r['what']} | {value} | {r['unit']} | {target} | {cell(r['met'])} |")
    return "\n".join(lines) + "\n"


def rates(suite: Suite, xla: bool) -> None:
    """Generation, Inception and generation + Inception img/s; fid50k projected."""
    s, tag = suite.sizes, " --xla" if xla else ""
    dev = "/GPU:0" if suite.gpus else "/CPU:0"
    gen = f"{s['config']} {s['resolution']} px generation{tag}"
    names = [(f"generate{tag}", gen, "img/s"), (f"inception{tag}", f"Inception{tag}", "img/s"),
             (f"fid50k{tag}", f"fid50k projected{tag}", "s")]
    start = time.monotonic()
    r = suite.part(names, lambda: metrics_throughput.measure(
        dev, s["rate_images"], s["rate_batch"], xla, s["config"]))
    if r is None:
        return
    sec = round(time.monotonic() - start, 1)
    suite.add(names[0][0], gen, r["generate_img_s"], "img/s", lower=False, seconds=sec)
    suite.add(names[1][0], f"Inception{tag} ({r['detector']})", r["inception_img_s"], "img/s",
              lower=False)
    suite.add(names[2][0], f"fid50k projected{tag} (50,000 / G+Inception img/s, real stats "
              "cached)", r["fid50k_s"], "s", target=None if suite.smoke else FID_TARGET_S)


def training(suite: Suite, data: Path, mixed: bool, xla: bool) -> None:
    """Bare training steps: sec/kimg and peak GPU memory."""
    s = suite.sizes
    tag = ("mixed precision" if mixed else "fp32") + (" --xla" if xla else "")
    key = ("mp" if mixed else "fp32") + ("_xla" if xla else "")
    what = f"{s['config']} {s['resolution']} px training, batch {s['batch']}, {tag}"
    names = [(f"train_{key}", what, "s/kimg"), (f"peak_memory_{key}",
                                                f"peak GPU memory, {tag}", "MiB")]
    if suite.gpus:
        tf.config.experimental.reset_memory_stats("GPU:0")
    start = time.monotonic()
    img_s = suite.part(names, lambda: {"img_s": train_throughput.bare(
        data, s["config"], s["batch"], s["steps"], xla=xla, mixed_precision=mixed,
        warmup=s["warmup"])})
    if img_s is None:
        return
    suite.add(names[0][0], what, 1000 / img_s["img_s"], "s/kimg",
              target=TRAIN_TARGET_S_KIMG if not suite.smoke else None,
              seconds=round(time.monotonic() - start, 1))
    if suite.gpus:
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        suite.add(names[1][0], names[1][1], float(peak), "MiB")
    else:
        suite.add(names[1][0], names[1][1], None, "MiB", reason=NO_GPU)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (small preset, 2 steps): a CPU check of the suite")
    parser.add_argument("out", type=Path, help="directory for gpu_suite.json and .md")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = SMOKE if args.smoke else FULL
    suite = Suite(args.out, sizes, args.smoke)
    suite.write()
    print(f"gpu suite on {suite.device}, TF {tf.__version__}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="gpu-suite-") as work:
        data = train_throughput.dataset(Path(work), sizes["resolution"], sizes["dataset"])
        rates(suite, xla=False)
        for mixed in (False, True):
            training(suite, data, mixed, xla=False)
        rates(suite, xla=True)
        for mixed in (False, True):
            training(suite, data, mixed, xla=True)
    suite.write()
    bad = [r for r in suite.rows if r["error"] or (
        r["value"] is not None and not (math.isfinite(r["value"]) and r["value"] > 0))]
    for r in suite.rows:
        shown = "null (" + (r["error"] or r["reason"]) + ")" if r["value"] is None else (
            f"{r['value']:.4g}")
        print(f"{r['what']:70} {shown} {r['unit']}")
    print(f"wrote {args.out / 'gpu_suite.json'} and {args.out / 'gpu_suite.md'} in "
          f"{time.monotonic() - suite.started:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
