"""Metric throughput: images/s through the Inception network and through the config-f
generator (CPU, and GPU when visible), and the wall time of ``fid50k`` for a config-f
256 px generator with cached real statistics (target on one H100/H200: <= 90 s), projected
from a measured sample; each without and with ``--xla`` (jit_compile), side by side.

The detector is the real 2015-12-05 graph when ``stylegan-ops fetch-weights inception``
installed it; otherwise an architecture stand-in (Keras InceptionV3, random weights, the
same layers and 299 px input), said so in the output. Throughput does not depend on weights.
The generator runs as ``generate``/``evaluate`` run it: map + synthesis in one tf.function,
the noise inputs drawn outside it (as --xla needs: XLA's random ops ignore the seeds).

Usage: python benchmarks/metrics_throughput.py [--images 128] [--batch 32]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from stylegan_ops.errors import StageError
from stylegan_ops.generate import compiled_sampler, random_noise, to_uint8
from stylegan_ops.networks.generator import Generator
from stylegan_ops.networks.presets import preset

TARGET_H100_S = 90.0


class KerasInception:
    """Inception-v3 layers with random weights: a throughput stand-in only."""

    def __init__(self, xla: bool = False) -> None:
        self.label = {"name": "keras-inception-v3 (architecture stand-in)"}
        self.net = tf.keras.applications.InceptionV3(weights=None, include_top=False,
                                                     pooling="avg")
        self.run = tf.function(lambda x: self.net(
            (tf.image.resize(tf.cast(x, tf.float32), (299, 299)) - 128.0) / 128.0),
            jit_compile=True if xla else None)

    def features(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.run(images))


def detector(xla: bool = False) -> Any:
    """The real Inception graph from the weight cache, else the Keras stand-in."""
    from stylegan_ops.metrics.detectors import load

    try:
        return load("inception", xla=xla)
    except StageError:
        return KerasInception(xla)


def rate(fn: Callable[[int], Any], n: int, batch: int) -> float:
    """img/s of ``fn(batch)`` over ``n`` images, after one call (compilation) untimed."""
    fn(batch)
    start = time.perf_counter()
    for _ in range(0, n, batch):
        fn(batch)
    return (max(n // batch, 1) * batch) / (time.perf_counter() - start)


def generator(config: str, batch: int, xla: bool) -> Callable[[int], np.ndarray]:
    """batch → uint8 images of a random ``config`` generator (ψ 1, random noise)."""
    g = Generator(preset(config))
    z = tf.constant(np.random.RandomState(1).randn(batch, g.cfg.z_dim).astype(np.float32))
    sample = compiled_sampler(g, 1.0, xla=xla)
    return lambda b: to_uint8(sample(z[:b], random_noise(g, b)).numpy())


def measure(device: str, n: int, batch: int, xla: bool = False,
            config: str = "config-f") -> dict[str, Any]:
    """Inception, generator and generator + Inception img/s on ``device``; fid50k projected."""
    with tf.device(device):
        det = detector(xla)
        res = preset(config).resolution
        imgs = np.random.RandomState(0).randint(0, 256, (batch, res, res, 3)).astype(np.uint8)
        inception = rate(lambda b: det.features(imgs[:b]), n, batch)
        gen = generator(config, batch, xla)
        generate = rate(gen, n, batch)
        both = rate(lambda b: det.features(gen(b)), n, batch)
    return {"inception_img_s": inception, "generate_img_s": generate, "fid_img_s": both,
            "fid50k_s": 50_000 / both, "detector": det.label["name"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128, help="images per figure (128)")
    parser.add_argument("--batch", type=int, default=32, help="images per call (32)")
    args = parser.parse_args()
    devices = ["/CPU:0"] + (["/GPU:0"] if tf.config.list_physical_devices("GPU") else [])
    head = (f"{'device':8} {'xla':>5} {'detector':44} {'inception img/s':>16} {'G img/s':>9} "
            f"{'fid img/s':>10} {'fid50k s (proj.)':>17} {'target (H100)':>14}")
    print(head)
    for dev in devices:
        rows = {xla: measure(dev, args.images, args.batch, xla) for xla in (False, True)}
        for xla, r in rows.items():
            print(f"{dev:8} {'with' if xla else 'none':>5} {r['detector']:44} "
                  f"{r['inception_img_s']:16.1f} {r['generate_img_s']:9.1f} "
                  f"{r['fid_img_s']:10.1f} {r['fid50k_s']:17.0f} {TARGET_H100_S:14.0f}")
        ratio = {k: rows[True][k] / rows[False][k] for k in rows[True] if k != "detector"}
        print(f"{dev:8} {'ratio':>5} {'with / without (time: without / with)':44} "
              f"{ratio['inception_img_s']:16.2f} {ratio['generate_img_s']:9.2f} "
              f"{ratio['fid_img_s']:10.2f} {1 / ratio['fid50k_s']:17.2f}")
    print(f"(config-f 256 px generator, random weights; measured on {args.images} images per "
          f"figure, batch {args.batch}; fid50k projected as 50,000 / fid img/s with the real "
          "statistics already cached)")


if __name__ == "__main__":
    main()
