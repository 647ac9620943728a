"""Airflow side of the StyleGAN2 pipelines: operators, sensors, runners, profiles, plugin."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """Provider metadata, found by Airflow through the ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "stylegan-airflow",
        "name": "StyleGAN2 pipelines",
        "description": "Versioned, reproducible StyleGAN2 pipelines: stage operators with "
                       "local and Docker runners, a version store, and a Git commit sensor.",
        "versions": [__version__],
        "integrations": [{"integration-name": "StyleGAN2",
                          "external-doc-url": "https://arxiv.org/abs/1912.04958",
                          "tags": ["software"]}],
        "operators": [{"integration-name": "StyleGAN2",
                       "python-modules": ["stylegan_airflow.operators"]}],
        "sensors": [{"integration-name": "StyleGAN2",
                     "python-modules": ["stylegan_airflow.sensors"]}],
    }
