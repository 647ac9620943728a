"""Shared fixtures: generated data only, nothing downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from stylegan_ops.cli import main
from stylegan_ops.data import sample

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REQUIRE_INTEGRATION = os.environ.get("STYLEGAN_REQUIRE_INTEGRATION") == "1"


def need(ok: bool, reason: str) -> None:
    """Skip when a real component (Docker, PostgreSQL, …) is missing on a developer's
    machine; under STYLEGAN_REQUIRE_INTEGRATION=1 (CI) a missing component fails instead."""
    if ok:
        return
    if REQUIRE_INTEGRATION:
        pytest.fail(f"required for CI but missing: {reason}")
    pytest.skip(reason)


def cli(*args: str | Path) -> Result:
    """Run ``stylegan-ops`` in-process; the result has exit_code, stdout and stderr."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def cli_subprocess(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``stylegan-ops`` as a real process, as a container or Airflow task would."""
    return subprocess.run([sys.executable, "-m", "stylegan_ops.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, check=False)


@pytest.fixture(scope="session")
def sample_lmdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 decodable WebP cats and 6 damaged records, LSUN layout."""
    out = tmp_path_factory.mktemp("lmdb") / "sample"
    sample.run(sample.SampleConfig(out, count=60, bad=6, seed=3, workers=2))
    return out
