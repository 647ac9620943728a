"""evaluate: every metric through the same loaders on stand-in detector files; records,
labels, the real-statistics cache and clear errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
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
from tests.conftest import cli
from tests.httpserver import LoopbackServer, Plan
from tests.metrics.test_stats import reference_fid
from tests.metrics.test_weights import TGZ_PATH, inception_tgz

DETECTOR_METRICS = "fid50k,fid50k_full,kid50k_full,pr50k3_full,is50k,ppl2_wend"


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


def level_sha(data: Path) -> str:
    """The sha256 dataset.json records for the 32 px level file."""
    files: dict[str, dict[str, str]] = json.loads((data / "dataset.json").read_text())["files"]
    (sha,) = [v["sha256"] for k, v in files.items() if k.endswith("-r05.tfrecords")]
    return sha


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


def test_reference_data_supplies_the_reals(setup: dict[str, Path], subset: Path,
                                           tmp_path: Path) -> None:
    """Trained on a 10-image subset, scored against the full 40: the score is the full
    set's, the record names both datasets by content and nothing else changes; without the
    flag a record has exactly the fields it always had."""
    runs = {"subset": (subset, ()), "reference": (subset, ("--reference-data", setup["data"])),
            "full": (setup["data"], ())}
    recs = {}
    for name, (data, flag) in runs.items():
        res = cli("evaluate", "--network", setup["snapshot"], "--data", data, *flag,
                  "--metrics", "swd", "--num-images", 16, "--out", tmp_path / name)
        assert res.exit_code == 0, res.stderr
        (recs[name],) = records(tmp_path / name, "swd")
    assert set(recs["subset"]) == set(recs["full"]) == RECORD_FIELDS
    ref = recs["reference"]
    assert ref["results"] != recs["subset"]["results"]  # 16 reals, not 10 cycled
    assert level_sha(subset) != level_sha(setup["data"])
    assert ref["trained_on_sha256"] == recs["subset"]["dataset_sha256"] == level_sha(subset)
    assert {k: v for k, v in ref.items() if k != "trained_on_sha256"} == recs["full"]
    assert recs["full"]["dataset_sha256"] == level_sha(setup["data"])
    assert "/" not in json.dumps(ref)  # still no path of any kind


def test_a_full_metric_counts_the_reference(setup: dict[str, Path], subset: Path,
                                            cache: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """fid50k_full uses every real once: the reference's 40 (capped at 30), not the 10
    the network was trained on."""
    seen: list[tuple[Path, int]] = []
    reals = ev_mod.Evaluation.reals

    def spy(self: ev_mod.Evaluation, n: int, desc: str) -> Iterator[np.ndarray]:
        seen.append((self.reals_data, n))
        return reals(self, n, desc)

    monkeypatch.setattr(ev_mod.Evaluation, "reals", spy)
    det = detectors.load("inception", setup["inception"])
    for ref in (None, setup["data"]):
        cfg = ev_mod.EvaluateConfig(setup["snapshot"], subset, tmp_path, ("fid50k_full",),
                                    num_images=30, batch=10, reference_data=ref)
        ev_mod.run(cfg, {"inception": det})
    assert seen == [(subset, 10), (setup["data"], 30)]


def _missing(tmp_path: Path, data: Path) -> Path:
    return tmp_path / "nope"


def _a_file(tmp_path: Path, data: Path) -> Path:
    (tmp_path / "ref.tfrecords").write_bytes(b"")
    return tmp_path / "ref.tfrecords"


def _no_records(tmp_path: Path, data: Path) -> Path:
    (tmp_path / "ref").mkdir()
    return tmp_path / "ref"


def _only_16px(tmp_path: Path, data: Path) -> Path:
    ref = Path(shutil.copytree(data, tmp_path / "ref"))
    for level in ref.glob("*-r05.tfrecords"):
        level.unlink()
    return ref


def _no_32px_level(tmp_path: Path, data: Path) -> Path:
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "x-r06.tfrecords").write_bytes(b"")
    return tmp_path / "ref"


@pytest.mark.parametrize(("make", "message"), [
    pytest.param(_missing, "no such reference dataset directory: {ref}", id="missing"),
    pytest.param(_a_file, "no such reference dataset directory: {ref}", id="a-file"),
    pytest.param(_no_records, "not an NVIDIA-layout dataset (no *-rNN.tfrecords): {ref}",
                 id="no-records"),
    pytest.param(_only_16px, "dataset {ref} is 16 px but the network makes 32 px images",
                 id="too-small"),
    pytest.param(_no_32px_level, "dataset {ref} has no 32 px level (x-r05.tfrecords)",
                 id="no-level"),
])
def test_a_bad_reference_exits_2_naming_it(setup: dict[str, Path], tmp_path: Path,
                                           make: Callable[[Path, Path], Path],
                                           message: str) -> None:
    ref = make(tmp_path, setup["data"])
    res = cli("evaluate", "--network", setup["snapshot"], "--data", setup["data"],
              "--reference-data", ref, "--metrics", "swd", "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert res.stderr == f"stylegan-ops: error: {message.format(ref=ref)}\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_xla_evaluation_scores_agree_and_say_so(setup: dict[str, Path], cache: Path,
                                                tmp_path: Path) -> None:
    """--xla compiles the generator and the detectors: the same fakes (the noise drawn as
    the eager path draws it) and the same features to float rounding, so the scores agree
    to a tolerance; the records say xla, the eager ones stay as they were. Precision and
    recall count images: a feature moved by rounding may cross a k-NN radius, so they may
    differ by one image in ``n``; the other scores are continuous (2% for 16 images)."""
    install(setup, pinned=False)
    metrics, n = f"swd,{DETECTOR_METRICS}", 16
    for name, extra in (("eager", []), ("xla", ["--xla"])):
        res = cli("evaluate", "--network", setup["snapshot"], "--data", setup["data"],
                  "--metrics", metrics, "--num-images", n, "--batch", 8,
                  "--out", tmp_path / name, *extra)
        assert res.exit_code == 0, res.stderr
    for path in sorted((tmp_path / "eager").iterdir()):
        eager, = records(tmp_path / "eager", path.stem[len("metric-"):])
        xla, = records(tmp_path / "xla", path.stem[len("metric-"):])
        assert "xla" not in eager and xla.pop("xla") is True
        assert eager.keys() == xla.keys()
        for key, value in eager["results"].items():  # type: ignore[attr-defined]
            close = (pytest.approx(value, abs=1.01 / n) if key.startswith("pr50k3")
                     else pytest.approx(value, rel=2e-2))
            assert xla["results"][key] == close, (path.name, key)
