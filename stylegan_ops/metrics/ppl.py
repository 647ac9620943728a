"""Perceptual path length (Karras et al. 2019), the ``ppl2_wend`` variant of StyleGAN2:
W space, endpoints (t = 0), ε = 1e-4, no crop, LPIPS-VGG16 distance, images above 256 px
box-downsampled to 256 before the distance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

EPSILON = 1e-4


def path_lengths(network: Any, lpips: Any, n: int, batch: int, seed: int,
                 progress: Callable[[], Any], xla: bool = False) -> np.ndarray:
    """``n`` samples of LPIPS(G(w₀), G(lerp(w₀, w₁, ε))) / ε², reproducible for a seed;
    ``xla`` compiles the synthesis (LPIPS is compiled by its own loader)."""
    import tensorflow as tf

    from stylegan_ops.networks.ops import xla_function

    def const(ws: Any) -> Any:
        return network.synthesis(ws, noise_mode="const")

    synthesis = xla_function(const) if xla else const

    rng = np.random.RandomState(seed)
    z_dim, res = network.cfg.z_dim, network.cfg.resolution
    out = []
    with progress() as bar:
        for start in range(0, n, batch):
            b = min(batch, n - start)
            z = rng.randn(2 * b, z_dim).astype(np.float32)
            ws = network.map(tf.constant(z))  # no truncation, as the published metric
            w0, w1 = ws[:b], ws[b:]
            pair = tf.concat([w0, w0 + (w1 - w0) * EPSILON], axis=0)  # lerp at t=0 and t=ε
            # the stored noise inputs, so only w moves between the two images
            img = (synthesis(pair).numpy() + 1) * (255 / 2)
            if res > 256:
                f = res // 256
                img = img.reshape(2 * b, 256, f, 256, f, 3).mean(axis=(2, 4))
            out.append(lpips.distance(img[:b], img[b:]) / EPSILON**2)
            bar.update(b)
    return np.concatenate(out).astype(np.float64)
