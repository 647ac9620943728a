"""The DAG files: import cleanly and fast, import no TensorFlow, validate their params."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS = ["stylegan2_prepare", "stylegan2_watch_repo"]


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
        "m.startswith(('stylegan_ops.data', 'stylegan_ops.store', 'stylegan_ops.networks'))]\n"
        "print(json.dumps(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_prepare_dag_shape(dagbag: Any) -> None:
    dag = dagbag.dags["stylegan2_prepare"]
    assert set(dag.task_dict) == {"plan", "shard_plan", "choose_source", "make_sample",
                                  "download", "unzip", "extract", "merge", "inspect",
                                  "commit"}
    assert dag.task_dict["extract"].upstream_task_ids >= {"make_sample", "unzip"}
    assert dag.task_dict["commit"].upstream_task_ids == {"inspect", "plan"}
    assert dag.params["source_url"] == "http://dl.yf.io/lsun/objects/cat.zip"


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
