"""stylegan2_train end to end under dag.test() with the local runner: both branches,
six versions with lineage, reproducible generated images."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli
from tests.netfiles import make_pickle, nvidia_network_class, vgg_pickle

pytestmark = pytest.mark.airflow

OUTPUTS = ("stylegan2-pretrained-network", "stylegan2-evaluation-pretrained",
           "stylegan2-generated-pretrained", "stylegan2-trained-network",
           "stylegan2-evaluation-ours", "stylegan2-generated-ours")


PROJECTION_TASKS = ("commit_projection_targets", "resolve_projection_targets",
                    "project_pretrained", "commit_pretrained_projections", "project_ours",
                    "commit_ours_projections")


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


def commit_values(run: Any) -> dict[str, Any]:
    """Each commit task's return value of ``run``, by version name."""
    out = {}
    for ti in run.get_task_instances():
        if ti.task_id.startswith("commit_") and str(ti.state) == "success":
            value = ti.xcom_pull(task_ids=ti.task_id)
            out[value["name"]] = value
    return out


def test_both_branches_version_every_output(airflow_db: Path, dagbag: Any,
                                            cats: dict[str, Any]) -> None:
    run = dagbag.dags["stylegan2_train"].test(run_conf=train_conf(cats["pkl"]))
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    # a local pickle: nothing to download; from scratch: no init network to resolve
    skipped = {"fetch_pretrained", "commit_pretrained_pickle", "resolve_init_ours",
               "init_ours_from_import", *PROJECTION_TASKS}  # no project_targets: none
    assert {states[t] for t in skipped} == {"skipped"}, states
    assert all(s == "success" for t, s in states.items() if t not in skipped), states
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
    stage = gen["meta"].pop("stage")  # what a later reuse returns, and the timing
    assert gen["meta"] == {"network": f"stylegan2-trained-network@{net['id']}",
                           "truncation_psi": 0.5, "seeds": [3, 4, 5]}
    assert stage["task_id"] == "generate_ours" and stage["seconds"] > 0
    assert stage["result"]["files"] == ["seed0003.png", "seed0004.png", "seed0005.png"]
    assert stage["result"]["out"] == stage["out"]
    files = {f["path"] for f in gen["manifest"]["files"]}
    assert {"seed0003.png", "seed0004.png", "seed0005.png", "generate.json"} <= files
    trained = {f["path"] for f in net["manifest"]["files"]}
    assert "network-final/state.json" in trained and "reals.png" in trained
    assert any(p.startswith("fakes0") for p in trained)
    evaluation = versions["stylegan2-evaluation-pretrained"]
    assert set(evaluation["meta"]["metrics"]["swd"]) == {"swd32", "swd16", "swd_avg"}

    # the same run recomputed: the same seeds of the same network give the same images,
    # and the run still lists them (as used, made by the first run)
    again = dagbag.dags["stylegan2_train"].test(run_conf=train_conf(cats["pkl"], cache=False))
    assert str(again.state) == "success"
    commits = commit_values(again)
    assert all(v["reused"] is None or v["reused"]["reason"] == "same-content"
               for v in commits.values()), commits
    for name in ("stylegan2-generated-pretrained", "stylegan2-pretrained-network",
                 "stylegan2-generated-ours"):
        assert show(f"{name}:latest")["id"] == versions[name]["id"], name
        assert commits[name]["created"] is False
        reused = commits[name]["reused"]
        assert (reused["reason"], reused["made_by"]) == (
            "same-content", {"dag_id": "stylegan2_train", "run_id": run.run_id}), name
        if name != "stylegan2-generated-ours":  # the retrained network is a new version
            # (its stats and TensorBoard files hold timings): same images, another key
            assert reused["key"] == commits[name]["lineage"]["cache"]["key"], name

    # and unchanged with reuse on: no stage process starts, every output is a reuse
    # (cache named: dag.test() in one process keeps the previous run's conf in the DAG's
    # params, where a scheduled task, parsing the DAG afresh, would start from defaults)
    third = dagbag.dags["stylegan2_train"].test(run_conf=train_conf(cats["pkl"], cache=True))
    assert str(third.state) == "success"
    commits = commit_values(third)
    reasons = {name: (v["reused"] or {}).get("reason") for name, v in commits.items()}
    assert reasons == dict.fromkeys(OUTPUTS, "cache")
    assert {name: v["id"] for name, v in commits.items()} == {
        name: show(f"{name}:latest")["id"] for name in OUTPUTS}
    stage_tasks = {"import_pretrained", "evaluate_pretrained", "generate_pretrained", "train",
                   "evaluate_ours", "generate_ours"}
    for ti in third.get_task_instances():
        if ti.task_id in stage_tasks:
            assert ti.xcom_pull(task_ids=ti.task_id, key="reuse"), ti.task_id
            assert ti.xcom_pull(task_ids=ti.task_id, key="stage_seconds") is None, ti.task_id


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


def test_projection_versions_each_networks_results_with_lineage(
        airflow_db: Path, dagbag: Any, cats: dict[str, Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """project_targets set: the folder is versioned, both networks project it, and each
    result is a version whose lineage names the network and the targets."""
    import numpy as np
    from PIL import Image

    monkeypatch.setenv("STYLEGAN_CACHE", str(tmp_path / "cache"))  # the stages inherit it
    lpips = vgg_pickle(tmp_path / "vgg16_zhang_perceptual.pkl", "lpips")
    res = cli("fetch-weights", "lpips", "--from", lpips, "--accept-unpinned")
    assert res.exit_code == 0, res.stderr
    targets = tmp_path / "targets"
    targets.mkdir()
    rng = np.random.default_rng(0)
    for name in ("tabby", "ginger"):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), np.uint8)).save(targets / f"{name}.png")
    run = dagbag.dags["stylegan2_train"].test(run_conf=train_conf(
        cats["pkl"], project_targets=str(targets), project_steps=3, tags=["projected"]))
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    assert {states[t] for t in PROJECTION_TASKS} == {"success"}, states
    given = show("stylegan2-projection-targets:latest")
    assert {f["path"] for f in given["manifest"]["files"]} == {"tabby.png", "ginger.png"}
    given_ref = f"stylegan2-projection-targets@{given['id']}"
    for branch, network in (("ours", "stylegan2-trained-network"),
                            ("pretrained", "stylegan2-pretrained-network")):
        net = show(f"{network}:latest")
        v = show(f"stylegan2-projections-{branch}:latest")
        assert v["lineage"]["run_id"] == run.run_id and "projected" in v["tags"]
        assert v["lineage"]["inputs"] == [f"{network}@{net['id']}", given_ref]
        assert v["meta"]["network"] == f"{network}@{net['id']}"
        assert v["meta"]["targets"] == given_ref
        assert [t["name"] for t in v["meta"]["distances"]] == ["ginger", "tabby"]
        assert v["meta"]["lpips"]["standard"] is False  # a stand-in says so
        files = {f["path"] for f in v["manifest"]["files"]}
        assert {"projection.json", "tabby/proj.png", "tabby/projected_w.npz",
                "ginger/target.png", "ginger/progress.jsonl"} <= files
