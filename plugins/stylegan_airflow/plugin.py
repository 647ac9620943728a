"""The Airflow plugin: the StyleGAN2 page and the GitHub webhook inside the api-server.

The FastAPI app is mounted at ``/stylegan``; the external views put it in the Airflow UI's
navigation and give every DAG run a tab with the versions it committed. The iframe
``href`` values carry no leading slash: the UI resolves them against its own base URL.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from stylegan_airflow.ui import PREFIX, create_app

HREF = PREFIX.lstrip("/")
ICON = f"{HREF}/static/icon.svg"

FASTAPI_APPS: list[dict[str, Any]] = [
    {"app": create_app(), "url_prefix": PREFIX, "name": "StyleGAN2"}]
EXTERNAL_VIEWS: list[dict[str, Any]] = [
    {"name": "StyleGAN2", "href": f"{HREF}/", "url_route": "stylegan2", "destination": "nav",
     "nav_top_level": True, "icon": ICON},
    {"name": "StyleGAN2 versions", "href": f"{HREF}/runs/{{DAG_ID}}/{{RUN_ID}}",
     "url_route": "stylegan2-run-versions", "destination": "dag_run", "icon": ICON},
]


class StyleganPlugin(AirflowPlugin):
    name = "stylegan"
    fastapi_apps = FASTAPI_APPS
    external_views = EXTERNAL_VIEWS
