"""The DAGs under a real scheduler on PostgreSQL, triggered by the CLI and REST; a training
task killed mid-run is retried by Airflow and resumes from its snapshot. Reruns that reuse
stage results (the repo watcher's seeds-only commit among them) are in
test_reuse_scheduler.py."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.stack import AirflowStack, commit_cats32, running_stack, stage_pids
from tests.conftest import cli

pytestmark = [pytest.mark.scheduler, pytest.mark.airflow]

CONF = {"source_url": "sample", "sample_count": 20, "resolution": 8, "max_images": 16,
        "shards": 2, "tags": []}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    with running_stack(tmp_path_factory.mktemp("stack"), ("stylegan2_prepare",),
                       {"STYLEGAN_TRAIN_RETRY_DELAY": "1"}) as stack:
        yield stack


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


@pytest.mark.parametrize(("dag_id", "conf", "queues"), [
    pytest.param("stylegan2_train",
                 {"dataset_ref": "no-such-dataset:latest", "pretrained": None,
                  "profiles": {"download": "cpu", "train": "gpu", "evaluate": "gpu",
                               "generate": "cpu"}},
                 {"train": "gpu", "evaluate_ours": "gpu", "generate_ours": "cpu",
                  "fetch_pretrained": "cpu", "plan": "default"}, id="train-per-kind"),
    pytest.param("stylegan2_train",
                 {"dataset_ref": "no-such-dataset:latest", "pretrained": None,
                  "profiles": {"download": "gpu", "train": "cpu", "evaluate": "cpu",
                               "generate": "cpu"}},
                 {"train": "cpu", "evaluate_ours": "cpu", "fetch_pretrained": "gpu"},
                 id="train-swapped"),
    pytest.param("stylegan2_prepare", {**CONF, "dataset_name": "queued", "profile": "gpu"},
                 {"make_sample": "gpu", "merge": "gpu", "plan": "default"}, id="prepare-gpu"),
])
def test_each_stage_is_queued_on_its_runs_profile(stack: AirflowStack, dag_id: str,
                                                  conf: dict[str, object],
                                                  queues: dict[str, str],
                                                  request: pytest.FixtureRequest) -> None:
    """Profiles chosen per run reach the CeleryExecutor's queues (the scheduler's policy
    sets each task instance's queue from the run's conf as it creates it)."""
    run_id = f"queues_{request.node.callspec.id}"
    assert stack.api("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                     {"dag_run_id": run_id, "logical_date": None, "conf": conf})
    found: dict[str, str] = {}

    def created() -> bool:
        tis = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances") or {}
        found.update({t["task_id"]: t["queue"] for t in tis.get("task_instances", [])})
        return set(queues) <= set(found)

    stack.wait(created, 120, f"the task instances of {run_id}")
    assert {t: found[t] for t in queues} == queues
    # stopped here: nothing else of this run is of interest to the module's other tests
    stack.api("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", {"state": "failed"})


@pytest.fixture(scope="module")
def cats32(stack: AirflowStack, sample_lmdb: Path,
           tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 32 px dataset version ``cats-32`` in the stack's store."""
    return commit_cats32(stack.env["STYLEGAN_STORE"], sample_lmdb, tmp_path_factory.mktemp("cats"))


def test_killed_training_is_retried_and_resumes(stack: AirflowStack, cats32: str) -> None:
    store = stack.env["STYLEGAN_STORE"]
    conf = {"dataset_ref": cats32, "pretrained": None, "config": "small",
            "total_kimg": 2.5, "batch": 8, "tick_kimg": 0.1, "snapshot_ticks": 1,
            "metrics": "swd", "metric_images": 16, "seeds": "1-2",
            "profiles": {"download": "cpu", "train": "cpu", "evaluate": "cpu",
                         "generate": "cpu"}}
    stack.airflow("dags", "trigger", "stylegan2_train", "--run-id", "kill_run",
                  "--conf", json.dumps(conf))
    train_dir = Path(stack.env["STYLEGAN_WORKSPACE"]) / "stylegan2_train" / "kill_run" / "train"
    stack.wait(lambda: any(train_dir.glob("network-snapshot-*")), 300, "a first snapshot")
    pids = stage_pids(f"stylegan_ops.cli train .*{train_dir}")
    assert pids, "the training process was not found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert stack.wait_for_run("stylegan2_train", "kill_run", timeout=600) == "success", \
        stack.logs()
    ti = stack.api("GET", "/api/v2/dags/stylegan2_train/dagRuns/kill_run/taskInstances/train")
    assert ti["try_number"] == 2 and ti["state"] == "success"
    log = stack.api("GET", "/api/v2/dags/stylegan2_train/dagRuns/kill_run/taskInstances/train"
                           "/logs/2")
    text = json.dumps(log)
    match = re.search(r"resumed from \S*network-snapshot-(\d{6}\.\d{3}) at ([0-9.]+) kimg", text)
    assert match and float(match.group(2)) > 0, text[-2000:]
    assert float(match.group(1)) == pytest.approx(float(match.group(2)))  # named by its kimg
    kimgs = [json.loads(x)["kimg"] for x in (train_dir / "stats.jsonl").read_text().splitlines()]
    # one stats file across both tries: the second continued, it did not start over
    assert sum(k < 0.15 for k in kimgs) == 1 and kimgs[-1] >= 2.5, kimgs
    assert time.monotonic() - killed_at < 600
    generated = json.loads(cli("store", "--store", store, "show",
                               "stylegan2-generated-ours:latest").stdout)
    assert generated["lineage"]["run_id"] == "kill_run"


@pytest.mark.parametrize("conf", [
    pytest.param({"config": "config-x"}, id="unknown-preset"),
    pytest.param({"seeds": "66oo"}, id="bad-seeds"),
    pytest.param({"profiles": {"train": "gpu"}}, id="missing-profiles"),
])
def test_train_conf_is_validated_by_the_cli(stack: AirflowStack, conf: dict[str, object]) -> None:
    res = stack.airflow("dags", "trigger", "stylegan2_train", "--run-id", "bad_train",
                        "--conf", json.dumps(conf), check=False)
    assert res.returncode != 0, res.stdout
    assert "Invalid input for param" in res.stdout + res.stderr, res.stdout + res.stderr
    assert stack.run_state("stylegan2_train", "bad_train") is None

