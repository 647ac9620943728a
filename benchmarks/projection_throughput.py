"""Projection speed: seconds per optimisation step of ``stylegan-ops project`` and the
time of one 1000-step target, side by side with the forward pass alone (G + LPIPS, the
floor a step cannot beat: a step adds the backward pass and the Adam update).

The LPIPS network is VGG16 at its standard widths with random weights (speed does not
depend on the weights, and nothing is fetched); the generator is the preset's, random.

Usage: python benchmarks/projection_throughput.py [--config small] [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from stylegan_ops.metrics.detectors import LPIPS, VGG_BLOCKS, VGG_WIDTHS
from stylegan_ops.networks.generator import Generator
from stylegan_ops.networks.presets import preset
from stylegan_ops.project import ProjectConfig, Projector, downsample


def random_lpips(seed: int = 0) -> LPIPS:
    """LPIPS-VGG16 of the standard shapes with random weights: a speed stand-in."""
    rng = np.random.default_rng(seed)
    variables: list[tuple[str, np.ndarray]] = []
    cin = 3
    for block, (count, width) in enumerate(zip(VGG_BLOCKS, VGG_WIDTHS, strict=True), 1):
        for layer in range(1, count + 1):
            std = np.sqrt(2 / (9 * cin))
            variables.append((f"conv{block}_{layer}/w", (rng.standard_normal(
                (3, 3, cin, width)) * std).astype(np.float32)))
            variables.append((f"conv{block}_{layer}/b", np.zeros(width, np.float32)))
            cin = width
    for i, width in enumerate(VGG_WIDTHS):
        variables.append((f"lin{i}", np.abs(rng.standard_normal((1, 1, width, 1))
                                            ).astype(np.float32)))
    return LPIPS(variables, {"name": "lpips", "file": "random VGG16 (speed stand-in)",
                             "sha256": None, "standard": False})


def measure(config: str, steps: int) -> dict[str, Any]:
    """sec/step of the projection step and of the forward pass alone, after warm-up."""
    net = preset(config)
    G = Generator(net)  # noqa: N806
    lpips = random_lpips()
    work = Path(tempfile.mkdtemp())
    (work / "net").mkdir()
    cfg = ProjectConfig(work / "net", work, work / "out", steps=max(steps, 1))
    proj = Projector(G, lpips, cfg)
    rnd = np.random.RandomState(0)
    target = rnd.randint(0, 256, (net.resolution, net.resolution, 3)).astype(np.uint8)
    proj.reset(target, np.zeros(net.w_dim, np.float32), rnd)
    noise = tf.zeros([1, net.w_dim])

    @tf.function
    def forward() -> tf.Tensor:
        img = proj.image(proj.w)
        return lpips.tensor_distance(downsample(proj.target), downsample(img))[0]

    def step(i: int) -> Any:
        return proj.step(tf.constant(i + 1.0), tf.constant(0.01), noise)[0]

    def timed(fn: Any) -> float:
        float(fn(0))  # trace and warm up; float() waits for the device
        start = time.perf_counter()
        for i in range(steps):
            out = fn(i)
        float(out)
        return (time.perf_counter() - start) / steps

    fwd, full = timed(lambda i: forward()), timed(step)
    return {"config": config, "resolution": net.resolution, "forward_s": fwd, "step_s": full,
            "target_1000_steps_s": 1000 * full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small", help="network preset (default small)")
    parser.add_argument("--steps", type=int, default=20, help="steps timed (default 20)")
    args = parser.parse_args()
    device = tf.config.list_physical_devices("GPU")
    r = measure(args.config, args.steps)
    print(f"{args.config} {r['resolution']} px on {'GPU' if device else 'CPU'}, "
          f"LPIPS-VGG16 at {min(r['resolution'], 256)} px (random weights), "
          f"{args.steps} steps timed")
    print(f"  forward alone (G + LPIPS)  {r['forward_s'] * 1000:9.1f} ms")
    print(f"  projection step            {r['step_s'] * 1000:9.1f} ms   "
          f"{r['step_s'] / r['forward_s']:.1f}x the forward pass")
    print(f"  one target, 1000 steps     {r['target_1000_steps_s']:9.1f} s")


if __name__ == "__main__":
    main()
