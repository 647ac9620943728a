"""StyleGAN2 generator (config-f "skip" architecture), NVIDIA's variable names and layouts."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from stylegan_ops.networks.ops import (
    Dense,
    ModulatedConv,
    Params,
    fir_kernel,
    lrelu,
    normalize_2nd_moment,
    state_variable,
    upsample2d,
)
from stylegan_ops.networks.presets import NetworkConfig


class Mapping(tf.Module):
    """z → w: 2nd-moment normalisation, then ``mapping_layers`` dense lrelu layers."""

    def __init__(self, cfg: NetworkConfig, rng: np.random.Generator) -> None:
        super().__init__(name="G_mapping")
        self.layers = [
            Dense(f"G_mapping/Dense{i}", cfg.z_dim if i == 0 else cfg.w_dim, cfg.w_dim, rng,
                  lrmul=cfg.mapping_lrmul, act="lrelu")
            for i in range(cfg.mapping_layers)
        ]

    @property
    def params(self) -> dict[str, tf.Variable]:
        return {k: v for layer in self.layers for k, v in layer.params.items()}

    def __call__(self, z: tf.Tensor) -> tf.Tensor:
        x = normalize_2nd_moment(z)
        for layer in self.layers:
            x = layer(x)
        return x


class Synthesis(tf.Module):
    """ws [N, num_ws, w_dim] → images NHWC in [-1, 1]."""

    def __init__(self, cfg: NetworkConfig, rng: np.random.Generator) -> None:
        super().__init__(name="G_synthesis")
        self.cfg = cfg
        self.fir = fir_kernel()
        nf = cfg.channels
        base = Params("G_synthesis/4x4/Const")
        # learned constant input, NVIDIA layout [1, C, 4, 4]
        self.const = base.param("const", [1, nf(1), 4, 4], "normal", rng=rng)
        self.noise_vars: list[tf.Variable] = []
        self.noise_strengths: list[tf.Variable] = []
        self.biases: list[tf.Variable] = []
        self.convs: list[ModulatedConv] = []
        self.torgbs: list[ModulatedConv] = []
        self.rgb_biases: list[tf.Variable] = []
        self._params: dict[str, tf.Variable] = dict(base.params)
        noise = Params("G_synthesis")
        for idx in range(cfg.log2 * 2 - 3):  # one noise input per conv layer
            res = 2 ** ((idx + 5) // 2)
            self.noise_vars.append(noise.param(f"noise{idx}", [1, 1, res, res], "normal",
                                               trainable=False, rng=rng))
        self._params.update(noise.params)
        self._add_conv("4x4/Conv", nf(1), nf(1), up=False, rng=rng)
        self._add_torgb("4x4/ToRGB", nf(1), rng)
        for r in range(3, cfg.log2 + 1):
            res = f"{2**r}x{2**r}"
            self._add_conv(f"{res}/Conv0_up", nf(r - 2), nf(r - 1), up=True, rng=rng)
            self._add_conv(f"{res}/Conv1", nf(r - 1), nf(r - 1), up=False, rng=rng)
            self._add_torgb(f"{res}/ToRGB", nf(r - 1), rng)

    def _add_conv(self, name: str, cin: int, cout: int, up: bool,
                  rng: np.random.Generator) -> None:
        conv = ModulatedConv(f"G_synthesis/{name}", self.cfg.w_dim, cin, cout, 3, rng, up=up,
                             fir=self.fir)
        self.noise_strengths.append(conv.param("noise_strength", [], 0.0))
        self.biases.append(conv.param("bias", [cout], 0.0))
        self.convs.append(conv)
        self._params.update(conv.params)

    def _add_torgb(self, name: str, cin: int, rng: np.random.Generator) -> None:
        rgb = ModulatedConv(f"G_synthesis/{name}", self.cfg.w_dim, cin, self.cfg.num_channels,
                            1, rng, demodulate=False)
        self.rgb_biases.append(rgb.param("bias", [self.cfg.num_channels], 0.0))
        self.torgbs.append(rgb)
        self._params.update(rgb.params)

    @property
    def params(self) -> dict[str, tf.Variable]:
        return self._params

    def __call__(self, ws: tf.Tensor, noise_mode: str = "random", fused: bool = False,
                 noise: list[tf.Tensor] | None = None) -> tf.Tensor:
        """``noise_mode``: random (fresh per call), const (the stored inputs) or none.
        ``noise`` overrides both with explicit [N or 1, 1, H, W] inputs."""
        cfg = self.cfg
        tf.debugging.assert_equal(tf.shape(ws)[1:], [cfg.num_ws, cfg.w_dim])
        n = tf.shape(ws)[0]
        dtype = ws.dtype

        def layer(x: tf.Tensor, i: int) -> tf.Tensor:
            x = self.convs[i](x, ws[:, i], fused)
            # per-pixel noise, scaled by a learned strength per layer
            if noise is not None:
                x = x + tf.cast(tf.transpose(noise[i], [0, 2, 3, 1]), dtype) * tf.cast(
                    self.noise_strengths[i], dtype)
            elif noise_mode == "random":
                shape = tf.stack([n, tf.shape(x)[1], tf.shape(x)[2], 1])
                x = x + tf.random.normal(shape, dtype=dtype) * tf.cast(
                    self.noise_strengths[i], dtype)
            elif noise_mode == "const":
                x = x + tf.cast(tf.transpose(self.noise_vars[i], [0, 2, 3, 1]), dtype) * \
                    tf.cast(self.noise_strengths[i], dtype)
            return lrelu(x + tf.cast(self.biases[i], dtype))

        def torgb(x: tf.Tensor, j: int) -> tf.Tensor:
            t = self.torgbs[j](x, ws[:, 2 * j + 1], fused)
            return t + tf.cast(self.rgb_biases[j], dtype)

        # 4x4: the constant, one conv, the first RGB
        x = tf.tile(tf.cast(tf.transpose(self.const, [0, 2, 3, 1]), dtype), [n, 1, 1, 1])
        x = layer(x, 0)
        y = torgb(x, 0)
        # each doubling: upsampling conv, conv, RGB added to the upsampled RGB so far
        for j, _ in enumerate(range(3, cfg.log2 + 1), start=1):
            x = layer(x, 2 * j - 1)
            x = layer(x, 2 * j)
            y = upsample2d(y, self.fir) + torgb(x, j)
        return y


class Generator(tf.Module):
    """Mapping + synthesis + the tracked average w (``dlatent_avg``) for truncation."""

    def __init__(self, cfg: NetworkConfig, seed: int = 0) -> None:
        super().__init__(name="G")
        rng = np.random.default_rng(seed)
        self.cfg = cfg
        self.mapping = Mapping(cfg, rng)
        self.synthesis = Synthesis(cfg, rng)
        self.w_avg = state_variable(np.zeros([cfg.w_dim], np.float32), "dlatent_avg")

    @property
    def params(self) -> dict[str, tf.Variable]:
        """Every variable under NVIDIA's name (G_mapping/…, G_synthesis/…, dlatent_avg)."""
        return {**self.mapping.params, **self.synthesis.params, "dlatent_avg": self.w_avg}

    @property
    def trainable(self) -> list[tf.Variable]:
        return [v for v in self.params.values() if v.trainable]

    def map(self, z: tf.Tensor, psi: float = 1.0, update_avg: float | None = None) -> tf.Tensor:
        """z → ws [N, num_ws, w_dim]; ψ < 1 pulls w toward the average (truncation)."""
        tf.debugging.assert_equal(tf.shape(z)[1], self.cfg.z_dim)
        w = self.mapping(z)
        if update_avg is not None:  # track the mean w during training (β = update_avg)
            batch_avg = tf.reduce_mean(tf.cast(w, tf.float32), axis=0)
            self.w_avg.assign(batch_avg + (self.w_avg - batch_avg) * update_avg)
        if psi != 1.0:
            avg = tf.cast(self.w_avg, w.dtype)
            w = avg + (w - avg) * psi
        return tf.tile(w[:, None, :], [1, self.cfg.num_ws, 1])

    def __call__(self, z: tf.Tensor, psi: float = 1.0, noise_mode: str = "random",
                 fused: bool = False) -> tf.Tensor:
        return self.synthesis(self.map(z, psi), noise_mode=noise_mode, fused=fused)
