"""benchmarks/gpu_suite.sh: the GPU suite runs to completion on CPUs with --smoke, writes its
JSON and Markdown table, and a failed measurement is recorded while the rest still run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEASUREMENTS = {"generate", "inception", "fid50k", "train_fp32", "train_mp", "peak_memory_fp32",
                "peak_memory_mp"}
EXPECTED = MEASUREMENTS | {f"{m}_xla" if m.startswith(("train", "peak")) else f"{m} --xla"
                           for m in MEASUREMENTS}


def check_value(row: dict[str, Any]) -> None:
    if row["value"] is None:
        assert row["name"].startswith("peak_memory") and row["reason"], row
        assert "no GPU" in row["reason"]
    else:
        assert isinstance(row["value"], float) and math.isfinite(row["value"]), row
        assert row["value"] > 0, row


@pytest.mark.slow
def test_smoke_suite_writes_json_and_table(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    env = {**os.environ, "STYLEGAN_CACHE": str(tmp_path / "cache"),  # the stand-in Inception
           "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_suite.sh"), "--smoke", str(out)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "gpu_suite.json").read_text())
    assert doc["smoke"] is True and doc["failed"] == []
    assert doc["tensorflow"] and doc["device"].startswith("CPU")
    rows = {r["name"]: r for r in doc["measurements"]}
    assert set(rows) == EXPECTED
    for row in rows.values():
        assert row["error"] is None, row
        check_value(row)
    assert "stand-in" in rows["inception"]["what"]
    table = (out / "gpu_suite.md").read_text()
    assert "| measurement | value | unit | target | met? |" in table
    assert f"TensorFlow: {doc['tensorflow']}" in table and doc["device"] in table
    for row in rows.values():
        assert f"| {row['what']} |" in table


def test_a_failed_measurement_is_recorded_and_the_rest_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_suite
    import metrics_throughput
    import train_throughput

    def bare(*args: Any, mixed_precision: bool = False, **kw: Any) -> float:
        if mixed_precision:
            raise RuntimeError("out of memory (injected)")
        return 100.0

    monkeypatch.setattr(train_throughput, "dataset", lambda work, res, count: work)
    monkeypatch.setattr(train_throughput, "bare", bare)
    monkeypatch.setattr(metrics_throughput, "measure", lambda *a: {
        "inception_img_s": 50.0, "generate_img_s": 200.0, "fid_img_s": 40.0,
        "fid50k_s": 1250.0, "detector": "fake"})
    monkeypatch.setattr(sys, "argv", ["gpu_suite.py", "--smoke", str(tmp_path)])
    assert gpu_suite.main() == 1
    doc = json.loads((tmp_path / "gpu_suite.json").read_text())
    rows = {r["name"]: r for r in doc["measurements"]}
    assert set(rows) == EXPECTED
    assert sorted(doc["failed"]) == ["peak_memory_mp", "peak_memory_mp_xla", "train_mp",
                                     "train_mp_xla"]
    assert rows["train_mp"]["value"] is None
    assert "RuntimeError: out of memory (injected)" in rows["train_mp"]["error"]
    assert rows["train_fp32_xla"]["value"] == pytest.approx(10.0)  # 1000 / 100 img/s
    assert "out of memory (injected)" in (tmp_path / "gpu_suite.md").read_text()
