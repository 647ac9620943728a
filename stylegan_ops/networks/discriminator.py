"""StyleGAN2 discriminator ("resnet" architecture), NVIDIA's variable names and layouts."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from stylegan_ops.networks.ops import Conv, Dense, fir_kernel
from stylegan_ops.networks.presets import NetworkConfig


def minibatch_stddev(x: tf.Tensor, group: int, features: int) -> tf.Tensor:
    """Append the std of each feature over groups of samples as extra channels (NHWC)."""
    n, h, w, c = (tf.shape(x)[i] for i in range(4))
    g = tf.minimum(group, n)
    y = tf.reshape(x, [g, -1, h, w, features, c // features])  # sample i → (i // M, i % M)
    y = tf.cast(y, tf.float32)
    y = y - tf.reduce_mean(y, axis=0)
    y = tf.sqrt(tf.reduce_mean(tf.square(y), axis=0) + 1e-8)  # [M, H, W, F, c]
    y = tf.reduce_mean(y, axis=[1, 2, 4])  # [M, F]
    y = tf.cast(y, x.dtype)
    y = tf.tile(y[:, None, None, :], [g, h, w, 1])  # [N, H, W, F]
    return tf.concat([x, y], axis=-1)


class Discriminator(tf.Module):
    """images NHWC in [-1, 1] → logits [N, 1]."""

    def __init__(self, cfg: NetworkConfig, seed: int = 1) -> None:
        super().__init__(name="D")
        rng = np.random.default_rng(seed)
        self.cfg = cfg
        fir = fir_kernel()
        nf = cfg.channels
        top = f"{cfg.resolution}x{cfg.resolution}"
        self.from_rgb = Conv(f"{top}/FromRGB", cfg.num_channels, nf(cfg.log2 - 1), 1, rng)
        self.blocks: list[tuple[Conv, Conv, Conv]] = []
        for r in range(cfg.log2, 2, -1):
            res = f"{2**r}x{2**r}"
            self.blocks.append((
                Conv(f"{res}/Conv0", nf(r - 1), nf(r - 1), 3, rng),
                Conv(f"{res}/Conv1_down", nf(r - 1), nf(r - 2), 3, rng, down=True, fir=fir),
                Conv(f"{res}/Skip", nf(r - 1), nf(r - 2), 1, rng, down=True, bias=False,
                     act="linear", fir=fir),
            ))
        extra = cfg.mbstd_features if cfg.mbstd_group > 1 else 0
        self.conv = Conv("4x4/Conv", nf(1) + extra, nf(1), 3, rng)
        self.dense = Dense("4x4/Dense0", nf(1) * 16, nf(0), rng, act="lrelu")
        self.out = Dense("Output", nf(0), 1, rng)

    @property
    def params(self) -> dict[str, tf.Variable]:
        layers = [self.from_rgb, *(m for b in self.blocks for m in b), self.conv, self.dense,
                  self.out]
        return {k: v for layer in layers for k, v in layer.params.items()}

    @property
    def trainable(self) -> list[tf.Variable]:
        return list(self.params.values())

    def frozen(self, blocks: int) -> set[str]:
        """Names of the first ``blocks`` blocks from the highest resolution, FromRGB with
        the first (FreezeD, Mo et al. 2020: fine-tuning keeps D's lower layers fixed)."""
        if blocks <= 0:
            return set()
        layers = [self.from_rgb, *(m for b in self.blocks[:blocks] for m in b)]
        return {k for layer in layers for k in layer.params}

    def __call__(self, img: tf.Tensor) -> tf.Tensor:
        cfg = self.cfg
        tf.debugging.assert_equal(tf.shape(img)[1:], [cfg.resolution, cfg.resolution,
                                                      cfg.num_channels])
        x = self.from_rgb(img)
        for conv0, conv1, skip in self.blocks:
            t = skip(x)
            x = conv1(conv0(x))
            x = (x + t) * (1.0 / math.sqrt(2.0))
        if cfg.mbstd_group > 1:
            x = minibatch_stddev(x, cfg.mbstd_group, cfg.mbstd_features)
        x = self.conv(x)
        # NVIDIA flattens NCHW: channel-major order, so imported Dense0 weights line up
        x = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [tf.shape(x)[0], -1])
        return self.out(self.dense(x))
