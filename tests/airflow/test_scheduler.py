"""stylegan2_prepare under a real scheduler on PostgreSQL, triggered by the CLI and REST."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.stack import AirflowStack, postgres_available
from tests.conftest import need

pytestmark = [pytest.mark.scheduler, pytest.mark.airflow]

CONF = {"source_url": "sample", "sample_count": 20, "resolution": 8, "max_images": 16,
        "shards": 2, "tags": []}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    need(postgres_available(), "PostgreSQL server binaries (initdb, pg_ctl) not found")
    stack = AirflowStack(tmp_path_factory.mktemp("stack"))
    try:
        stack.start()
        stack.wait(lambda: stack.api("GET", "/api/v2/dags/stylegan2_prepare") is not None, 180,
                   "the DAG to be parsed")
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


def test_cli_trigger_runs_to_success(stack: AirflowStack) -> None:
    conf = {**CONF, "dataset_name": "cli-cats"}
    stack.airflow("dags", "trigger", "stylegan2_prepare", "--run-id", "cli_run",
                  "--conf", json.dumps(conf))
    state = stack.wait_for_run("stylegan2_prepare", "cli_run")
    assert state == "success", stack.logs()
    assert (Path(stack.env["STYLEGAN_STORE"]) / "names" / "cli-cats" / "versions"
            / "000001.json").is_file()


def test_rest_trigger_runs_to_success(stack: AirflowStack) -> None:
    body = {"dag_run_id": "rest_run", "logical_date": None,
            "conf": {**CONF, "dataset_name": "rest-cats"}}
    created = stack.api("POST", "/api/v2/dags/stylegan2_prepare/dagRuns", body)
    assert created is not None and created["dag_run_id"] == "rest_run"
    assert stack.wait_for_run("stylegan2_prepare", "rest_run") == "success", stack.logs()


def test_bad_conf_is_refused_by_the_api(stack: AirflowStack) -> None:
    body = {"dag_run_id": "bad_run", "logical_date": None, "conf": {"resolution": 48}}
    assert stack.api("POST", "/api/v2/dags/stylegan2_prepare/dagRuns", body) is None
    assert stack.run_state("stylegan2_prepare", "bad_run") is None
