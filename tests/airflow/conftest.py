"""Airflow test environment: a private AIRFLOW_HOME with a migrated SQLite database.

The environment is set before any test module imports Airflow, which reads its
configuration at import time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST_DAGS = Path(__file__).resolve().parent / "dags"
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
    # the product's DAGs, plus test-only DAGs in a bundle of their own
    "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([
        {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(ROOT / "dags")}},
        {"name": "test-dags", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(TEST_DAGS)}},
    ]),
})


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the SQLite metadata database once per session."""
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True,
                   capture_output=True)
    return HOME


@pytest.fixture
def dagbag() -> object:
    """A fresh parse per test: dag.test(run_conf=...) leaves the conf in the DAG's params."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(ROOT / "dags"))
