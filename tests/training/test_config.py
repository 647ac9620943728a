"""TrainConfig refuses every non-finite or out-of-range number for library callers (NaN
passes `<=` tests, so each bound must be checked as what has to hold), and a diverged
loss never makes stats.jsonl invalid JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from stylegan_ops.errors import StageError
from stylegan_ops.training.loop import TrainConfig, _json_row


@pytest.mark.parametrize(("change", "message"), [
    pytest.param({"total_kimg": math.nan}, "total-kimg", id="total-kimg-nan"),
    pytest.param({"total_kimg": math.inf}, "total-kimg", id="total-kimg-inf"),
    pytest.param({"total_kimg": 0}, "total-kimg", id="total-kimg-zero"),
    pytest.param({"tick_kimg": 0.0}, "tick-kimg", id="tick-kimg-zero"),
    pytest.param({"tick_kimg": math.nan}, "tick-kimg", id="tick-kimg-nan"),
    pytest.param({"snapshot_ticks": 0}, "snapshot-ticks", id="snapshot-ticks-zero"),
    pytest.param({"snapshot_ticks": 1.5}, "snapshot-ticks", id="snapshot-ticks-float"),
    pytest.param({"gamma": -math.inf}, "gamma", id="gamma-inf"),
    pytest.param({"lr": math.nan}, "lr", id="lr-nan"),
    pytest.param({"betas": (0.0, 1.0)}, "betas", id="beta-one"),
    pytest.param({"ada_target": 0}, "ada-target", id="ada-target-zero"),
    pytest.param({"ada_kimg": 0}, "ada-kimg", id="ada-kimg-zero"),
    pytest.param({"ada_kimg": math.nan}, "ada-kimg", id="ada-kimg-nan"),
    pytest.param({"style_mixing": math.nan}, "style-mixing", id="mixing-nan"),
    pytest.param({"ema_kimg": math.inf}, "ema-kimg", id="ema-inf"),
    pytest.param({"r1_interval": 0}, "r1-interval", id="r1-zero"),
    pytest.param({"pl_interval": 0}, "pl-interval", id="pl-zero"),
    pytest.param({"pl_batch_shrink": 0}, "pl-batch-shrink", id="shrink-zero"),
    pytest.param({"batch": 0}, "batch", id="batch-zero"),
    pytest.param({"gpus": 0}, "gpus", id="gpus-zero"),
    pytest.param({"seed": -1}, "seed", id="seed-negative"),
    pytest.param({"seed": 2**40}, "seed", id="seed-huge"),
    pytest.param({"total_kimg": True}, "total-kimg", id="bool-is-not-a-number"),
    pytest.param({"devices": ()}, "devices", id="no-devices"),
    pytest.param({"devices": ("/gpu:0", "/gpu:0")}, "twice", id="device-twice"),
    pytest.param({"devices": ("gpu0", "/gpu:1")}, "devices", id="device-junk"),
    pytest.param({"out": "afile"}, "is a file", id="out-a-file"),
])
def test_config_refuses(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    (tmp_path / "afile").write_text("x")
    if change.get("out") == "afile":
        change = {"out": tmp_path / "afile"}
    args = {"data": tmp_path, "out": tmp_path / "run", "config": "small", "batch": 8,
            **change}
    with pytest.raises(StageError, match=message):
        TrainConfig(**args)


def test_config_takes_the_defaults(tmp_path: Path) -> None:
    TrainConfig(tmp_path, tmp_path / "run", "small", batch=8, devices=("/cpu:0", "/cpu:1"))


def test_a_diverged_loss_is_null_and_named() -> None:
    row = {"kimg": 1.0, "loss_d": math.nan, "loss_g": math.inf, "step": 3}
    text = json.dumps(_json_row(row), allow_nan=False)
    assert json.loads(text) == {"kimg": 1.0, "loss_d": None, "loss_g": None, "step": 3,
                                "non_finite": ["loss_d", "loss_g"]}
    assert _json_row({"kimg": 1.0}) == {"kimg": 1.0}
