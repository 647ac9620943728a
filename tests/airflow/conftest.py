"""Airflow test environment: a private AIRFLOW_HOME with a migrated SQLite database.

The environment is set before any test module imports Airflow, which reads its
configuration at import time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOME = Path(tempfile.mkdtemp(prefix="stylegan-airflow-home-"))
os.environ.update({
    "AIRFLOW_HOME": str(HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    "STYLEGAN_WORKSPACE": str(HOME / "workspace"),
    "STYLEGAN_STORE": str(HOME / "store"),
    "STYLEGAN_WATCH_TIMEOUT": "3",  # one watcher run looks for news this long, then skips
    "STYLEGAN_WATCH_POKE": "1",
})


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the SQLite metadata database once per session."""
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True,
                   capture_output=True)
    return HOME


@pytest.fixture(scope="session")
def dagbag() -> object:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(ROOT / "dags"))
