"""Route each stage task to its profile's queue and pool, run by run.

A task's queue is fixed when its DAG is parsed, but ``stylegan2_train`` chooses profiles per
run (``profiles.train: gpu`` in the conf), so under the CeleryExecutor every templated-profile
task would wait on the ``default`` queue, whatever its profile. Airflow's cluster policy
``task_instance_mutation_hook`` runs in the scheduler as each task instance is created, with
the run at hand: it resolves the profile from the run's params and sets the instance's queue
and pool, which the scheduler persists and dispatches on.

Enable it on the scheduler (the airflow image does) with one line in
``$AIRFLOW_HOME/config/airflow_local_settings.py``::

    from stylegan_airflow.policy import task_instance_mutation_hook  # noqa: F401

(a policy registered only through a package entry point is not applied when Airflow 3.3
creates task instances: it checks for a local settings module).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from stylegan_airflow.profiles import get_profile

log = logging.getLogger(__name__)
# The profile templates the DAGs use: "{{ params.profile }}", "{{ params.profiles.train }}"
PARAM_TEMPLATE = re.compile(r"^\{\{\s*params((?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s*\}\}$")


def profile_template(task: Any) -> str | None:
    """The task's profile argument when it is a stage task (mapped or not), else None."""
    if getattr(task, "task_type", None) != "StageOperator" and \
            getattr(task, "operator_name", None) != "StageOperator":
        return None
    value = getattr(task, "profile", None)
    if value is None:  # a mapped task keeps its unmapped arguments apart
        value = (getattr(task, "partial_kwargs", None) or {}).get("profile")
    return value if isinstance(value, str) else None


def run_params(task: Any, dag_run: Any) -> dict[str, Any]:
    """The run's params as its tasks will see them: the DAG's defaults, then the conf."""
    params: dict[str, Any] = {}
    dag = getattr(task, "dag", None)
    defaults = getattr(dag, "params", None) or {}
    for key in defaults:
        try:
            params[key] = defaults[key]  # ParamsDict resolves Param objects to their values
        except Exception:  # noqa: BLE001,S112 - a default that does not validate: the conf's
            continue
    conf = getattr(dag_run, "conf", None)
    if isinstance(conf, dict):
        params.update(conf)
    return params


def resolve_profile(template: str, params: dict[str, Any]) -> str | None:
    """``{{ params.a.b }}`` looked up in params; a plain name is itself; None otherwise."""
    if "{{" not in template:
        return template
    m = PARAM_TEMPLATE.match(template)
    if not m:
        return None
    value: Any = params
    for key in m.group(1).strip(".").split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, str) else None


def task_instance_mutation_hook(task_instance: Any, dag_run: Any = None) -> None:
    """Give a stage task instance its run's profile's queue and pool. Anything it cannot
    resolve (no run yet, an unknown profile) leaves the instance as it is: the task then
    fails on its worker with the profile error, which names the profile and the file."""
    task = getattr(task_instance, "task", None)
    template = profile_template(task)
    if template is None or dag_run is None:
        return
    name = resolve_profile(template, run_params(task, dag_run))
    if name is None:
        return
    try:
        profile = get_profile(name)
    except ValueError as exc:
        log.warning("task %s: %s", task_instance.task_id, exc)
        return
    task_instance.queue = profile.queue
    task_instance.pool = profile.pool
