"""Airflow finds the plugin through its entry point, with the app and the UI entries."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.airflow


def test_airflow_loads_the_app_under_its_prefix() -> None:
    from airflow import plugins_manager

    apps, _ = plugins_manager.get_fastapi_plugins()
    ours = [a for a in apps if a["name"] == "StyleGAN2"]
    assert len(ours) == 1 and ours[0]["url_prefix"] == "/stylegan"
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES

    assert not any(ours[0]["url_prefix"].startswith(p) for p in RESERVED_URL_PREFIXES)


def test_external_views_match_airflows_schema() -> None:
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse
    from stylegan_airflow.plugin import StyleganPlugin

    views = [ExternalViewResponse.model_validate(v) for v in StyleganPlugin.external_views]
    assert [(v.destination, v.url_route) for v in views] == [
        ("nav", "stylegan2"), ("dag_run", "stylegan2-run-versions")]
    # relative hrefs: the UI resolves them against its base URL (a sub-path deployment)
    assert all(not v.href.startswith("/") for v in views)
    assert "{DAG_ID}" in views[1].href and "{RUN_ID}" in views[1].href
