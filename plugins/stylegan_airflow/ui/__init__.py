"""The StyleGAN2 page inside the Airflow UI: versions, lineage, metrics, images, graphs."""

from __future__ import annotations

from stylegan_airflow.ui.app import PREFIX, create_app

__all__ = ["PREFIX", "create_app"]
