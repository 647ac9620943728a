"""The trigger forms: every param explains itself, metrics are picked from the registry,
tags are optional, and the lists the DAG files must spell out match their sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

DAGS = ["stylegan2_prepare", "stylegan2_train", "stylegan2_watch_repo"]


def _validate(dagbag: Any, dag_id: str, conf: dict[str, Any]) -> None:
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict(dagbag.dags[dag_id].params)
    params.update(conf)
    params.validate()


@pytest.mark.parametrize("dag_id", DAGS)
def test_every_param_has_a_description(dagbag: Any, dag_id: str) -> None:
    params = dagbag.dags[dag_id].params
    missing = [k for k in params if not (params.get_param(k).description or "").strip()]
    assert missing == []


def test_the_metric_names_are_the_registry() -> None:
    from stylegan_airflow.params import METRIC_NAMES

    from stylegan_ops.metrics.evaluate import METRICS

    assert list(METRIC_NAMES) == list(METRICS)


def test_the_metrics_form_is_a_multi_select_of_the_registry(dagbag: Any) -> None:
    from stylegan_airflow.params import METRIC_NAMES

    schema = dagbag.dags["stylegan2_train"].params.get_param("metrics").schema
    assert schema["items"]["enum"] == list(METRIC_NAMES) == schema["examples"]
    assert schema["uniqueItems"] is True


def test_the_default_profiles_are_the_packaged_ones() -> None:
    import yaml
    from stylegan_airflow import params

    packaged = Path(params.__file__).with_name("profiles.yaml")
    assert tuple(yaml.safe_load(packaged.read_text())) == params.DEFAULT_PROFILES


@pytest.mark.parametrize(("dag_id", "conf"), [
    pytest.param("stylegan2_train", {"metrics": ["swd", "fid50k_full"]}, id="metrics-list"),
    pytest.param("stylegan2_train", {"metrics": "fid50k,swd"}, id="metrics-text"),
    pytest.param("stylegan2_train", {"tags": None}, id="train-no-tags"),
    pytest.param("stylegan2_prepare", {"tags": None}, id="prepare-no-tags"),
    pytest.param("stylegan2_prepare", {"profile": "my-cluster"}, id="own-profile"),
])
def test_good_form_values_pass(dagbag: Any, dag_id: str, conf: dict[str, Any]) -> None:
    _validate(dagbag, dag_id, conf)


@pytest.mark.parametrize("dag_id", ["stylegan2_train", "stylegan2_prepare"])
def test_a_conf_without_tags_passes(dagbag: Any, dag_id: str) -> None:
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict({k: v for k, v in dagbag.dags[dag_id].params.items() if k != "tags"})
    params.validate()


@pytest.mark.parametrize("metrics", [
    pytest.param(["fid"], id="unknown-name"),
    pytest.param(["swd", "swd"], id="repeated"),
    pytest.param([], id="none"),
    pytest.param(None, id="cleared"),
    pytest.param("fid50k,fid", id="unknown-in-text"),
    pytest.param("swd,", id="text-trailing-comma"),
])
def test_bad_metrics_are_refused(dagbag: Any, metrics: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="metrics"):
        _validate(dagbag, "stylegan2_train", {"metrics": metrics})


@pytest.mark.parametrize(("metrics", "arg"), [
    pytest.param(["fid50k", "swd"], "fid50k,swd", id="list"),
    pytest.param("kid50k_full", "kid50k_full", id="text"),
])
def test_the_evaluate_command_line_takes_metrics_comma_separated(
        dagbag: Any, metrics: Any, arg: str) -> None:
    from types import SimpleNamespace

    plan = dagbag.dags["stylegan2_train"].task_dict["plan"].python_callable
    params = {**dagbag.dags["stylegan2_train"].params.dump(), "metrics": metrics}
    out = plan(params=params, dag_run=SimpleNamespace(run_id="r1", run_type="manual"))
    evaluate = out["evaluate"]
    assert evaluate[evaluate.index("--metrics") + 1] == arg
