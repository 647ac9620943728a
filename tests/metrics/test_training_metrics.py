"""TrainingMetrics: the snapshots of a training run scored in its process, through the same
records as evaluate, reals computed once, fakes reproducible, TensorFlow's seed untouched."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stylegan_ops.errors import StageError
from stylegan_ops.generate import load_generator, network_digest
from stylegan_ops.metrics import detectors
from stylegan_ops.metrics import evaluate as ev_mod
from stylegan_ops.metrics.evaluate import TrainingMetrics
from stylegan_ops.metrics.weights import cache_dir
from stylegan_ops.networks.generator import Generator
from stylegan_ops.networks.presets import preset
from stylegan_ops.networks.snapshot import Snapshot
from tests.metrics.test_evaluate import RECORD_FIELDS, level_sha, records

TRAINING_FIELDS = RECORD_FIELDS | {"kimg", "snapshot"}


class Counting:
    """A detector that counts its calls."""

    def __init__(self, detector: Any) -> None:
        self.detector, self.label, self.calls = detector, detector.label, 0

    def features(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        result: np.ndarray = self.detector.features(images)
        return result


def test_each_snapshot_appends_a_record_per_metric(setup: dict[str, Path], subset: Path,
                                                   cache: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Trained on the subset, scored against the full set at three snapshots of two
    networks: one line per metric and snapshot, the reals read and featurised once (the
    disk cache is emptied after each snapshot, so only memory can serve them), the same
    network scored the same."""
    first = Path(shutil.copytree(setup["snapshot"], tmp_path / "network-snapshot-000000.512"))
    g2 = Generator(preset("small"), seed=1)
    arrays = {k: v.numpy() for k, v in g2.params.items()}
    second = tmp_path / "network-snapshot-000001.024"
    Snapshot(preset("small"), arrays, {}, arrays, {"kimg": 1.024}, {}).save(second)
    g1 = load_generator(first)

    reads = []
    reals = ev_mod.Evaluation.reals

    def spy(self: ev_mod.Evaluation, n: int, desc: str) -> Iterator[np.ndarray]:
        reads.append((self.reals_data, n))
        return reals(self, n, desc)

    monkeypatch.setattr(ev_mod.Evaluation, "reals", spy)
    det = Counting(detectors.load("inception", setup["inception"]))
    out = tmp_path / "run"
    metrics = TrainingMetrics(subset, ("swd", "fid50k_full"), out, num_images=8, batch=4,
                              reference_data=setup["data"], detectors={"inception": det},
                              resolution=32)
    calls, results = [], []
    for g, snap, kimg in ((g1, first, 0.512), (g2, second, 1.024), (g1, first, 1.536)):
        before = det.calls
        results.append(metrics.evaluate(g, snap, kimg))
        calls.append(det.calls - before)
        assert (cache_dir() / "stats").is_dir() == (kimg == 0.512)
        shutil.rmtree(cache_dir() / "stats", ignore_errors=True)
    assert calls == [4, 2, 2]  # 8 reals and 8 fakes in batches of 4, then the fakes alone
    assert reads == [(setup["data"], 8), (setup["data"], 8)]  # swd's, fid's: once each
    assert results[0] == results[2] != results[1]
    for name in ("swd", "fid50k_full@stand-in"):
        lines = records(out, name)
        assert [(r["snapshot"], r["kimg"]) for r in lines] == [
            (first.name, 0.512), (second.name, 1.024), (first.name, 1.536)]
        assert [r["results"] for r in lines] == [res[name] for res in results]
        assert [r["network_sha256"] for r in lines] == [
            network_digest(first), network_digest(second), network_digest(first)]
        for rec in lines:
            assert set(rec) == TRAINING_FIELDS | {"trained_on_sha256"}
            assert rec["dataset_sha256"] == level_sha(setup["data"])
            assert rec["trained_on_sha256"] == level_sha(subset)
            assert rec["truncation_psi"] == 1.0 and rec["num_images"] == 8


def test_scoring_leaves_the_training_random_streams_alone(setup: dict[str, Path],
                                                          tmp_path: Path) -> None:
    """tf.random.set_seed would restart every random op of the compiled training steps
    (latents, noise, augmentation) after each snapshot; scoring must not call it."""
    import tensorflow as tf

    tf.random.set_seed(1)
    f = tf.function(lambda: tf.random.normal([3]))
    unseen = [f().numpy(), f().numpy()]
    tf.random.set_seed(1)
    step = tf.function(lambda: tf.random.normal([3]))
    assert np.array_equal(step().numpy(), unseen[0])
    metrics = TrainingMetrics(setup["data"], ("swd",), tmp_path / "run", num_images=8)
    metrics.evaluate(load_generator(setup["snapshot"]), setup["snapshot"], 0.5)
    assert np.array_equal(step().numpy(), unseen[1])  # continued, not restarted
    (rec,) = records(tmp_path / "run", "swd")
    assert set(rec) == TRAINING_FIELDS  # no reference: no trained_on_sha256
    assert rec["snapshot"] == "net" and rec["kimg"] == 0.5


def _ref_16px(tmp_path: Path, setup: dict[str, Path]) -> Path:
    ref = Path(shutil.copytree(setup["data"], tmp_path / "ref"))
    for level in ref.glob("*-r05.tfrecords"):
        level.unlink()
    return ref


@pytest.mark.parametrize(("change", "message"), [
    pytest.param({"metrics": ("swd", "fid5k")}, r"unknown metric\(s\) fid5k", id="unknown"),
    pytest.param({"metrics": ("swd", "fid50k")},
                 "detector file classify_image_graph_def.pb is missing", id="no-detector"),
    pytest.param({"reference_data": lambda tmp, setup: tmp / "nope"},
                 "no such reference dataset directory: .*nope$", id="no-reference"),
    pytest.param({"reference_data": _ref_16px},
                 "dataset .*ref is 16 px but the network makes 32 px images", id="ref-16px"),
    pytest.param({"num_images": 1}, "num-images must be >= 2", id="one-image"),
])
def test_bad_options_fail_before_training(setup: dict[str, Path], cache: Path,
                                          tmp_path: Path, change: dict[str, Any],
                                          message: str) -> None:
    args: dict[str, Any] = {"metrics": ("swd",), "resolution": 32, **change}
    if callable(args.get("reference_data")):
        args["reference_data"] = args["reference_data"](tmp_path, setup)
    with pytest.raises(StageError, match=message) as err:
        TrainingMetrics(setup["data"], out=tmp_path / "run", **args)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


HEADLINES = [
    pytest.param("fid50k", "fid50k", True, id="fid50k"),
    pytest.param("fid50k_full", "fid50k_full", True, id="fid50k_full"),
    pytest.param("kid50k_full", "kid50k_full", True, id="kid50k_full"),
    pytest.param("pr50k3_full", "pr50k3_full_precision", False, id="pr50k3_full"),
    pytest.param("is50k", "is50k", False, id="is50k"),
    pytest.param("ppl2_wend", "ppl2_wend", True, id="ppl2_wend"),
    pytest.param("swd", "swd_avg", True, id="swd"),
    pytest.param("fid50k@stand-in", "fid50k@stand-in", True, id="fid-stand-in"),
    pytest.param("pr50k3_full@stand-in", "pr50k3_full_precision@stand-in", False,
                 id="pr-stand-in"),
]


@pytest.mark.parametrize(("metric", "key", "lower"), HEADLINES)
def test_headline_names_the_ranked_key(metric: str, key: str, lower: bool) -> None:
    assert TrainingMetrics.headline(metric) == (key, lower)


def test_every_metric_has_a_headline() -> None:
    assert {p.values[0] for p in HEADLINES if "@" not in str(p.values[0])} == set(ev_mod.METRICS)


@pytest.mark.parametrize("metric", [pytest.param("fid5k", id="typo"),
                                    pytest.param("", id="empty"),
                                    pytest.param("swd,fid50k", id="two")])
def test_headline_refuses_unknown_metrics(metric: str) -> None:
    with pytest.raises(StageError, match="unknown metric"):
        TrainingMetrics.headline(metric)
