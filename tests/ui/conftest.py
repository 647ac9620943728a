"""Fixtures for the StyleGAN2 page: a filled store, the app over it, a signed-push helper.

Airflow's environment comes from tests/airflow/conftest.py (imported first, so that its
private AIRFLOW_HOME is in place before anything imports Airflow).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.airflow.conftest import ROOT, airflow_db  # noqa: F401 - re-exported fixture
from tests.ui.browser import chromium
from tests.ui.storefill import fill

HTML = {"accept": "text/html"}


@pytest.fixture(scope="session")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A store holding every kind of version the page shows (read-only for the tests)."""
    base = tmp_path_factory.mktemp("ui-store")
    made = fill(base / "store", base / "work")
    return base / "store", made


@pytest.fixture
def client(filled: tuple[Path, dict[str, Any]], tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The app over the filled store, with the Airflow login replaced by a fixed user."""
    from fastapi.testclient import TestClient
    from stylegan_airflow.ui import create_app
    from stylegan_airflow.ui.auth import require_user

    monkeypatch.setenv("STYLEGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
    app = create_app(filled[0])
    app.dependency_overrides[require_user] = lambda: "tester"
    with TestClient(app) as c:
        yield c


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium at 1400 × 1000, where the Airflow UI's run tab frame is about
    1030 px wide."""
    with chromium(1400, 1000) as driver:
        yield driver
