"""Run directories under the workspace, safe for file systems and shared by runners."""

from __future__ import annotations

import re
from pathlib import Path

from stylegan_airflow.runners import workspace


def run_dir(dag_id: str, run_id: str) -> str:
    """``<workspace>/<dag_id>/<run_id with unsafe characters replaced>``."""
    return str(Path(workspace()) / dag_id / re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id))
