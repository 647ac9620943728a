"""The DAG files: import cleanly and fast, import no TensorFlow, validate their params."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS = ["stylegan2_prepare", "stylegan2_watch_repo", "stylegan2_train"]


def test_dagbag_has_no_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert set(DAGS) <= set(dagbag.dags)


def test_parsing_imports_no_tensorflow_and_no_stage_code() -> None:
    code = (
        "import sys, json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"b = DagBag({str(ROOT / 'dags')!r})\n"
        "assert not b.import_errors, b.import_errors\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras') or "
        "m.startswith(('stylegan_ops.data', 'stylegan_ops.store.local', "
        "'stylegan_ops.store.remote', 'stylegan_ops.networks', 'stylegan_ops.metrics'))]\n"
        "print(json.dumps(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_prepare_dag_shape(dagbag: Any) -> None:
    dag = dagbag.dags["stylegan2_prepare"]
    assert set(dag.task_dict) == {"plan", "shard_plan", "choose_source", "make_sample",
                                  "commit_sample", "download", "commit_download", "unzip",
                                  "commit_lmdb", "extract", "merge", "inspect", "commit"}
    # every source is a version before anything reads it, so a later run can reuse it
    assert dag.task_dict["extract"].upstream_task_ids >= {"commit_sample", "commit_lmdb"}
    assert dag.task_dict["unzip"].upstream_task_ids >= {"commit_download"}
    assert dag.task_dict["commit"].upstream_task_ids == {"inspect", "plan"}
    assert dag.params["cache"] is True and dag.params["recompute"] == []
    assert dag.params["source_url"] == "http://dl.yf.io/lsun/objects/cat.zip"


def test_train_dag_shape_and_schedule(dagbag: Any) -> None:
    dag = dagbag.dags["stylegan2_train"]
    commits = {t for t in dag.task_dict if t.startswith("commit_")}
    assert len(commits) == 10  # 7, and the projection targets and both projections
    # each branch projects once its network is committed and the targets are checked out
    for branch, network in (("ours", "commit_trained_network"),
                            ("pretrained", "commit_pretrained_network")):
        assert dag.task_dict[f"project_{branch}"].upstream_task_ids == {
            network, "resolve_projection_targets"}
    assert dag.task_dict["commit_projection_targets"].upstream_task_ids == {
        "choose_projection"}
    assert dag.params["project_targets"] is None  # off by default
    assert dag.task_dict["import_pretrained"].upstream_task_ids >= {"commit_pretrained_pickle"}
    # from scratch, or after the init network: a version, or the pretrained import
    assert dag.task_dict["train"].upstream_task_ids == {
        "plan", "resolve_dataset", "resolve_init_ours", "init_ours_from_import"}
    assert dag.task_dict["train"].trigger_rule == "none_failed_min_one_success"
    assert dag.task_dict["init_ours_from_import"].upstream_task_ids == {
        "choose_init_ours", "commit_pretrained_network"}
    assert dag.task_dict["evaluate_ours"].upstream_task_ids == {"commit_trained_network",
                                                                "resolve_reference_dataset"}
    assert dag.task_dict["import_pretrained"].trigger_rule == "none_failed_min_one_success"
    assert dag.task_dict["train"].retries == 2
    assert [a.uri for a in dag.timetable.asset_condition.objects] == [
        "x-stylegan://versions/lsun-cat-256"]
    assert dag.params["pretrained"].endswith("stylegan2-cat-config-f.pkl")
    assert dag.params["metrics"] == ["fid50k", "ppl2_wend"] and dag.params["seeds"] == "6600-6605"


def test_asset_runs_train_only_when_switched_on(airflow_db: Any, dagbag: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    gate = dagbag.dags["stylegan2_train"].task_dict["gate"]
    asset_run = SimpleNamespace(run_type="asset_triggered")
    manual_run = SimpleNamespace(run_type="manual")
    assert gate.python_callable(dag_run=manual_run) is True
    assert gate.python_callable(dag_run=asset_run) is False
    monkeypatch.setenv("AIRFLOW_VAR_STYLEGAN_TRAIN_ON_NEW_DATASET", "true")
    assert gate.python_callable(dag_run=asset_run) is True


@pytest.mark.parametrize(("conf", "message"), [
    pytest.param({"resolution": 48}, "resolution", id="resolution"),
    pytest.param({"max_images": 0}, "max_images", id="max-images"),
    pytest.param({"shards": "two"}, "shards", id="shards-type"),
    pytest.param({"dataset_name": "Bad Name"}, "dataset_name", id="name-pattern"),
])
def test_bad_params_are_rejected_by_the_schema(dagbag: Any, conf: dict[str, Any],
                                               message: str) -> None:
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(dagbag.dags["stylegan2_prepare"].params)
    with pytest.raises(ParamValidationError, match=message):
        params.update(conf)
        params.validate()
