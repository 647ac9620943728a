"""evaluate: every metric through the same loaders on stand-in detector files; records,
labels, the real-statistics cache and clear errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stylegan_ops.data.prepare import PrepareConfig
from stylegan_ops.data.prepare import run as prepare
from stylegan_ops.generate import load_generator
from stylegan_ops.metrics import detectors
from stylegan_ops.metrics import evaluate as ev_mod
from stylegan_ops.metrics.weights import MIRROR_ENV, sha256_of
from stylegan_ops.networks.generator import Generator
from stylegan_ops.networks.presets import preset
from stylegan_ops.networks.snapshot import Snapshot
from tests.conftest import cli
from tests.httpserver import LoopbackServer, Plan
from tests.metrics.test_stats import reference_fid
from tests.metrics.test_weights import TGZ_PATH, inception_tgz
from tests.netfiles import inception_graph, make_pickle, nvidia_network_class, vgg_pickle

DETECTOR_METRICS = "fid50k,fid50k_full,kid50k_full,pr50k3_full,is50k,ppl2_wend"


@pytest.fixture(scope="module")
def setup(sample_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval")
    prepare(PrepareConfig("lsun", sample_lmdb, root / "cats32", 32, max_images=40))
    g = Generator(preset("small"))
    arrays = {k: v.numpy() for k, v in g.params.items()}
    Snapshot(preset("small"), arrays, {}, arrays, {"kimg": 0}, {}).save(root / "net")
    with nvidia_network_class() as cls:
        make_pickle(cls, root / "nvidia.pkl")
    files = {"inception": inception_graph(root / "classify_image_graph_def.pb"),
             "vgg16": vgg_pickle(root / "vgg16.pkl", "vgg16"),
             "lpips": vgg_pickle(root / "vgg16_zhang_perceptual.pkl", "lpips")}
    return {"data": root / "cats32", "snapshot": root / "net", "pkl": root / "nvidia.pkl",
            **files}


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("STYLEGAN_CACHE", str(tmp_path / "cache"))
    yield tmp_path / "cache"


def install(setup: dict[str, Path], pinned: bool) -> None:
    for name in ("inception", "vgg16", "lpips"):
        trust = ("--sha256", sha256_of(setup[name])) if pinned else ("--accept-unpinned",)
        res = cli("fetch-weights", name, "--from", setup[name], *trust)
        assert res.exit_code == 0, res.stderr


def records(out: Path, name: str) -> list[dict[str, object]]:
    return [json.loads(x) for x in (out / f"metric-{name}.jsonl").read_text().splitlines()]


def result_line(stdout: str) -> dict[str, Any]:
    """The stage result: the last stdout line, the task's XCom in Airflow."""
    line: dict[str, Any] = json.loads(stdout.splitlines()[-1])
    return line


RECORD_FIELDS = {"metric", "standard_metric", "results", "invalid", "num_images",
                 "network_sha256", "dataset_sha256", "resolution", "detector",
                 "truncation_psi", "seed", "batch"}


def test_identical_evaluations_write_identical_files(setup: dict[str, Path], cache: Path,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The same network and data under other paths, from another cwd, later, with the real
    statistics computed the first time and cached the second: the same bytes, so the store
    makes them one version. Nothing in them names a path."""
    install(setup, pinned=True)
    moved = tmp_path / "elsewhere"
    shutil.copytree(setup["snapshot"], moved / "network")
    shutil.copytree(setup["data"], moved / "dataset")
    runs = [(setup["snapshot"], setup["data"], tmp_path / "first" / "eval", tmp_path),
            (Path("network"), Path("dataset"), Path("second-eval"), moved)]
    outs, lines = [], []
    for network, data, out, cwd in runs:
        monkeypatch.chdir(cwd)
        res = cli("evaluate", "--network", network, "--data", data, "--metrics", "swd,fid50k",
                  "--num-images", 8, "--out", out)
        assert res.exit_code == 0, res.stderr
        outs.append(cwd / out)
        lines.append(result_line(res.stdout))
    assert [line["real_stats"]["fid50k"] for line in lines] == ["computed", "cached"]
    files = [{p.name: p.read_bytes() for p in out.iterdir()} for out in outs]
    assert sorted(files[0]) == ["metric-fid50k.jsonl", "metric-swd.jsonl"]
    assert files[0] == files[1]
    for name, text in files[0].items():
        rec = json.loads(text)
        assert set(rec) == RECORD_FIELDS, name
        assert rec["network_sha256"] == sha256_of(setup["snapshot"] / "Gs.npz")
        assert b"/" not in text, name  # no path of any kind (hex digests and names only)


def test_the_result_line_carries_each_metrics_seconds(setup: dict[str, Path], cache: Path,
                                                      tmp_path: Path) -> None:
    """Timings leave the records for the stage result (the commit copies it into the
    version's meta); out and results stay as the DAG templates read them."""
    install(setup, pinned=True)
    res = cli("evaluate", "--network", setup["snapshot"], "--data", setup["data"],
              "--metrics", "swd,fid50k", "--num-images", 8, "--out", tmp_path / "e")
    assert res.exit_code == 0, res.stderr
    line = result_line(res.stdout)
    assert set(line) == {"out", "results", "seconds", "real_stats"}
    assert line["out"] == str(tmp_path / "e")
    assert line["results"] == {rec["metric"]: rec["results"] for rec in
                               (records(tmp_path / "e", m)[0] for m in ("swd", "fid50k"))}
    assert set(line["seconds"]) == {"swd", "fid50k"}
    assert all(isinstance(s, float) and 0 <= s < 600 for s in line["seconds"].values())
    assert line["seconds"]["swd"] > 0  # two TF passes over 8 images take some time
    assert line["real_stats"] == {"swd": None, "fid50k": "computed"}  # swd needs none


def test_swd_records_are_appended_and_reproducible(setup: dict[str, Path],
                                                   tmp_path: Path) -> None:
    for _ in range(2):
        res = cli("evaluate", "--network", setup["snapshot"], "--data", setup["data"],
                  "--metrics", "swd", "--num-images", 48, "--out", tmp_path)
        assert res.exit_code == 0, res.stderr
    lines = records(tmp_path, "swd")
    assert len(lines) == 2 and lines[0]["results"] == lines[1]["results"]
    rec = lines[0]
    assert rec["detector"] == "none" and rec["num_images"] == 48
    assert rec["dataset_sha256"] and rec["results"]["swd_avg"] > 0  # type: ignore[index]
    assert set(rec["results"]) == {"swd32", "swd16", "swd_avg"}  # type: ignore[arg-type]


def test_stand_in_detectors_never_write_standard_names(setup: dict[str, Path], cache: Path,
                                                       tmp_path: Path) -> None:
    install(setup, pinned=False)
    out = tmp_path / "out"
    for _ in range(2):
        res = cli("evaluate", "--network", setup["snapshot"], "--data", setup["data"],
                  "--metrics", DETECTOR_METRICS, "--num-images", 24, "--batch", 8,
                  "--out", out)
        assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"metric-{m}@stand-in.jsonl" for m in DETECTOR_METRICS.split(","))
    for name in DETECTOR_METRICS.split(","):
        first, second = records(out, f"{name}@stand-in")
        assert first["results"] == second["results"]  # same seed, same numbers (PPL too)
        assert all(k.endswith("@stand-in") and np.isfinite(v)
                   for k, v in first["results"].items())  # type: ignore[union-attr]
        det = first["detector"]
        assert det["standard"] is False  # type: ignore[index]
        file = {"fid50k": "inception", "fid50k_full": "inception", "kid50k_full": "inception",
                "is50k": "inception", "pr50k3_full": "vgg16", "ppl2_wend": "lpips"}[name]
        assert det["sha256"] == sha256_of(setup[file])  # type: ignore[index]
    assert first["results"]["ppl2_wend@stand-in"] > 0  # type: ignore[index]


def test_real_statistics_are_cached_per_dataset_and_detector(
        setup: dict[str, Path], cache: Path, tmp_path: Path) -> None:
    install(setup, pinned=True)
    out = tmp_path / "out"
    how = []
    for _ in range(2):
        res = cli("evaluate", "--network", setup["snapshot"], "--data", setup["data"],
                  "--metrics", "fid50k", "--num-images", 24, "--out", out)
        assert res.exit_code == 0, res.stderr
        how.append(result_line(res.stdout)["real_stats"])  # the result says, not the record
    assert how == [{"fid50k": "computed"}, {"fid50k": "cached"}]
    # a pinned file gives the standard name
    first, second = records(out, "fid50k")
    assert first["results"] == second["results"] and first["detector"]["standard"]  # type: ignore[index]
    assert len(list((cache / "stats").iterdir())) == 1
    res = cli("evaluate", "--network", setup["snapshot"], "--data", setup["data"],
              "--metrics", "fid50k", "--num-images", 20, "--out", out)
    assert res.exit_code == 0, res.stderr
    assert result_line(res.stdout)["real_stats"] == {"fid50k": "computed"}  # other options


def test_an_officially_fetched_inception_gives_standard_fid(
        setup: dict[str, Path], cache: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    digest = sha256_of(setup["inception"])
    with LoopbackServer(Plan(files={TGZ_PATH: inception_tgz(setup["inception"])})) as srv:
        monkeypatch.setenv(MIRROR_ENV, srv.url)  # the loopback server poses as the host
        res = cli("fetch-weights", "inception")
    assert res.exit_code == 0, res.stderr
    res = cli("evaluate", "--network", setup["snapshot"], "--data", setup["data"],
              "--metrics", "fid50k", "--num-images", 24, "--out", tmp_path)
    assert res.exit_code == 0, res.stderr
    (rec,) = records(tmp_path, "fid50k")  # the standard name: no @stand-in
    assert rec["metric"] == "fid50k" and set(rec["results"]) == {"fid50k"}  # type: ignore[arg-type]
    assert rec["detector"] == {"name": "inception", "file": "classify_image_graph_def.pb",
                               "sha256": digest, "standard": True}


@pytest.mark.parametrize("network", ["snapshot", "pkl"])
def test_fid_matches_a_float64_reference_on_the_same_features(
        setup: dict[str, Path], tmp_path: Path, network: str) -> None:
    det = detectors.load("inception", setup["inception"])
    cfg = ev_mod.EvaluateConfig(setup[network], setup["data"], tmp_path, ("fid50k",),
                                num_images=30, batch=7)
    result = ev_mod.run(cfg, detectors={"inception": det})
    ev = ev_mod.Evaluation(cfg, load_generator(setup[network]))
    reals = np.concatenate([det.features(b) for b in ev.reals(30, "reals")])
    fakes = np.concatenate([det.features(b) for b in ev.fakes(30, "fakes")])
    assert result.results["fid50k@stand-in"]["fid50k@stand-in"] == pytest.approx(
        reference_fid(reals, fakes), rel=1e-6)


def test_missing_weights_exit_2_before_anything_is_written(setup: dict[str, Path],
                                                           cache: Path, tmp_path: Path) -> None:
    res = cli("evaluate", "--network", setup["snapshot"], "--data", setup["data"],
              "--metrics", "swd,ppl2_wend", "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert "vgg16_zhang_perceptual.pkl is missing" in res.stderr
    assert "stylegan-ops fetch-weights lpips" in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("metrics", "message"), [
    pytest.param("fid5k", "unknown metric(s) fid5k; available: fid50k,", id="typo"),
    pytest.param("swd,nope", "unknown metric(s) nope", id="one-bad"),
    pytest.param(" , ", "unknown metric(s) ' , '", id="empty"),
])
def test_unknown_metrics_exit_2(setup: dict[str, Path], tmp_path: Path, metrics: str,
                                message: str) -> None:
    res = cli("evaluate", "--network", setup["snapshot"], "--data", setup["data"],
              "--metrics", metrics, "--out", tmp_path)
    assert res.exit_code == 2 and message in res.stderr
    assert not list(tmp_path.iterdir())


def test_a_larger_dataset_serves_its_matching_level(setup: dict[str, Path], sample_lmdb: Path,
                                                    tmp_path: Path) -> None:
    data = tmp_path / "cats64"
    prepare(PrepareConfig("lsun", sample_lmdb, data, 64, max_images=20))
    res = cli("evaluate", "--network", setup["snapshot"], "--data", data, "--metrics", "swd",
              "--num-images", 16, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    rec = records(tmp_path / "out", "swd")[0]
    meta = json.loads((data / "dataset.json").read_text())
    assert rec["resolution"] == 32
    assert rec["dataset_sha256"] == meta["files"]["cats64-r05.tfrecords"]["sha256"]


def test_a_nan_score_is_recorded_as_null_with_its_reason(setup: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """A degenerate score (here: a metric that yields NaN) never reaches JSON as NaN: the
    record, the result line and the run all say null, and the reason is recorded."""
    spec = ev_mod.MetricSpec("swd", None, lambda ev: {"swd16": float("nan"), "swd_avg": 1.5},
                             "nan on purpose")
    monkeypatch.setitem(ev_mod.METRICS, "swd", spec)
    res = cli("evaluate", "--network", setup["snapshot"], "--data", setup["data"],
              "--metrics", "swd", "--num-images", 4, "--out", tmp_path)
    assert res.exit_code == 0, res.stderr
    line = json.loads(res.stdout.splitlines()[-1], parse_constant=pytest.fail)
    assert line["results"]["swd"] == {"swd16": None, "swd_avg": 1.5}
    text = (tmp_path / "metric-swd.jsonl").read_text()
    rec = json.loads(text, parse_constant=pytest.fail)
    assert rec["results"] == {"swd16": None, "swd_avg": 1.5}
    assert rec["invalid"] == {"swd16": "not a finite number (nan): the images or features are "
                                       "degenerate"}
    assert "swd16 is nan, recorded as null" in res.stderr


@pytest.mark.parametrize(("change", "message"), [
    pytest.param({"truncation_psi": float("nan")}, "truncation-psi", id="psi-nan"),
    pytest.param({"truncation_psi": float("inf")}, "truncation-psi", id="psi-inf"),
    pytest.param({"seed": -1}, "seed", id="seed-negative"),
    pytest.param({"seed": 2**32}, "seed", id="seed-huge"),
    pytest.param({"batch": 0}, "batch", id="batch-zero"),
    pytest.param({"num_images": 1}, "num-images", id="one-image"),
])
def test_config_refuses_for_library_callers(tmp_path: Path, change: dict[str, object],
                                            message: str) -> None:
    args: dict[str, object] = {"network": tmp_path, "data": tmp_path, "out": tmp_path / "e"}
    with pytest.raises(ev_mod.StageError, match=message):
        ev_mod.EvaluateConfig(**{**args, **change})  # type: ignore[arg-type]
