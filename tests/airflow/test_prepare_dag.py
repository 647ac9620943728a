"""stylegan2_prepare end to end under dag.test() with the local runner."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli

pytestmark = pytest.mark.airflow

CONF = {"source_url": "sample", "sample_count": 40, "resolution": 16, "max_images": 30,
        "shards": 3, "dataset_name": "sample-cats-16", "tags": ["ci"],
        "git_commit": "0123456789abcdef0123456789abcdef01234567"}


def test_prepare_on_the_sample_commits_a_version_with_lineage(airflow_db: Path,
                                                              dagbag: Any) -> None:
    dag = dagbag.dags["stylegan2_prepare"]
    run = dag.test(run_conf=CONF)
    assert str(run.state) == "success"
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states["download"] == states["unzip"] == "skipped"
    assert states["commit"] == states["merge"] == "success"
    store = os.environ["STYLEGAN_STORE"]
    res = cli("store", "--store", store, "show", "sample-cats-16:ci")
    assert res.exit_code == 0, res.stderr
    version = json.loads(res.stdout)
    lineage = version["lineage"]
    assert (lineage["dag_id"], lineage["task_id"], lineage["run_id"]) == (
        "stylegan2_prepare", "commit", run.run_id)
    assert lineage["git_commit"] == CONF["git_commit"] and lineage["try_number"] == 1
    assert lineage["params"]["max_images"] == 30
    files = {f["path"] for f in version["manifest"]["files"]}
    assert {"sample-cats-16-r02.tfrecords", "sample-cats-16-r04.tfrecords", "dataset.json",
            "reals.png"} <= files
    out = Path(store).parent / "checkout"
    assert cli("store", "--store", store, "checkout", "sample-cats-16:latest", out).exit_code == 0
    assert json.loads((out / "dataset.json").read_text())["count"] == 30
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.query(AssetEvent).all()
        assert any((e.extra or {}).get("version_id") == version["id"] for e in events)
