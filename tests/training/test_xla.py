"""--xla: the XLA-compiled training steps compute what the plain tf.function steps compute,
the flag reaches config.json, and several devices with --xla are refused in one line."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from stylegan_ops.data.prepare import PrepareConfig
from stylegan_ops.data.prepare import run as prepare
from stylegan_ops.errors import StageError
from stylegan_ops.networks.presets import preset
from stylegan_ops.training.dataset import image_dataset, level_file
from stylegan_ops.training.loop import TrainConfig, Trainer
from tests.conftest import cli

BATCH = 8


@pytest.fixture(scope="module")
def cats32(sample_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("xla") / "cats32"
    prepare(PrepareConfig("lsun", sample_lmdb, out, 32, max_images=60, workers=2))
    return out


class FixedDraws:
    """Stands in for ``tf.random.normal``: the k-th draw traced is a fixed function of its
    shape and k, built from integer ops (exact in XLA and in TensorFlow's kernels alike)
    and scaled to unit variance."""

    def __init__(self) -> None:
        self.count: Iterator[int] = itertools.count()

    def reset(self) -> None:
        self.count = itertools.count()

    def __call__(self, shape: Any, mean: float = 0.0, stddev: float = 1.0,
                 dtype: Any = tf.float32, **_: Any) -> tf.Tensor:
        salt = next(self.count)
        shape = tf.cast(tf.convert_to_tensor(shape), tf.int64)
        i = tf.range(tf.reduce_prod(shape), dtype=tf.int64)
        h = (i * 40503 + salt * 7919 + 17) % 65536
        u = (tf.cast(h, tf.float32) + 0.5) / 65536.0 - 0.5  # uniform, variance 1/12
        x = tf.reshape(u * np.sqrt(12.0), shape) * stddev + mean
        return tf.cast(x, dtype)


def run_steps(cfg: TrainConfig, reals: tf.Tensor) -> tuple[Trainer, dict[str, float]]:
    trainer = Trainer(cfg, preset(cfg.config))
    stats = {**trainer.d_step(reals), **trainer.d_reg_step(reals), **trainer.g_step(),
             **trainer.g_reg_step()}
    trainer.ema(tf.constant(0.9, tf.float32))
    return trainer, {k: float(v) for k, v in stats.items()}


@pytest.mark.slow
def test_compiled_steps_agree_with_the_plain_steps(cats32: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """One d_step, d_reg_step, g_step, g_reg_step and ema, with and without XLA, from the
    same seed and the same reals: losses, gradients and updated weights agree.

    The random draws inside the steps are replaced by fixed ones. Honestly so: under XLA,
    TensorFlow's stateful ops (``tf.random.normal``) ignore the seeds, and even the
    stateless ones draw other numbers than the plain kernels (measured on TF 2.21's CPU:
    the same seed and algorithm, different values), so with real draws the two steps see
    different latents and noise and nothing could be compared but statistics. With fixed
    draws both compute the same function of the same inputs, and what is checked is XLA's
    arithmetic against the plain kernels'."""
    draws = FixedDraws()
    monkeypatch.setattr(tf.random, "normal", draws)
    path = level_file(cats32, 32)
    reals = next(iter(image_dataset(path, BATCH, False, seed=0)))
    base = {"data": cats32, "config": "small", "batch": BATCH, "pl_weight": 2.0}
    plain, plain_stats = run_steps(TrainConfig(out=tmp_path / "a", **base), reals)
    draws.reset()  # the compiled trainer traces the same draws in the same order
    xla, xla_stats = run_steps(TrainConfig(out=tmp_path / "b", xla=True, **base), reals)

    assert plain_stats.keys() == xla_stats.keys()
    for key, value in plain_stats.items():
        assert xla_stats[key] == pytest.approx(value, rel=1e-3, abs=1e-5), key
    # β1 = 0: Adam's first moment after the steps is the last gradient itself; the
    # differences allowed are float32 rounding in a different order of summation
    for name in ("G", "D"):
        opt_a, opt_b = getattr(plain, f"{name.lower()}_opt"), getattr(xla, f"{name.lower()}_opt")
        for m_a, m_b in zip(opt_a.m, opt_b.m, strict=True):
            a, b = m_a.numpy(), m_b.numpy()
            np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4 * max(np.abs(a).max(), 1e-8))
    # Adam's first step moves each weight by about lr·sign(gradient): a gradient within
    # rounding of zero may flip its sign, so a weight may differ by up to 2·lr, and only
    # where the gradient is that close to zero; every other weight agrees to a few float32
    # ulps of its size (the mapping's weights are stored unscaled, ~400: an ulp is 3e-5,
    # and XLA may arrange the EMA's arithmetic otherwise)
    lr = plain.cfg.lr
    for attr in ("G", "D", "Gs"):
        net_a, net_b = getattr(plain, attr).params, getattr(xla, attr).params
        for key, var in net_a.items():
            a, b = var.numpy(), net_b[key].numpy()
            assert np.abs(a - b).max() <= 2.01 * lr, (attr, key, np.abs(a - b).max())
            off = np.mean(~np.isclose(b, a, rtol=1e-6, atol=1e-5))
            assert off <= 1e-3, (attr, key, off)


@pytest.mark.parametrize("change", [
    pytest.param({"gpus": 2}, id="gpus"),
    pytest.param({"devices": ("/cpu:0", "/cpu:1")}, id="devices"),
])
def test_xla_with_several_devices_is_refused(tmp_path: Path, change: dict[str, Any]) -> None:
    with pytest.raises(StageError, match="--xla runs on one device"):
        TrainConfig(tmp_path, tmp_path / "run", "small", batch=8, xla=True, **change)


def test_cli_refuses_xla_on_two_devices_in_one_line(cats32: Path, tmp_path: Path) -> None:
    res = cli("train", "--data", cats32, "--out", tmp_path / "o", "--config", "small",
              "--batch", "8", "--total-kimg", "0.01", "--xla", "--devices", "/cpu:0,/cpu:1")
    assert res.exit_code == 2
    assert "--xla runs on one device; got --devices /cpu:0,/cpu:1" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_xla_run_trains_and_records_the_flag(cats32: Path, tmp_path: Path) -> None:
    res = cli("train", "--data", cats32, "--out", tmp_path / "run", "--config", "small",
              "--batch", "8", "--total-kimg", "0.016", "--tick-kimg", "0.016", "--xla")
    assert res.exit_code == 0, res.stderr[-2000:]
    assert json.loads((tmp_path / "run/config.json").read_text())["train"]["xla"] is True
    rows = [json.loads(x) for x in (tmp_path / "run/stats.jsonl").read_text().splitlines()]
    assert rows and all(np.isfinite(rows[-1][k]) for k in ("loss_d", "loss_g"))
    plain = TrainConfig(cats32, tmp_path / "plain", "small", batch=8).to_dict()
    assert plain["xla"] is False  # the default, written as run
