"""Metric throughput: images/s through the Inception network (CPU, and GPU when visible),
and the wall time of ``fid50k`` for a config-f 256 px generator with cached real
statistics (target on one H100: <= 90 s), projected from a measured sample.

The detector is the real 2015-12-05 graph when ``stylegan-ops fetch-weights inception``
installed it; otherwise an architecture stand-in (Keras InceptionV3, random weights, the
same layers and 299 px input), said so in the output. Throughput does not depend on weights.

Usage: python benchmarks/metrics_throughput.py [--images 128] [--batch 32]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import tensorflow as tf

from stylegan_ops.errors import StageError
from stylegan_ops.generate import to_uint8
from stylegan_ops.networks.generator import Generator
from stylegan_ops.networks.presets import preset

TARGET_H100_S = 90.0


class KerasInception:
    """Inception-v3 layers with random weights: a throughput stand-in only."""

    def __init__(self) -> None:
        self.label = {"name": "keras-inception-v3 (architecture stand-in)"}
        self.net = tf.keras.applications.InceptionV3(weights=None, include_top=False,
                                                     pooling="avg")
        self.run = tf.function(lambda x: self.net(
            (tf.image.resize(tf.cast(x, tf.float32), (299, 299)) - 128.0) / 128.0))

    def features(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.run(images))


def detector() -> Any:
    from stylegan_ops.metrics.detectors import load

    try:
        return load("inception")
    except StageError:
        return KerasInception()


def rate(fn: Any, n: int, batch: int) -> float:
    fn(batch)  # compile / warm up
    start = time.perf_counter()
    for _ in range(0, n, batch):
        fn(batch)
    return (n // batch * batch) / (time.perf_counter() - start)


def measure(device: str, n: int, batch: int) -> dict[str, float]:
    with tf.device(device):
        det = detector()
        imgs = np.random.RandomState(0).randint(0, 256, (batch, 256, 256, 3)).astype(np.uint8)
        inception = rate(lambda b: det.features(imgs[:b]), n, batch)
        g = Generator(preset("config-f"))
        z = tf.constant(np.random.RandomState(1).randn(batch, 512).astype(np.float32))
        synth = tf.function(lambda z: g.synthesis(g.map(z), noise_mode="random"))
        gen = rate(lambda b: to_uint8(synth(z[:b]).numpy()), n, batch)
        both = rate(lambda b: det.features(to_uint8(synth(z[:b]).numpy())), n, batch)
    return {"inception_img_s": inception, "generate_img_s": gen, "fid_img_s": both,
            "fid50k_s": 50_000 / both, "detector": det.label["name"]}  # type: ignore[dict-item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    devices = ["/CPU:0"] + (["/GPU:0"] if tf.config.list_physical_devices("GPU") else [])
    print(f"{'device':8} {'detector':44} {'inception img/s':>16} {'G img/s':>9} "
          f"{'fid img/s':>10} {'fid50k s (proj.)':>17} {'target (H100)':>14}")
    for dev in devices:
        r = measure(dev, args.images, args.batch)
        print(f"{dev:8} {r['detector']:44} {r['inception_img_s']:16.1f} "
              f"{r['generate_img_s']:9.1f} {r['fid_img_s']:10.1f} {r['fid50k_s']:17.0f} "
              f"{TARGET_H100_S:14.0f}")
    print(f"(measured on {args.images} images per figure, batch {args.batch}; fid50k "
          "projected as 50,000 / fid img/s with the real statistics already cached)")


if __name__ == "__main__":
    main()
