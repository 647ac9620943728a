"""stylegan2_train end to end under dag.test() with the local runner: both branches,
six versions with lineage, reproducible generated images."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli
from tests.netfiles import make_pickle, nvidia_network_class

pytestmark = pytest.mark.airflow

OUTPUTS = ("stylegan2-pretrained-network", "stylegan2-evaluation-pretrained",
           "stylegan2-generated-pretrained", "stylegan2-trained-network",
           "stylegan2-evaluation-ours", "stylegan2-generated-ours")


def train_conf(pkl: Path | None, **overrides: Any) -> dict[str, Any]:
    return {"dataset_ref": "cats-32:latest", "pretrained": str(pkl) if pkl else None,
            "config": "small", "total_kimg": 0.2, "batch": 8, "tick_kimg": 0.1,
            "snapshot_ticks": 1, "metrics": "swd", "metric_images": 32, "seeds": "3-5",
            "truncation_psi": 0.5, "tags": ["ci"],
            "profiles": {"download": "cpu", "train": "cpu", "evaluate": "cpu",
                         "generate": "cpu"},
            "git_commit": "0123456789abcdef0123456789abcdef01234567", **overrides}


@pytest.fixture(scope="module")
def cats(sample_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 32 px dataset version in the test store and a stand-in NVIDIA pickle."""
    root = tmp_path_factory.mktemp("train-dag")
    res = cli("prepare", "lsun", sample_lmdb, "--out", root / "cats-32", "--resolution", 32,
              "--max-images", 40)
    assert res.exit_code == 0, res.stderr
    res = cli("store", "--store", os.environ["STYLEGAN_STORE"], "snapshot", root / "cats-32",
              "--name", "cats-32")
    assert res.exit_code == 0, res.stderr
    with nvidia_network_class() as cls:
        make_pickle(cls, root / "stylegan2-cat-stand-in.pkl")
    return {"pkl": root / "stylegan2-cat-stand-in.pkl",
            "dataset": json.loads(res.stdout.splitlines()[-1])}


def show(ref: str) -> dict[str, Any]:
    res = cli("store", "--store", os.environ["STYLEGAN_STORE"], "show", ref)
    assert res.exit_code == 0, res.stderr
    return dict(json.loads(res.stdout))


def test_both_branches_version_every_output(airflow_db: Path, dagbag: Any,
                                            cats: dict[str, Any]) -> None:
    run = dagbag.dags["stylegan2_train"].test(run_conf=train_conf(cats["pkl"]))
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    assert states["fetch_pretrained"] == "skipped"  # a local path needs no download
    assert all(s == "success" for t, s in states.items() if t != "fetch_pretrained"), states
    dataset = f"cats-32@{cats['dataset']['id']}"
    versions = {name: show(f"{name}:latest") for name in OUTPUTS}
    for name, v in versions.items():
        lineage = v["lineage"]
        assert (lineage["dag_id"], lineage["run_id"]) == ("stylegan2_train", run.run_id)
        assert lineage["git_commit"] == train_conf(None)["git_commit"]
        assert "ci" in v["tags"], name
    net = versions["stylegan2-trained-network"]
    pre = versions["stylegan2-pretrained-network"]
    assert versions["stylegan2-trained-network"]["lineage"]["inputs"] == [dataset]
    assert versions["stylegan2-evaluation-ours"]["lineage"]["inputs"] == [
        f"stylegan2-trained-network@{net['id']}", dataset]
    assert versions["stylegan2-generated-pretrained"]["lineage"]["inputs"] == [
        f"stylegan2-pretrained-network@{pre['id']}"]
    gen = versions["stylegan2-generated-ours"]
    assert gen["meta"] == {"network": f"stylegan2-trained-network@{net['id']}",
                           "truncation_psi": 0.5, "seeds": [3, 4, 5]}
    files = {f["path"] for f in gen["manifest"]["files"]}
    assert {"seed0003.png", "seed0004.png", "seed0005.png", "generate.json"} <= files
    trained = {f["path"] for f in net["manifest"]["files"]}
    assert "network-final/state.json" in trained and "reals.png" in trained
    assert any(p.startswith("fakes0") for p in trained)
    evaluation = versions["stylegan2-evaluation-pretrained"]
    assert set(evaluation["meta"]["metrics"]["swd"]) == {"swd32", "swd16", "swd_avg"}

    # the same run again: the same seeds of the same network give the same images
    again = dagbag.dags["stylegan2_train"].test(run_conf=train_conf(cats["pkl"]))
    assert str(again.state) == "success"
    for name in ("stylegan2-generated-pretrained", "stylegan2-pretrained-network",
                 "stylegan2-generated-ours"):
        assert show(f"{name}:latest")["id"] == versions[name]["id"], name


def test_a_failed_branch_fails_the_run_but_keeps_the_other_branchs_versions(
        airflow_db: Path, dagbag: Any, cats: dict[str, Any], tmp_path: Path) -> None:
    """A pickle that is not there: the pretrained branch fails; ours is still versioned,
    the summary still lists it, and the run ends failed (not green with outputs missing)."""
    before = show("stylegan2-trained-network:latest")["id"] if cli(
        "store", "--store", os.environ["STYLEGAN_STORE"], "show",
        "stylegan2-trained-network:latest").exit_code == 0 else None
    run = dagbag.dags["stylegan2_train"].test(
        run_conf=train_conf(tmp_path / "missing.pkl", seeds="7", tags=["broken-branch"]))
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "failed", states
    assert states["import_pretrained"] == "failed"
    assert states["commit_ours_generated"] == "success"
    assert states["summary"] == "failed"
    generated = show("stylegan2-generated-ours:latest")
    assert generated["lineage"]["run_id"] == run.run_id and "broken-branch" in generated["tags"]
    assert before is None or show("stylegan2-trained-network:latest")["id"] is not None
