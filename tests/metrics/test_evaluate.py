"""evaluate: records appended per metric, deterministic, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stylegan_ops.data.prepare import PrepareConfig
from stylegan_ops.data.prepare import run as prepare
from stylegan_ops.networks.generator import Generator
from stylegan_ops.networks.presets import preset
from stylegan_ops.networks.snapshot import Snapshot
from tests.conftest import cli


@pytest.fixture(scope="module")
def setup(sample_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    data = root / "cats32"
    prepare(PrepareConfig("lsun", sample_lmdb, data, 32, max_images=40))
    g = Generator(preset("small"))
    arrays = {k: v.numpy() for k, v in g.params.items()}
    Snapshot(preset("small"), arrays, {}, arrays, {"kimg": 0}, {}).save(root / "net")
    return data, root / "net"


def test_swd_records_are_appended_and_reproducible(setup: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    data, net = setup
    for _ in range(2):
        res = cli("evaluate", "--network", net, "--data", data, "--metrics", "swd",
                  "--num-images", 48, "--out", tmp_path)
        assert res.exit_code == 0, res.stderr
    lines = [json.loads(x) for x in (tmp_path / "metric-swd.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["results"] == lines[1]["results"]
    rec = lines[0]
    assert rec["detector"] == "none" and rec["num_images"] == 48
    assert rec["dataset_sha256"] and rec["results"]["swd_avg"] > 0
    assert set(rec["results"]) == {"swd32", "swd16", "swd_avg"}


@pytest.mark.parametrize(("metrics", "message"), [
    pytest.param("fid50k", "unknown metric(s) fid50k; available: swd", id="not-yet"),
    pytest.param("swd,nope", "unknown metric(s) nope", id="typo"),
])
def test_unknown_metrics_exit_2(setup: tuple[Path, Path], tmp_path: Path, metrics: str,
                                message: str) -> None:
    data, net = setup
    res = cli("evaluate", "--network", net, "--data", data, "--metrics", metrics,
              "--out", tmp_path)
    assert res.exit_code == 2 and message in res.stderr
    assert not list(tmp_path.iterdir())
