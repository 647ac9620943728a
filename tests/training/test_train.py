"""Training on the small preset: artefacts, crash and resume, ADA, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from stylegan_ops.data.prepare import PrepareConfig
from stylegan_ops.data.prepare import run as prepare
from stylegan_ops.networks.snapshot import Snapshot
from stylegan_ops.training.loop import latest_snapshot
from tests.conftest import cli

TRAIN = ["--config", "small", "--batch", "8"]


@pytest.fixture(scope="module")
def cats32(sample_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train") / "cats32"
    prepare(PrepareConfig("lsun", sample_lmdb, out, 32, max_images=60, workers=2))
    return out


def train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stylegan_ops.cli", "train", "--data", str(data),
            "--out", str(out), *TRAIN, *extra]


def test_short_run_writes_every_artefact(cats32: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(train_cmd(cats32, out, "--total-kimg", "0.08", "--tick-kimg", "0.016",
                                    "--snapshot-ticks", "2", "--mirror", "--pl-weight", "2"),
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["kimg"] == pytest.approx(0.08)
    for name in ("config.json", "stats.jsonl", "reals.png", "fakes_init.png",
                 "fakes000000.032.png", "fakes000000.064.png", "fakes000000.080.png"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    assert {"kimg", "loss_d", "loss_g", "sec_per_kimg", "img_per_sec",
            "peak_memory_mb"} <= set(rows[-1])
    for snap in ("network-snapshot-000000.080", "network-final"):
        files = {p.name for p in (out / snap).iterdir()}
        assert {"config.json", "G.npz", "D.npz", "Gs.npz", "optimizer.npz",
                "state.json"} <= files
    final = Snapshot.load(out / "network-final", need_training_state=True)
    assert final.state["kimg"] == pytest.approx(0.08) and final.state["step"] == 10
    assert float(final.optimizer["G/t"]) == 10 + 3  # 10 main steps + 3 lazy PL steps
    config = json.loads((out / "config.json").read_text())["train"]
    assert config["pl_weight"] == 2.0 and "pl_weight" not in config["auto"]
    assert not np.array_equal(final.G["G_mapping/Dense0/weight"],
                              final.Gs["G_mapping/Dense0/weight"])  # EMA differs from G


def test_killed_run_resumes_from_its_last_snapshot(cats32: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(cats32, out, "--total-kimg", "5", "--tick-kimg", "0.016",
                                      "--snapshot-ticks", "1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        stats = out / "stats.jsonl"
        if stats.exists() and len(stats.read_text().splitlines()) >= 4:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    last = latest_snapshot(out)
    assert last is not None
    snap = Snapshot.load(last, need_training_state=True)
    killed_at = snap.state["kimg"]
    assert killed_at > 0
    resumed = subprocess.run(train_cmd(cats32, out, "--total-kimg", str(killed_at + 0.032),
                                       "--tick-kimg", "0.016", "--resume", "auto"),
                             capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    after = [r["kimg"] for r in rows if r["kimg"] > killed_at]
    assert after and min(after) == pytest.approx(killed_at + 0.016)  # kimg went on
    final = Snapshot.load(out / "network-final", need_training_state=True)
    assert final.state["step"] == snap.state["step"] + 4
    assert float(final.optimizer["D/t"]) > float(snap.optimizer["D/t"])  # optimizer kept


def test_ada_run_reports_augment_probability(cats32: Path, tmp_path: Path) -> None:
    res = cli("train", "--data", cats32, "--out", tmp_path / "ada", *TRAIN, "--aug", "ada",
              "--total-kimg", "0.064", "--tick-kimg", "0.032")
    assert res.exit_code == 0, res.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "ada/stats.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["augment_p"] <= 1.0 for r in rows)


def test_ada_kimg_sets_how_fast_p_moves(cats32: Path, tmp_path: Path) -> None:
    # 8 steps of 8 images, p adjusted at steps 0 and 4: with --ada-kimg 0.064 each
    # adjustment moves p by 8 * 4 / 64 = 0.5, so from 0.5 it can only land on 0, 0.5 or 1
    # (ADA's default speed, 500 kimg, would leave it within 1.3e-4 of 0.5, on none of them)
    res = cli("train", "--data", cats32, "--out", tmp_path / "ada", *TRAIN, "--aug", "ada",
              "--p", "0.5", "--ada-kimg", "0.064", "--total-kimg", "0.064",
              "--tick-kimg", "0.064")
    assert res.exit_code == 0, res.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "ada/stats.jsonl").read_text().splitlines()]
    assert rows[-1]["augment_p"] in (0.0, 0.5, 1.0)
    config = json.loads((tmp_path / "ada/config.json").read_text())
    assert config["train"]["ada_kimg"] == 0.064


def test_ada_controller_follows_the_sign_of_real_logits() -> None:
    from stylegan_ops.training.augment import AdaController

    ada = AdaController(target=0.6, interval=4, speed_kimg=1.0)  # 32 img → p += 0.032
    ada.accumulate(tf.constant([1.0, 2.0, 0.5, -1.0, 3.0]))  # r_t = 0.6: no move
    ada.update(batch=8)
    assert float(ada.p) == 0.0
    ada.accumulate(tf.ones([8]))  # overfitting D: more augmentation
    ada.update(batch=8)
    assert float(ada.p) == pytest.approx(0.032)
    for _ in range(3):
        ada.accumulate(-tf.ones([8]))
        ada.update(batch=8)
    assert float(ada.p) == 0.0  # clamped at 0


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["--data", "/nonexistent"], "not a dataset directory", id="missing-data"),
    pytest.param(["--config", "config-f"], "is 32 px but the network makes 256 px images",
                 id="resolution-mismatch"),
    pytest.param(["--gpus", "3"], "batch 8 is not divisible by gpus 3", id="batch-gpus"),
    pytest.param(["--config", "config-z"], "unknown config 'config-z'", id="unknown-config"),
])
def test_bad_input_exits_2_naming_the_value(cats32: Path, tmp_path: Path, args: list[str],
                                            message: str) -> None:
    base = {"--data": str(cats32), "--config": "small", "--gpus": "1"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    flat = [x for kv in base.items() for x in kv]
    res = cli("train", *flat, "--out", tmp_path / "o", "--batch", "8", "--total-kimg", "0.01")
    assert res.exit_code == 2
    assert message in res.stderr


def test_mirrored_strategy_over_two_devices(cats32: Path, tmp_path: Path) -> None:
    """--devices runs MirroredStrategy: here on two logical CPUs, as on GPUs."""
    out = tmp_path / "multi"
    proc = subprocess.run(train_cmd(cats32, out, "--total-kimg", "0.032", "--tick-kimg",
                                    "0.016", "--devices", "/cpu:0,/cpu:1", "--aug", "ada"),
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = Snapshot.load(out / "network-final", need_training_state=True)
    assert final.state["step"] == 4 and float(final.optimizer["D/t"]) == 4 + 1
    assert all(np.isfinite(v).all() for v in final.G.values())
    bad = cli("train", "--data", cats32, "--out", tmp_path / "o", *TRAIN, "--devices",
              "/cpu:0,/cpu:1,/cpu:2", "--total-kimg", "0.01")
    assert bad.exit_code == 2 and "not divisible by the 3 devices" in bad.stderr


def test_mixed_precision_run_keeps_float32_weights(cats32: Path, tmp_path: Path) -> None:
    res = cli("train", "--data", cats32, "--out", tmp_path / "mp", *TRAIN,
              "--mixed-precision", "--total-kimg", "0.016", "--tick-kimg", "0.016")
    assert res.exit_code == 0, res.stderr[-2000:]
    final = Snapshot.load(tmp_path / "mp/network-final", need_training_state=True)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in final.G.values())
    assert float(final.optimizer["G/loss_scale"]) >= 1.0


def test_loss_scaling_skips_overflowing_steps() -> None:
    from stylegan_ops.training.loop import Adam

    var = tf.Variable([1.0, 2.0])
    opt = Adam("T", [var], lr=0.1, betas=(0.0, 0.99), eps=1e-8, interval=None,
               loss_scale=True)
    scale = float(opt.scale.numpy())
    opt.apply([tf.constant([np.inf, 1.0])])
    np.testing.assert_array_equal(var.numpy(), [1.0, 2.0])  # skipped
    assert float(opt.scale.numpy()) == scale / 2 and float(opt.t.numpy()) == 0
    opt.apply([tf.constant([1.0, -1.0]) * opt.scale])
    assert float(opt.t.numpy()) == 1 and not np.allclose(var.numpy(), [1.0, 2.0])


def test_float16_synthesis_matches_float32() -> None:
    from stylegan_ops.networks.generator import Generator
    from stylegan_ops.networks.presets import preset

    g = Generator(preset("small"))
    ws = g.map(tf.random.normal([2, g.cfg.z_dim], seed=7))
    full = g.synthesis(ws, noise_mode="none").numpy()
    half = g.synthesis(tf.cast(ws, tf.float16), noise_mode="none").numpy().astype(np.float32)
    assert np.abs(full - half).max() < 0.05
