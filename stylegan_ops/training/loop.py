"""StyleGAN2 training: non-saturating logistic loss, lazy R1 and path-length
regularisation, G EMA, optional ADA, snapshots that resume exactly."""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from stylegan_ops.data.montage import save_grid
from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import check_output, dump_json, temp_sibling, write_atomic
from stylegan_ops.networks.discriminator import Discriminator
from stylegan_ops.networks.generator import Generator
from stylegan_ops.networks.ops import state_variable, xla_function
from stylegan_ops.networks.presets import NetworkConfig, preset
from stylegan_ops.networks.snapshot import Snapshot, assign
from stylegan_ops.training import (
    DEVICE_RE,
    MAX_TRAIN_SEED,
    fakes_name,
    name_kimg,
    snapshot_name,
)
from stylegan_ops.training.augment import AdaController, augment
from stylegan_ops.training.dataset import image_dataset, level_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training options; defaults are NVIDIA's config-f settings."""

    data: Path
    out: Path
    config: str = "config-f"  # network preset (presets.PRESETS)
    total_kimg: float = 10.0  # thousands of real images shown to D
    batch: int = 32
    gamma: float | None = None  # R1 weight; None: the preset's rule (PRESET_TRAINING)
    mirror: bool = False  # x-flip the reals
    resume: str | None = None  # a snapshot dir, or "auto": the newest in ``out``
    aug: str = "none"  # "none", "ada" (p adapts) or "fixed" (p stays aug_p)
    ada_target: float = 0.6
    ada_kimg: float = 500.0  # ADA's speed: p can move by 1 in this many kimg (ADA's 500)
    gpus: int = 1
    devices: tuple[str, ...] | None = None  # explicit TF devices (e.g. /cpu:0,/cpu:1); wins
    lr: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    r1_interval: int = 16  # lazy R1: every 16 D steps
    pl_interval: int = 4  # lazy path-length regularisation: every 4 G steps
    pl_weight: float | None = None  # path-length weight; None: the preset's (0: none)
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    ema_kimg: float = 10.0  # G EMA half-life
    ema_rampup: float | None = None  # half-life <= rampup × images shown; None: preset's
    style_mixing: float | None = None  # style-mixing probability; None: the preset's
    tick_kimg: float = 1.0  # a stats line every tick
    snapshot_ticks: int = 4  # a snapshot every this many ticks (and at the end)
    seed: int = 0
    fused: bool | None = None  # grouped-conv modulation; None: on when a GPU is used
    mixed_precision: bool = False  # float16 synthesis and D, float32 weights, loss scaling
    xla: bool = False  # compile each step with XLA (jit_compile); one device only
    init: str | None = None  # fine-tune: start G, D and Gs from this snapshot dir or .pkl
    freeze_d: int = 0  # D blocks (from the highest resolution) kept fixed: FreezeD
    augpipe: str = "bgc"  # ADA transforms (augment.AUGPIPES)
    aug_p: float = 0.0  # "fixed": the probability; "ada": the starting one
    metrics: tuple[str, ...] = ()  # evaluated at every snapshot (metrics.evaluate names)
    metrics_images: int | None = None  # cap of images per metric during training
    keep_best: str | None = None  # one of ``metrics``: keep its best snapshot as network-best
    reference_data: Path | None = None  # the metrics' reals (default: ``data``)

    def __post_init__(self) -> None:
        self._check_numbers()
        if self.batch < 2:
            raise StageError(f"batch must be >= 2, got {self.batch}")
        if self.gpus < 1 or self.batch % self.gpus:
            raise StageError(f"batch {self.batch} is not divisible by gpus {self.gpus}")
        if self.devices and self.batch % len(self.devices):
            raise StageError(f"batch {self.batch} is not divisible by the "
                             f"{len(self.devices)} devices {','.join(self.devices)}")
        if self.batch // max(self.gpus, len(self.devices or ())) % self.pl_batch_shrink:
            raise StageError(f"batch {self.batch} per device is not divisible by the "
                             f"path-length batch shrink {self.pl_batch_shrink}")
        if self.batch % self.pl_batch_shrink:
            raise StageError(f"batch {self.batch} is not divisible by the path-length "
                             f"batch shrink {self.pl_batch_shrink}")
        if self.xla and max(self.gpus, len(self.devices or ())) > 1:
            # MirroredStrategy's cross-device all-reduce sits inside the step, and XLA
            # cannot compile a replica context's collectives here: refused, not half-compiled
            raise StageError(f"--xla runs on one device; got {self._device_words()}: drop "
                             "--xla or train on one device")
        if self.aug not in ("none", "ada", "fixed"):
            raise StageError(f"aug must be 'none', 'ada' or 'fixed', got {self.aug!r}")
        from stylegan_ops.training.augment import pipe

        pipe(self.augpipe)
        if self.devices is not None:
            if not self.devices or any(not DEVICE_RE.match(str(d)) for d in self.devices):
                raise StageError(f"devices must be TF device names like /gpu:0, got "
                                 f"{list(self.devices)!r}")
            if len(set(self.devices)) != len(self.devices):
                raise StageError(f"devices {','.join(self.devices)} name a device twice")
        net = preset(self.config)
        blocks = net.log2 - 2  # D's blocks above its 4x4 epilogue
        if not isinstance(self.freeze_d, int) or not 0 <= self.freeze_d <= blocks:
            raise StageError(f"freeze-d must be an integer in 0..{blocks} (the D blocks of "
                             f"{self.config} at {net.resolution} px), got {self.freeze_d!r}")
        if self.metrics:
            from stylegan_ops.metrics.evaluate import parse_metrics

            parse_metrics(",".join(self.metrics))
        if self.keep_best is not None and self.keep_best not in self.metrics:
            raise StageError(f"keep-best {self.keep_best!r} is not one of --metrics "
                             f"({','.join(self.metrics) or 'none given'})")
        if self.metrics_images is not None and (
                not isinstance(self.metrics_images, int) or self.metrics_images < 2):
            raise StageError(f"metrics-images must be an integer >= 2, got "
                             f"{self.metrics_images!r}")
        check_output(self.out, "dir")

    def _device_words(self) -> str:
        return (f"--devices {','.join(self.devices)}" if self.devices
                else f"--gpus {self.gpus}")

    # -- defaults that follow the preset, resolution and batch ----------------------
    @property
    def r1_gamma(self) -> float:
        """γ given, else the preset's: NVIDIA's paper value, or ADA's ``auto`` rule
        0.0002 · res² / batch (γ = 10 is config-f's value for 256 px; at 32 px it is
        orders of magnitude too strong)."""
        if self.gamma is not None:
            return self.gamma
        rule = PRESET_TRAINING[self.config]["gamma"]
        res = preset(self.config).resolution
        return 0.0002 * res * res / self.batch if rule == "auto" else float(rule)

    @property
    def ema_ramp(self) -> float:
        """The EMA ramp-up (0: off): given, else the preset's."""
        if self.ema_rampup is not None:
            return self.ema_rampup
        return float(PRESET_TRAINING[self.config]["ema_rampup"])

    @property
    def path_length_weight(self) -> float:
        """The path-length weight (0: the regularisation step is skipped): given, else
        the preset's — NVIDIA's 2 for config-f/e; none for ``small``, as ADA's small-image
        (CIFAR) setting: short runs score no worse without it, and each step is cheaper."""
        if self.pl_weight is not None:
            return self.pl_weight
        return float(PRESET_TRAINING[self.config]["pl_weight"])

    @property
    def mixing_prob(self) -> float:
        """The style-mixing probability: given, else the preset's (0.9; ``small`` 0)."""
        if self.style_mixing is not None:
            return self.style_mixing
        return float(PRESET_TRAINING[self.config]["style_mixing"])

    def ema_beta(self, nimg: int) -> float:
        """Per-step decay of the G average after ``nimg`` images: a half-life of
        ``ema_kimg``, capped at ``ema_rampup`` × the images shown so far, so early in a
        short run the average is not mostly the random initialisation."""
        horizon = self.ema_kimg * 1000
        if self.ema_ramp > 0:
            horizon = min(horizon, nimg * self.ema_ramp)
        return float(0.5 ** (self.batch / max(horizon, 1e-8)))

    def _check_numbers(self) -> None:
        """Every number finite and in its range: NaN passes ``<=`` tests (all comparisons
        with it are false), so each bound is written as what must hold."""
        def need(name: str, value: Any, ok: bool, what: str) -> None:
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and ok):
                raise StageError(f"{name} must be {what}, got {value!r}")

        need("total-kimg", self.total_kimg, self.total_kimg > 0, "a finite number > 0")
        need("tick-kimg", self.tick_kimg, self.tick_kimg > 0, "a finite number > 0")
        if self.gamma is not None:
            need("gamma", self.gamma, self.gamma >= 0, "a finite number >= 0")
        if self.ema_rampup is not None:
            need("ema-rampup", self.ema_rampup, self.ema_rampup >= 0, "a finite number >= 0")
        need("aug-p", self.aug_p, 0 <= self.aug_p <= 1, "in [0, 1]")
        need("lr", self.lr, self.lr > 0, "a finite number > 0")
        need("eps", self.eps, self.eps > 0, "a finite number > 0")
        for i, beta in enumerate(self.betas):
            need(f"betas[{i}]", beta, 0 <= beta < 1, "in [0, 1)")
        need("ada-target", self.ada_target, 0 < self.ada_target <= 1, "in (0, 1]")
        need("ada-kimg", self.ada_kimg, self.ada_kimg > 0, "a finite number > 0")
        if self.pl_weight is not None:
            need("pl-weight", self.pl_weight, self.pl_weight >= 0, "a finite number >= 0")
        need("pl-decay", self.pl_decay, 0 <= self.pl_decay <= 1, "in [0, 1]")
        need("ema-kimg", self.ema_kimg, self.ema_kimg >= 0, "a finite number >= 0")
        if self.style_mixing is not None:
            need("style-mixing", self.style_mixing, 0 <= self.style_mixing <= 1, "in [0, 1]")
        for name, value in (("snapshot-ticks", self.snapshot_ticks),
                            ("r1-interval", self.r1_interval),
                            ("pl-interval", self.pl_interval),
                            ("pl-batch-shrink", self.pl_batch_shrink), ("gpus", self.gpus)):
            need(name, value, isinstance(value, int) and value >= 1, "an integer >= 1")
        need("batch", self.batch, isinstance(self.batch, int), "an integer >= 2")
        need("seed", self.seed, isinstance(self.seed, int) and 0 <= self.seed <= MAX_TRAIN_SEED,
             f"an integer in 0..{MAX_TRAIN_SEED}")

    def to_dict(self) -> dict[str, Any]:
        """The options as run: defaults that follow a rule are written resolved, and
        ``auto`` names them."""
        d = asdict(self)
        d["data"], d["out"] = str(self.data), str(self.out)
        d["reference_data"] = str(self.reference_data) if self.reference_data else None
        d["auto"] = [k for k in ("gamma", "ema_rampup", "pl_weight", "style_mixing")
                     if d[k] is None]
        d["gamma"], d["ema_rampup"] = self.r1_gamma, self.ema_ramp
        d["pl_weight"], d["style_mixing"] = self.path_length_weight, self.mixing_prob
        return d


# Training defaults per network preset: NVIDIA's paper settings for config-f/e; for the
# small preset that short CPU runs use, ADA's resolution-aware γ, an EMA ramp-up, and
# ADA's small-image setting of no path-length regularisation and no style mixing.
PRESET_TRAINING: dict[str, dict[str, float | str]] = {
    "config-f": {"gamma": 10.0, "ema_rampup": 0.0, "pl_weight": 2.0, "style_mixing": 0.9},
    "config-e": {"gamma": 10.0, "ema_rampup": 0.0, "pl_weight": 2.0, "style_mixing": 0.9},
    "small": {"gamma": "auto", "ema_rampup": 0.05, "pl_weight": 0.0, "style_mixing": 0.0},
}


@dataclass(frozen=True)
class TrainResult:
    out: str
    kimg: float
    snapshot: str
    final: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Adam:
    """Adam (TF1 form) over a fixed list of variables; its state is plain variables, so
    it is saved and restored by name. With ``loss_scale`` (mixed precision) losses are
    multiplied by a dynamic scale, and a step whose gradients overflow is skipped and
    halves the scale; 1,000 good steps double it."""

    def __init__(self, name: str, variables: list[tf.Variable], lr: float,
                 betas: tuple[float, float], eps: float, interval: int | None,
                 loss_scale: bool = False) -> None:
        # lazy regularisation: scale lr and betas as if the reg step ran every step
        c = interval / (interval + 1) if interval else 1.0
        self.name, self.vars = name, variables
        self.lr, self.b1, self.b2, self.eps = lr * c, betas[0] ** c, betas[1] ** c, eps
        self.m = [state_variable(tf.zeros_like(v), f"{name}_m") for v in variables]
        self.v = [state_variable(tf.zeros_like(v), f"{name}_v") for v in variables]
        self.t = state_variable(0.0, f"{name}_t")
        self.dynamic = loss_scale
        self.scale = state_variable(2.0**15 if loss_scale else 1.0, f"{name}_loss_scale")
        self.good = state_variable(0.0, f"{name}_good_steps")

    def scaled(self, loss: tf.Tensor) -> tf.Tensor:
        return loss * self.scale if self.dynamic else loss

    def apply(self, grads: list[tf.Tensor]) -> None:
        """One update from per-replica gradients (averaged over replicas first)."""
        grads = [tf.cast(g, tf.float32) for g in grads]
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            grads = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, grads)
        ok = tf.constant(True)
        if self.dynamic:
            grads = [g / self.scale for g in grads]
            ok = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
            good = tf.where(ok, self.good + 1, 0.0)
            grow = good >= 1000
            self.scale.assign(tf.where(ok, tf.where(grow, self.scale * 2, self.scale),
                                       tf.maximum(self.scale / 2, 1.0)))
            self.good.assign(tf.where(grow, 0.0, good))
            grads = [tf.where(ok, g, tf.zeros_like(g)) for g in grads]
        t = self.t.assign_add(tf.cast(ok, tf.float32))
        t_eff = tf.maximum(t, 1.0)
        lr_t = self.lr * tf.sqrt(1 - self.b2 ** t_eff) / (1 - self.b1 ** t_eff)
        for var, g, m, v in zip(self.vars, grads, self.m, self.v, strict=True):
            m.assign(tf.where(ok, self.b1 * m + (1 - self.b1) * g, m))
            v.assign(tf.where(ok, self.b2 * v + (1 - self.b2) * tf.square(g), v))
            var.assign_sub(tf.where(ok, lr_t * m / (tf.sqrt(v) + self.eps), 0.0))

    def state(self, names: list[str]) -> dict[str, np.ndarray]:
        out = {f"{self.name}/t": np.asarray(self.t.numpy()),
               f"{self.name}/loss_scale": np.asarray(self.scale.numpy()),
               f"{self.name}/good_steps": np.asarray(self.good.numpy())}
        for n, m, v in zip(names, self.m, self.v, strict=True):
            out[f"{self.name}/m/{n}"] = m.numpy()
            out[f"{self.name}/v/{n}"] = v.numpy()
        return out

    def restore(self, names: list[str], arrays: dict[str, np.ndarray]) -> None:
        missing = [n for n in names if f"{self.name}/m/{n}" not in arrays]
        if f"{self.name}/t" not in arrays or missing:
            raise StageError(f"the snapshot has no {self.name} optimizer state for "
                             f"{missing[0] if missing else 'its step count'} (trained with "
                             f"another --freeze-d?)")
        self.t.assign(float(arrays[f"{self.name}/t"]))
        if f"{self.name}/loss_scale" in arrays:
            self.scale.assign(float(arrays[f"{self.name}/loss_scale"]))
            self.good.assign(float(arrays[f"{self.name}/good_steps"]))
        for n, m, v in zip(names, self.m, self.v, strict=True):
            m.assign(arrays[f"{self.name}/m/{n}"])
            v.assign(arrays[f"{self.name}/v/{n}"])


class Trainer:
    """Networks, optimizers and the compiled steps of one training run: ``d_step``,
    ``d_reg_step``, ``g_step``, ``g_reg_step`` and ``ema``, XLA-compiled with ``cfg.xla``."""

    def __init__(self, cfg: TrainConfig, net: NetworkConfig,
                 strategy: tf.distribute.Strategy | None = None) -> None:
        self.cfg, self.net = cfg, net
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        tf.random.set_seed(cfg.seed)
        with self.strategy.scope():
            self._build(cfg, net)
        # compiled here, not by decorators, so that --xla is this trainer's choice
        compiled = xla_function if cfg.xla else tf.function
        self.d_step = compiled(self._run_d_step)
        self.d_reg_step = compiled(self._run_d_reg_step)
        self.g_step = compiled(self._run_g_step)
        self.g_reg_step = compiled(self._run_g_reg_step)
        self.ema = compiled(self._ema)

    def _build(self, cfg: TrainConfig, net: NetworkConfig) -> None:
        self.G, self.D = Generator(net, cfg.seed), Discriminator(net, cfg.seed + 1)
        self.Gs = Generator(net, cfg.seed)  # EMA copy used for sampling
        for name, var in self.Gs.params.items():
            var.assign(self.G.params[name])
        self.g_names = [n for n, v in self.G.params.items() if v.trainable]
        frozen = self.D.frozen(cfg.freeze_d)
        self.d_names = [n for n in self.D.params if n not in frozen]
        g_vars = [self.G.params[n] for n in self.g_names]
        d_vars = [self.D.params[n] for n in self.d_names]
        mp = cfg.mixed_precision
        self.g_opt = Adam("G", g_vars, cfg.lr, cfg.betas, cfg.eps, cfg.pl_interval, mp)
        self.d_opt = Adam("D", d_vars, cfg.lr, cfg.betas, cfg.eps, cfg.r1_interval, mp)
        self.dtype = tf.float16 if mp else tf.float32  # compute dtype of synthesis and D
        self.pl_mean = state_variable(0.0, "pl_mean")
        self.ada = AdaController(cfg.ada_target, speed_kimg=cfg.ada_kimg,
                                 p=cfg.aug_p) if cfg.aug != "none" else None
        gpu = bool(tf.config.list_physical_devices("GPU"))
        self.fused = cfg.fused if cfg.fused is not None else gpu
        self.batch = cfg.batch // self.replicas  # per replica
        self.gamma = cfg.r1_gamma
        self.pl_weight, self.mixing = cfg.path_length_weight, cfg.mixing_prob

    # -- helpers -------------------------------------------------------------------
    def _aug(self, images: tf.Tensor) -> tf.Tensor:
        return augment(images, self.ada.p, self.cfg.augpipe) if self.ada is not None else images

    def _synth(self, ws: tf.Tensor) -> tf.Tensor:
        """Images in float32 from synthesis run in the compute dtype."""
        return tf.cast(self.G.synthesis(tf.cast(ws, self.dtype), fused=self.fused), tf.float32)

    def _disc(self, images: tf.Tensor) -> tf.Tensor:
        """Logits in float32 from D run in the compute dtype."""
        return tf.cast(self.D(tf.cast(images, self.dtype)), tf.float32)

    def _ws(self, n: int, update_avg: bool) -> tf.Tensor:
        """Latents with style mixing: after a random layer, w comes from a second z."""
        ws = self.G.map(tf.random.normal([n, self.net.z_dim]),
                        update_avg=0.995 if update_avg else None)
        if self.mixing > 0:
            ws2 = self.G.map(tf.random.normal([n, self.net.z_dim]))
            cutoff = tf.where(tf.random.uniform([]) < self.mixing,
                              tf.random.uniform([], 1, self.net.num_ws, dtype=tf.int32),
                              self.net.num_ws)
            mix = tf.range(self.net.num_ws)[None, :, None] < cutoff
            ws = tf.where(mix, ws, ws2)
        return ws

    # -- compiled steps ------------------------------------------------------------
    def _d_step(self, reals: tf.Tensor) -> dict[str, tf.Tensor]:
        ws = self._ws(self.batch, update_avg=False)
        fakes = self._synth(ws)
        with tf.GradientTape() as tape:
            fake_logits = self._disc(self._aug(fakes))
            real_logits = self._disc(self._aug(reals))
            loss = tf.reduce_mean(tf.nn.softplus(fake_logits) + tf.nn.softplus(-real_logits))
            scaled = self.d_opt.scaled(loss)
        self.d_opt.apply(tape.gradient(scaled, self.d_opt.vars))
        if self.ada is not None:
            self.ada.accumulate(real_logits)
        return {"loss_d": loss, "real_score": tf.reduce_mean(real_logits),
                "fake_score": tf.reduce_mean(fake_logits)}

    def _d_reg_step(self, reals: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            with tf.GradientTape() as inner:
                inner.watch(reals)
                logits = tf.reduce_sum(self._disc(self._aug(reals)))
            grad = inner.gradient(logits, reals)
            penalty = tf.reduce_sum(tf.square(grad), axis=[1, 2, 3])
            loss = tf.reduce_mean(penalty * (self.gamma / 2) * self.cfg.r1_interval)
            scaled = self.d_opt.scaled(loss)
        self.d_opt.apply(tape.gradient(scaled, self.d_opt.vars,
                                       unconnected_gradients=tf.UnconnectedGradients.ZERO))
        return {"r1_penalty": tf.reduce_mean(penalty)}

    def _g_step(self) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            ws = self._ws(self.batch, update_avg=True)
            logits = self._disc(self._aug(self._synth(ws)))
            loss = tf.reduce_mean(tf.nn.softplus(-logits))
            scaled = self.g_opt.scaled(loss)
        self.g_opt.apply(tape.gradient(scaled, self.g_opt.vars))
        return {"loss_g": loss}

    def _g_reg_step(self) -> dict[str, tf.Tensor]:
        n = self.batch // self.cfg.pl_batch_shrink
        with tf.GradientTape() as tape:
            ws = self._ws(n, update_avg=False)
            with tf.GradientTape() as inner:
                inner.watch(ws)
                img = self._synth(ws)
                noise = tf.random.normal(tf.shape(img)) / math.sqrt(
                    self.net.resolution * self.net.resolution)
                out = tf.reduce_sum(img * noise)
            grad = inner.gradient(out, ws)
            lengths = tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(grad), axis=2), axis=1))
            pl_mean = self.pl_mean + self.cfg.pl_decay * (tf.reduce_mean(lengths) - self.pl_mean)
            penalty = tf.square(lengths - pl_mean)
            loss = tf.reduce_mean(penalty) * self.pl_weight * self.cfg.pl_interval
            scaled = self.g_opt.scaled(loss)
        self.pl_mean.assign(pl_mean)
        self.g_opt.apply(tape.gradient(scaled, self.g_opt.vars,
                                       unconnected_gradients=tf.UnconnectedGradients.ZERO))
        return {"pl_penalty": tf.reduce_mean(penalty)}

    # -- the steps: each runs its replica function on every device -------------------
    def _reduce(self, per_replica: dict[str, Any]) -> dict[str, tf.Tensor]:
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                for k, v in per_replica.items()}

    def _run_d_step(self, reals: Any) -> dict[str, tf.Tensor]:
        return self._reduce(self.strategy.run(self._d_step, args=(reals,)))

    def _run_d_reg_step(self, reals: Any) -> dict[str, tf.Tensor]:
        return self._reduce(self.strategy.run(self._d_reg_step, args=(reals,)))

    def _run_g_step(self) -> dict[str, tf.Tensor]:
        return self._reduce(self.strategy.run(self._g_step))

    def _run_g_reg_step(self) -> dict[str, tf.Tensor]:
        return self._reduce(self.strategy.run(self._g_reg_step))

    def distribute(self, dataset: tf.data.Dataset) -> Any:
        """Per-replica batches of a global-batch dataset."""
        return self.strategy.experimental_distribute_dataset(dataset)

    def _ema(self, beta: tf.Tensor) -> None:
        """Gs ← G + (Gs − G)·β for trained weights; copies of the rest (noise inputs,
        ``dlatent_avg``). ``beta`` is a tensor: a new value per step, one trace."""
        for name, var in self.Gs.params.items():
            src = self.G.params[name]
            if src.trainable:
                var.assign(src + (var - src) * beta)
            else:
                var.assign(src)

    # -- state ----------------------------------------------------------------------
    def snapshot(self, kimg: float, step: int) -> Snapshot:
        def arrays(params: dict[str, tf.Variable]) -> dict[str, np.ndarray]:
            return {k: v.numpy() for k, v in params.items()}

        state = {"kimg": kimg, "nimg": round(kimg * 1000), "step": step,
                 "pl_mean": float(self.pl_mean.numpy()),
                 "augment_p": float(self.ada.p.numpy()) if self.ada else 0.0}
        opt = {**self.g_opt.state(self.g_names), **self.d_opt.state(self.d_names)}
        return Snapshot(self.net, arrays(self.G.params), arrays(self.D.params),
                        arrays(self.Gs.params), state, opt)

    def init_from(self, snap: Snapshot) -> None:
        """Fine-tuning: G, D and Gs take ``snap``'s weights (mapping, ``dlatent_avg`` and
        noise strengths included); optimizer, path-length mean and kimg start fresh."""
        assign(self.G.params, snap.G, "G")
        assign(self.D.params, snap.D, "D")
        assign(self.Gs.params, snap.Gs, "Gs")

    def restore(self, snap: Snapshot) -> tuple[float, int]:
        if snap.config != self.net:
            raise StageError("the snapshot's network config differs from this run's")
        assign(self.G.params, snap.G, "G")
        assign(self.D.params, snap.D, "D")
        assign(self.Gs.params, snap.Gs, "Gs")
        if snap.optimizer:
            self.g_opt.restore(self.g_names, snap.optimizer)
            self.d_opt.restore(self.d_names, snap.optimizer)
        self.pl_mean.assign(snap.state.get("pl_mean", 0.0))
        if self.ada is not None and self.cfg.aug == "ada":  # "fixed" keeps its own p
            self.ada.p.assign(snap.state.get("augment_p", 0.0))
        return float(snap.state["kimg"]), int(snap.state.get("step", 0))


def make_strategy(cfg: TrainConfig) -> tf.distribute.Strategy:
    """One device: the default strategy. Several (``--gpus N`` or ``--devices``):
    MirroredStrategy, gradients all-reduced every step."""
    devices = list(cfg.devices or ())
    if not devices and cfg.gpus > 1:
        gpus = tf.config.list_physical_devices("GPU")
        if len(gpus) < cfg.gpus:
            raise StageError(f"--gpus {cfg.gpus} but {len(gpus)} GPU(s) are visible")
        devices = [f"/gpu:{i}" for i in range(cfg.gpus)]
    if len(devices) <= 1:
        return tf.distribute.get_strategy()
    cpus = [d for d in devices if d.lower().startswith("/cpu:")]
    if len(cpus) > 1:  # split the CPU into logical devices (tests, or CPU-only hosts)
        physical = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                physical, [tf.config.LogicalDeviceConfiguration()] * len(cpus))
        except RuntimeError as exc:
            raise StageError(f"cannot split the CPU into {len(cpus)} devices: {exc}") from exc
    return tf.distribute.MirroredStrategy(devices)


def latest_snapshot(run_dir: Path) -> Path | None:
    """The furthest snapshot of a run, ours or NVIDIA-named, ordered by kimg."""
    snaps = [(kimg, p) for p in run_dir.glob("network-snapshot-*")
             if (kimg := name_kimg(p.name)) is not None]
    return max(snaps)[1] if snaps else None


GRID_MIN_PX = 512  # grids narrower than this are enlarged (nearest: pixels stay sharp)


def grid_latents(net: NetworkConfig, seed: int) -> np.ndarray:
    """The fakes grids' latents: 8×8 at small resolutions, where 16 say little; 4×4 above."""
    count = 64 if net.resolution <= 64 else 16
    return np.random.RandomState(seed).randn(count, net.z_dim).astype(np.float32)


def save_readable_grid(images: np.ndarray, path: Path) -> None:
    """A square grid of uint8 NHWC images, enlarged by a whole factor without smoothing
    to at least GRID_MIN_PX across (a 4×4 grid of 32 px images is unreadable)."""
    cols = math.ceil(math.sqrt(len(images)))
    width = cols * images.shape[2]
    scale = max(1, math.ceil(GRID_MIN_PX / width))
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    save_grid(list(images), path, cols=cols)


def _grid(G: Generator, z: np.ndarray, path: Path) -> None:  # noqa: N803
    imgs = G.synthesis(G.map(tf.constant(z)), noise_mode="const").numpy()
    save_readable_grid(np.clip(imgs * 127.5 + 128, 0, 255).astype(np.uint8), path)


def load_init(source: str, net: NetworkConfig, preset_name: str) -> Snapshot:
    """The network a fine-tuning run starts from: one of our snapshots or an NVIDIA
    .pkl, refused in one line when its architecture is not the preset's."""
    from stylegan_ops.generate import _build_snapshot

    path = Path(source)
    if not path.exists():
        raise StageError(f"--init {source}: no such snapshot or .pkl")
    if path.is_file():
        from stylegan_ops.legacy import load_pickle

        snap: Snapshot = _build_snapshot(load_pickle(path))
    else:
        snap = Snapshot.load(path)
        if not (snap.G and snap.D):
            raise StageError(f"--init {source}: the snapshot holds no G/D weights to "
                             f"fine-tune (only the sampling network Gs)")
    theirs, ours = snap.config.to_dict(), net.to_dict()
    differ = [f"{k} {theirs[k]} (preset {preset_name}: {ours[k]})"
              for k in ours if theirs.get(k) != ours[k]]
    if differ:
        raise StageError(f"--init {source}: the network does not match preset "
                         f"{preset_name}: {', '.join(differ)}")
    return snap


def run(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) into ``cfg.out``; returns where the final network is."""
    net = preset(cfg.config)
    path = level_file(cfg.data, net.resolution)  # a larger dataset serves its lower level
    init = load_init(cfg.init, net, cfg.config) if cfg.init else None
    scorer = _scorer(cfg, net)  # detectors and reference data checked before any training
    strategy = make_strategy(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    config = {"train": cfg.to_dict(), "network": net.to_dict()}
    if cfg.init:
        from stylegan_ops.generate import network_digest

        config["init"] = {"source": cfg.init, "sha256": network_digest(Path(cfg.init))}
    (cfg.out / "config.json").write_bytes(dump_json(config))
    trainer = Trainer(cfg, net, strategy)
    kimg, step = 0.0, 0
    resume = latest_snapshot(cfg.out) if cfg.resume == "auto" else (
        Path(cfg.resume) if cfg.resume else None)
    if resume is not None:
        kimg, step = trainer.restore(Snapshot.load(resume, need_training_state=True))
        log.info("resumed from %s at %g kimg", resume, kimg)
    elif cfg.resume and cfg.resume != "auto":
        raise StageError(f"no snapshot at {cfg.resume}")
    elif init is not None:  # a fine-tune's own snapshots win: --resume auto continues it
        trainer.init_from(init)
        log.info("initialised from %s", cfg.init)
    nimg = round(kimg * 1000)

    grid_z = grid_latents(net, cfg.seed)
    dataset = image_dataset(path, cfg.batch, cfg.mirror, cfg.seed + step)
    reals_iter = iter(trainer.distribute(dataset))
    if not (cfg.out / "reals.png").exists():
        batches = iter(dataset)  # one iterator: a fresh one per batch repeats the first
        first = np.concatenate([next(batches).numpy()
                                for _ in range(math.ceil(len(grid_z) / cfg.batch))])
        save_readable_grid(np.clip(first[:len(grid_z)] * 127.5 + 128, 0, 255
                                   ).astype(np.uint8), cfg.out / "reals.png")
        _grid(trainer.Gs, grid_z, cfg.out / "fakes_init.png")
    writer = tf.summary.create_file_writer(str(cfg.out / "tensorboard"))
    started = time.monotonic()
    tick_start, tick_nimg0 = time.monotonic(), nimg
    maintenance_sec = 0.0  # the last tick's stats, snapshot, grid and metrics
    ticks = 0
    last_snapshot = latest_snapshot(cfg.out)
    total = round(cfg.total_kimg * 1000)
    with (cfg.out / "stats.jsonl").open("a") as stats_file:
        while nimg < total:
            reals = next(reals_iter)
            stats = trainer.d_step(reals)
            if step % cfg.r1_interval == 0:
                stats.update(trainer.d_reg_step(reals))
            stats.update(trainer.g_step())
            if step % cfg.pl_interval == 0 and trainer.pl_weight > 0:  # 0: nothing to add
                stats.update(trainer.g_reg_step())
            beta = cfg.ema_beta(nimg)  # from the images shown before this step
            trainer.ema(tf.constant(beta, tf.float32))
            if cfg.aug == "ada" and trainer.ada is not None and step % trainer.ada.interval == 0:
                trainer.ada.update(cfg.batch)
            step += 1
            nimg += cfg.batch
            kimg = nimg / 1000
            done = nimg >= total
            if nimg - tick_nimg0 >= cfg.tick_kimg * 1000 or done:
                ticks += 1
                tock = time.monotonic()
                sec = tock - tick_start
                shown = (nimg - tick_nimg0) / 1000
                row = {"kimg": kimg, "step": step,
                       **{k: float(v) for k, v in stats.items()},
                       "sec_per_kimg": sec / max(shown, 1e-9),
                       "img_per_sec": shown * 1000 / max(sec, 1e-9),
                       "augment_p": float(trainer.ada.p.numpy()) if trainer.ada else 0.0,
                       "ema_beta": beta,  # the last step's
                       "maintenance_sec": maintenance_sec,
                       "peak_memory_mb": _peak_memory_mb()}
                stats_file.write(json.dumps(_json_row(row), allow_nan=False) + "\n")
                stats_file.flush()
                with writer.as_default(step=step):
                    for k, v in row.items():
                        tf.summary.scalar(k, v)
                print(f"kimg {kimg:8.3f}  " + "  ".join(
                    f"{k} {v:.4g}" for k, v in row.items() if k != "kimg"), file=sys.stderr)
                if ticks % cfg.snapshot_ticks == 0 or done:
                    last_snapshot = cfg.out / snapshot_name(nimg)
                    snap = trainer.snapshot(kimg, step)
                    _replace(snap, last_snapshot)
                    _grid(trainer.Gs, grid_z, cfg.out / fakes_name(nimg))
                    if scorer is not None:
                        scorer.score(trainer.Gs, snap, last_snapshot, kimg)
                tick_start, tick_nimg0 = time.monotonic(), nimg
                # outside sec_per_kimg, which times the steps alone, but still reported:
                # with --metrics or --snapshot-ticks 1 it is a large share of the wall time
                maintenance_sec = tick_start - tock
    writer.close()
    final = cfg.out / "network-final"
    _replace(trainer.snapshot(kimg, step), final)
    return TrainResult(str(cfg.out), round(kimg, 3), str(last_snapshot or final), str(final),
                       round(time.monotonic() - started, 1))


class _Scorer:
    """``--metrics`` at every snapshot, and ``--keep-best``'s network-best + best.json."""

    def __init__(self, cfg: TrainConfig, net: NetworkConfig) -> None:
        from stylegan_ops.metrics.evaluate import TrainingMetrics

        self.cfg = cfg
        self.metrics = TrainingMetrics(cfg.data, cfg.metrics, cfg.out,
                                       num_images=cfg.metrics_images, seed=cfg.seed,
                                       reference_data=cfg.reference_data,
                                       resolution=net.resolution)
        self.best: float | None = None
        if cfg.keep_best is not None:
            self.key, self.lower = TrainingMetrics.headline(cfg.keep_best)
            best = cfg.out / "best.json"
            if best.is_file() and (cfg.out / "network-best").is_dir():  # a resumed run
                value = json.loads(best.read_text()).get("value")
                self.best = float(value) if isinstance(value, int | float) else None

    def score(self, G: Generator, snap: Snapshot, path: Path, kimg: float) -> None:  # noqa: N803
        results = self.metrics.evaluate(G, path, kimg)
        if self.cfg.keep_best is None:
            return
        value = _headline_value(results, self.cfg.keep_best, self.key)
        if value is None:
            return
        if self.best is None or (value < self.best if self.lower else value > self.best):
            self.best = value
            _replace(snap, self.cfg.out / "network-best")
            write_atomic(self.cfg.out / "best.json", dump_json({
                "metric": self.key, "value": value, "kimg": kimg, "snapshot": path.name}))
            log.info("best %s so far: %g at %s", self.key, value, path.name)


def _headline_value(results: dict[str, dict[str, float | None]], metric: str,
                    key: str) -> float | None:
    """The ranked value among one evaluation's results (a stand-in detector's score
    carries the @stand-in suffix on both the metric and the key)."""
    for recorded, values in results.items():
        if recorded.split("@")[0] == metric:
            for k, v in values.items():
                if k.split("@")[0] == key:
                    return v
    return None


def _scorer(cfg: TrainConfig, net: NetworkConfig) -> _Scorer | None:
    return _Scorer(cfg, net) if cfg.metrics else None


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A stats row as JSON can hold it: a diverged loss (NaN, ±inf) becomes null and is
    named in ``non_finite``, so stats.jsonl stays valid JSON and the divergence is visible."""
    bad = sorted(k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v))
    if not bad:
        return row
    log.warning("non-finite %s at kimg %s: training has diverged", ", ".join(bad), row["kimg"])
    return {**{k: (None if k in bad else v) for k, v in row.items()}, "non_finite": bad}


def _replace(snap: Snapshot, target: Path) -> None:
    """Save a snapshot, atomically replacing one of the same name (several per kimg)."""
    fresh = temp_sibling(target)
    snap.save(fresh)
    if target.exists():
        old = temp_sibling(target)
        target.rename(old)
        fresh.rename(target)
        shutil.rmtree(old)
    else:
        fresh.rename(target)


def _peak_memory_mb() -> float:
    if tf.config.list_physical_devices("GPU"):
        return float(tf.config.experimental.get_memory_info("GPU:0")["peak"]) / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

