"""Fine-tuning (--init, --freeze-d), the preset-aware defaults (auto γ, EMA ramp-up),
fixed-p augmentation, metrics at every snapshot with --keep-best, and grid names/sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylegan_ops.data.prepare import PrepareConfig
from stylegan_ops.data.prepare import run as prepare
from stylegan_ops.networks.discriminator import Discriminator
from stylegan_ops.networks.generator import Generator
from stylegan_ops.networks.presets import preset
from stylegan_ops.networks.snapshot import Snapshot
from tests.conftest import cli
from tests.netfiles import make_pickle, nvidia_network_class

TRAIN = ("--config", "small", "--batch", "8", "--tick-kimg", "0.016")


@pytest.fixture(scope="module")
def cats32(sample_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finetune") / "cats32"
    prepare(PrepareConfig("lsun", sample_lmdb, out, 32, max_images=40, workers=2))
    return out


@pytest.fixture(scope="module")
def base(cats32: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short run whose network-final the fine-tunes start from."""
    out = tmp_path_factory.mktemp("finetune") / "base"
    res = cli("train", "--data", cats32, "--out", out, *TRAIN, "--total-kimg", "0.032",
              "--seed", "5")
    assert res.exit_code == 0, res.stderr[-2000:]
    return out / "network-final"


def train(cats32: Path, out: Path, *extra: str) -> dict[str, object]:
    res = cli("train", "--data", cats32, "--out", out, *TRAIN, *extra)
    assert res.exit_code == 0, res.stderr[-2000:]
    return json.loads(res.stdout.splitlines()[-1])


def test_init_starts_every_network_from_net_with_fresh_state(cats32: Path, base: Path,
                                                              tmp_path: Path) -> None:
    from stylegan_ops.generate import network_digest
    from stylegan_ops.training.loop import _grid, grid_latents

    out = tmp_path / "tune"
    train(cats32, out, "--init", str(base), "--total-kimg", "0.016", "--freeze-d", "1")
    config = json.loads((out / "config.json").read_text())
    assert config["init"] == {"source": str(base), "sha256": network_digest(base)}
    assert config["train"]["freeze_d"] == 1
    # the first fakes grid is the base's Gs exactly: the EMA copy started from NET
    g = Generator(preset("small"))
    for name, var in g.params.items():
        var.assign(Snapshot.load(base).Gs[name])
    _grid(g, grid_latents(preset("small"), 0), tmp_path / "expected.png")
    assert (out / "fakes_init.png").read_bytes() == (tmp_path / "expected.png").read_bytes()
    start, final = Snapshot.load(base), Snapshot.load(out / "network-final")
    assert final.state["kimg"] == pytest.approx(0.016) and final.state["step"] == 2  # from 0
    assert float(final.optimizer["D/t"]) == 2 + 1  # fresh Adam: 2 steps + 1 lazy R1 step
    # FreezeD: the top block and FromRGB are the base's; the rest of D trained on
    frozen = Discriminator(preset("small")).frozen(1)
    assert frozen == {n for n in final.D if n.startswith("32x32/")}
    for name, value in final.D.items():
        same = np.array_equal(value, start.D[name])
        assert same == (name in frozen), name
    assert not any(k.startswith("D/m/32x32") for k in final.optimizer)


def test_init_from_an_nvidia_pickle_takes_its_weights(cats32: Path, tmp_path: Path) -> None:
    with nvidia_network_class() as network_cls:
        gs, pkl = make_pickle(network_cls, tmp_path / "small.pkl")
    out = tmp_path / "tune"
    # ema-kimg 0 would copy G; a huge half-life keeps Gs ≈ the pickle's Gs for 2 steps
    train(cats32, out, "--init", str(pkl), "--total-kimg", "0.016", "--ema-kimg", "1e9",
          "--ema-rampup", "0")
    final = Snapshot.load(out / "network-final")
    np.testing.assert_allclose(final.Gs["G_mapping/Dense0/weight"], gs["G_mapping/Dense0/weight"],
                               atol=1e-6)
    # the tracked mean w starts at the pickle's (a fresh network's is 0) and moves by
    # 0.5% per G step toward the batch means
    assert np.abs(gs["dlatent_avg"]).max() > 0.3
    np.testing.assert_allclose(final.Gs["dlatent_avg"], gs["dlatent_avg"], atol=0.05)


def mismatched(tmp_path: Path, **change: int) -> Path:
    cfg = preset("small", **change)
    g, d = Generator(cfg), Discriminator(cfg)
    arrays = {k: v.numpy() for k, v in g.params.items()}
    out = tmp_path / "other"
    Snapshot(cfg, arrays, {k: v.numpy() for k, v in d.params.items()}, arrays,
             {"kimg": 1.0}, {}).save(out)
    return out


@pytest.mark.parametrize(("change", "message"), [
    pytest.param({"resolution": 64}, "resolution 64 (preset small: 32)", id="resolution"),
    pytest.param({"fmap_base": 1024}, "fmap_base 1024 (preset small: 512)", id="channels"),
    pytest.param({"mapping_layers": 3}, "mapping_layers 3 (preset small: 2)", id="mapping"),
])
def test_an_init_network_of_another_architecture_is_refused(cats32: Path, tmp_path: Path,
                                                            change: dict[str, int],
                                                            message: str) -> None:
    net = mismatched(tmp_path, **change)
    res = cli("train", "--data", cats32, "--out", tmp_path / "run", *TRAIN,
              "--total-kimg", "0.016", "--init", net)
    assert res.exit_code == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(net) in lines[0], lines
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["--freeze-d", "4"], "freeze-d must be an integer in 0..3", id="freeze-d"),
    pytest.param(["--init", "/nonexistent/net"], "/nonexistent/net", id="init-missing"),
    pytest.param(["--keep-best", "swd"], "keep-best 'swd' is not one of --metrics",
                 id="keep-best-without-metrics"),
    pytest.param(["--metrics", "fid"], "unknown metric(s) fid", id="metric"),
    pytest.param(["--p", "1.5"], "1.5", id="p"),
    pytest.param(["--ema-rampup", "-1"], "-1", id="ema-rampup"),
    pytest.param(["--pl-weight", "-1"], "-1", id="pl-weight"),
    pytest.param(["--style-mixing", "1.5"], "1.5", id="style-mixing"),
    pytest.param(["--ada-kimg", "0"], "ada-kimg", id="ada-kimg"),
])
def test_bad_training_options_exit_2_naming_the_value(cats32: Path, tmp_path: Path,
                                                      args: list[str], message: str) -> None:
    res = cli("train", "--data", cats32, "--out", tmp_path / "run", *TRAIN,
              "--total-kimg", "0.016", *args)
    assert res.exit_code == 2, res.stderr[-2000:]
    assert message in res.stderr and not (tmp_path / "run").exists(), res.stderr


def test_small_preset_defaults_names_grids_and_metrics(cats32: Path, tmp_path: Path) -> None:
    """One run checks the preset's defaults, the sub-kimg names and sizes of snapshots and
    grids, metrics at every snapshot and --keep-best (each would need a run of its own)."""
    out = tmp_path / "run"
    result = train(cats32, out, "--total-kimg", "0.04", "--snapshot-ticks", "1",
                   "--metrics", "swd", "--metrics-images", "16", "--keep-best", "swd")
    config = json.loads((out / "config.json").read_text())["train"]
    assert config["gamma"] == pytest.approx(0.0002 * 32 * 32 / 8)  # ADA's auto rule
    assert config["ema_rampup"] == 0.05
    assert (config["pl_weight"], config["style_mixing"]) == (0.0, 0.0)  # ADA's small images
    assert config["auto"] == ["gamma", "ema_rampup", "pl_weight", "style_mixing"]
    final = Snapshot.load(out / "network-final", need_training_state=True)
    assert float(final.optimizer["G/t"]) == 5  # 5 steps, no path-length step among them
    rows = [json.loads(x) for x in (out / "stats.jsonl").read_text().splitlines()]
    for row in rows:  # the last step's half-life: 5% of the images shown before it
        before = row["kimg"] * 1000 - 8
        assert row["ema_beta"] == pytest.approx(0.5 ** (8 / (before * 0.05)))

    # tick < 1 kimg: every snapshot and grid named by its exact kimg, none overwritten
    snaps = sorted(p.name for p in out.glob("network-snapshot-*"))
    assert snaps == ["network-snapshot-000000.016", "network-snapshot-000000.032",
                     "network-snapshot-000000.040"]
    grids = sorted(p.name for p in out.glob("fakes0*.png"))
    assert grids == ["fakes000000.016.png", "fakes000000.032.png", "fakes000000.040.png"]
    for name in ("reals.png", "fakes_init.png", grids[-1]):
        img = np.asarray(Image.open(out / name))
        assert img.shape == (512, 512, 3), name  # 8×8 samples of 32 px, enlarged ×2
        blocks = img.reshape(256, 2, 256, 2, 3)  # nearest: every 2×2 block one colour
        assert (blocks == blocks[:, :1, :, :1]).all(), name
    tiles = np.asarray(Image.open(out / "reals.png")).reshape(8, 64, 8, 64, 3).swapaxes(1, 2)
    distinct = {t.tobytes() for t in tiles.reshape(64, 64, 64, 3)}
    assert len(distinct) == 40  # all 40 reals (then the next epoch), not one batch repeated

    lines = [json.loads(x) for x in (out / "metric-swd.jsonl").read_text().splitlines()]
    assert [(r["kimg"], r["snapshot"]) for r in lines] == [
        (0.016, snaps[0]), (0.032, snaps[1]), (0.04, snaps[2])]
    key = "swd_avg" if "swd_avg" in lines[0]["results"] else "swd"
    scores = [r["results"][key] for r in lines]
    best = json.loads((out / "best.json").read_text())
    i = int(np.argmin(scores))
    assert best == {"metric": key, "value": scores[i], "kimg": lines[i]["kimg"],
                    "snapshot": lines[i]["snapshot"]}
    kept, chosen = Snapshot.load(out / "network-best"), Snapshot.load(out / snaps[i])
    assert all(np.array_equal(kept.Gs[k], chosen.Gs[k]) for k in chosen.Gs)
    assert result["final"] == str(out / "network-final")  # network-final stays the last


def test_given_gamma_no_rampup_and_fixed_p(cats32: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(cats32, out, "--total-kimg", "0.032", "--gamma", "10", "--ema-rampup", "0",
          "--pl-weight", "1.5", "--style-mixing", "0.5",
          "--aug", "fixed", "--p", "0.2", "--augpipe", "bgcfnc")
    config = json.loads((out / "config.json").read_text())["train"]
    assert (config["gamma"], config["ema_rampup"]) == (10.0, 0.0)
    assert (config["pl_weight"], config["style_mixing"]) == (1.5, 0.5)
    assert config["auto"] == []
    assert (config["aug"], config["aug_p"], config["augpipe"]) == ("fixed", 0.2, "bgcfnc")
    rows = [json.loads(x) for x in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["ema_beta"] for r in rows] == pytest.approx([0.5 ** (8 / 10_000)] * 2)
    assert [r["augment_p"] for r in rows] == pytest.approx([0.2, 0.2])  # never adapted
