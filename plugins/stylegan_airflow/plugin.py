"""The Airflow plugin entry (the UI pages arrive with the UI issue)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class StyleganPlugin(AirflowPlugin):
    name = "stylegan"
