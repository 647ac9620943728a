"""DatasetVersionOperator: lineage from the Airflow context and upstream versions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.airflow


def test_lineage_records_run_commit_params_and_input_versions(airflow_db: Path,
                                                              tmp_path: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from stylegan_ops.store.local import Store
    from tests.airflow.conftest import TEST_DAGS

    for name in ("data", "model"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(name)
    dag = DagBag(str(TEST_DAGS)).dags["lineage_test"]
    run: Any = dag.test(run_conf={"git_commit": "c0ffee", "knob": 7,
                                  "data_dir": str(tmp_path / "data"),
                                  "model_dir": str(tmp_path / "model")})
    assert str(run.state) == "success"
    store = Store(Path(os.environ["STYLEGAN_STORE"]))
    data_v, model_v = store.resolve("lineage-data"), store.resolve("lineage-model")
    lin = model_v.lineage
    assert lin.inputs == (f"lineage-data@{data_v.id}",)
    assert (lin.dag_id, lin.task_id, lin.run_id, lin.git_commit) == (
        "lineage_test", "model", run.run_id, "c0ffee")
    assert lin.params["git_commit"] == "c0ffee" and lin.params["knob"] == 7
