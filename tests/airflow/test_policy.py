"""The queue policy's pieces on the real, serialized DAGs (the scheduler's view of them).
Under a real scheduler: tests/airflow/test_scheduler.py::test_each_stage_is_queued_on_its_
runs_profile; under Celery workers: tests/deploy/test_compose_stack.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def serialized(airflow_db: Any) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    from tests.airflow.conftest import ROOT

    bag = DagBag(str(ROOT / "dags"))
    return {d: DagSerialization.from_dict(DagSerialization.to_dict(bag.dags[d]))
            for d in ("stylegan2_train", "stylegan2_prepare")}


@pytest.mark.parametrize(("template", "params", "expected"), [
    pytest.param("cpu", {}, "cpu", id="plain-name"),
    pytest.param("{{ params.profile }}", {"profile": "gpu"}, "gpu", id="top-level"),
    pytest.param("{{params.profiles.train}}", {"profiles": {"train": "big"}}, "big",
                 id="nested-no-spaces"),
    pytest.param("{{ params.profiles.train }}", {"profiles": {}}, None, id="missing-key"),
    pytest.param("{{ params.profiles.train }}", {"profiles": "gpu"}, None, id="not-a-mapping"),
    pytest.param("{{ params.profile }}", {"profile": 3}, None, id="not-a-string"),
    pytest.param("{{ params.profile | upper }}", {"profile": "gpu"}, None, id="a-filter"),
    pytest.param("{{ var.value.profile }}", {}, None, id="not-params"),
])
def test_profile_templates_resolve_from_params(template: str, params: dict[str, Any],
                                               expected: str | None) -> None:
    from stylegan_airflow.policy import resolve_profile

    assert resolve_profile(template, params) == expected


def ti_for(task: Any) -> Any:
    return SimpleNamespace(task=task, task_id=task.task_id, queue=task.queue, pool=task.pool)


@pytest.mark.parametrize(("dag_id", "task_id", "conf", "queue"), [
    pytest.param("stylegan2_train", "train", {}, "gpu", id="train-default-profile"),
    pytest.param("stylegan2_train", "train", {"profiles": {"download": "cpu", "train": "cpu",
                                                           "evaluate": "gpu",
                                                           "generate": "gpu"}},
                 "cpu", id="train-on-cpu"),
    pytest.param("stylegan2_train", "fetch_pretrained", {}, "cpu", id="download-default"),
    pytest.param("stylegan2_prepare", "extract", {"profile": "gpu"}, "gpu", id="mapped-task"),
    pytest.param("stylegan2_train", "plan", {"profiles": {"train": "gpu"}}, "default",
                 id="not-a-stage"),
    pytest.param("stylegan2_train", "train", {"profiles": {"download": "cpu",
                                                           "train": "no-such-profile",
                                                           "evaluate": "gpu",
                                                           "generate": "gpu"}},
                 "default", id="unknown-profile-left-alone"),
])
def test_stage_instances_get_their_runs_profile_queue(serialized: dict[str, Any], dag_id: str,
                                                      task_id: str, conf: dict[str, Any],
                                                      queue: str) -> None:
    from stylegan_airflow.policy import task_instance_mutation_hook

    ti = ti_for(serialized[dag_id].get_task(task_id))
    task_instance_mutation_hook(ti, SimpleNamespace(conf=conf))
    assert ti.queue == queue


def test_without_a_run_nothing_changes(serialized: dict[str, Any]) -> None:
    from stylegan_airflow.policy import task_instance_mutation_hook

    ti = ti_for(serialized["stylegan2_train"].get_task("train"))
    task_instance_mutation_hook(ti, None)  # TaskInstance.__init__ calls it with no run
    assert ti.queue == "default"
