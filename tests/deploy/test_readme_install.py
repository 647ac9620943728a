"""README's "Install into an existing Airflow", run as written, parsed from README.md.

The section's ```bash blocks, in order: the install (run in a fresh venv, pip pointed at the
offline wheelhouse by the environment alone), the shared settings (their exports become the
environment of every component), then what a user runs once the components are up (copy
the DAGs, unpause, trigger). After a block that triggers DAGs, the test waits for those runs
to succeed before it goes on, as the reader is told to. The components are a real Airflow on
PostgreSQL started from that venv; the README's text is the only source of commands and
confs, so a renamed param or a wrong path in it fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from tests.airflow.stack import ROOT, AirflowStack, postgres_available
from tests.conftest import cli, need

pytestmark = [pytest.mark.airflow, pytest.mark.scheduler, pytest.mark.slow]

SECTION = "### Install into an existing Airflow"
WHEELHOUSE = ROOT / "images" / ".wheelhouse"
DEPS = (WHEELHOUSE / "deps-tf", WHEELHOUSE / "deps-airflow,celery")
EXPORT = re.compile(r"^export ([A-Za-z_][A-Za-z0-9_]*)=", re.M)
TRIGGER = re.compile(r"airflow dags trigger (\S+) --conf '([^']*)'")
# What the test's own process carries that a user's fresh shell would not.
FOREIGN = ("AIRFLOW", "STYLEGAN_", "PIP_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")


def section_blocks(readme: str) -> list[str]:
    """The ```bash blocks of the section (up to the next heading of its level or above)."""
    blocks: list[str] = []
    inside = False
    fence: str | None = None  # the info string of the code block we are in
    lines: list[str] = []
    for line in readme.splitlines(keepends=True):
        if fence is not None:  # in a code block, a leading # is a comment, not a heading
            if line.rstrip() != "```":
                lines.append(line)
                continue
            if inside and fence == "bash":
                blocks.append("".join(lines))
            fence = None
        elif line.startswith("```"):
            fence, lines = line[3:].strip(), []
        elif line.rstrip() == SECTION:
            inside = True
        elif inside and re.match(r"#{1,3} ", line):
            break
    return blocks


def triggers(block: str) -> list[tuple[str, dict[str, Any]]]:
    """(dag id, conf) of every ``airflow dags trigger`` in a block."""
    return [(m.group(1), json.loads(m.group(2))) for m in TRIGGER.finditer(block)]


def bash(script: str, env: dict[str, str], cwd: Path, timeout: float = 300
         ) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["bash", "-c", f"set -euo pipefail\n{script}"], env=env, cwd=cwd,
                         text=True, capture_output=True, timeout=timeout, check=False)
    assert res.returncode == 0, f"{script}\nexit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def user_env() -> dict[str, str]:
    """This process's environment without Airflow, StyleGAN, pip or venv settings."""
    own_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p and p != own_bin)
    return env


def wheelhouse() -> list[Path]:
    """The offline wheelhouse, filled by ``images/build.sh wheels`` when absent."""
    if not all(d.is_dir() and any(d.glob("*.whl")) for d in DEPS):
        subprocess.run([str(ROOT / "images" / "build.sh"), "wheels"], check=True, timeout=1200)
    return list(DEPS)


def checkout(dest: Path) -> Path:
    """The working tree's files as a user's checkout (pip builds in it, so not in ROOT)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
                           ).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


def wait_for_runs(stack: AirflowStack, dag_id: str, timeout: float) -> list[dict[str, Any]]:
    def finished() -> list[dict[str, Any]] | None:
        runs = (stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns") or {}).get("dag_runs", [])
        done = [r for r in runs if r["state"] in ("success", "failed")]
        return runs if runs and len(done) == len(runs) else None

    stack.wait(lambda: finished() is not None, timeout, f"the runs of {dag_id}")
    return finished() or []


@pytest.fixture
def venv() -> Iterator[Path]:
    """A fresh venv, removed afterwards (Airflow and TensorFlow: ~1.5 GB)."""
    need(postgres_available(), "PostgreSQL server binaries (initdb, pg_ctl) not found")
    need(shutil.which("git") is not None, "git not found")
    d = Path(tempfile.mkdtemp(prefix="stylegan-readme-venv-"))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(d)], check=True, timeout=120)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.timeout(1200)
def test_readme_install_section_runs_as_written(venv: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    blocks = section_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 3, "the section needs an install, a settings and a post-start block"
    install, settings, *after = blocks
    timings: dict[str, float] = {}

    # install: the README's pip lines, in the venv, offline through the environment only
    src = checkout(tmp_path / "checkout")
    pip_env = {**user_env(), "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
               "PIP_FIND_LINKS": " ".join(map(str, wheelhouse())),
               "PIP_NO_COMPILE": "1"}  # bytecode is compiled on first import instead
    bash(f"source {venv}/bin/activate\n{install}", pip_env, src, timeout=900)
    timings["install"] = time.monotonic() - started

    # settings: what the block exports is the environment of every component
    root = tmp_path / "stylegan-root"
    shell = {**user_env(), "STYLEGAN_ROOT": str(root)}
    dumped = bash(f"{settings}\nenv -0", shell, tmp_path).stdout.split("\0")
    after_settings = dict(kv.split("=", 1) for kv in dumped if "=" in kv)
    shared = {k: after_settings[k] for k in EXPORT.findall(settings)}
    for key in ("STYLEGAN_STORE", "STYLEGAN_WORKSPACE"):
        assert Path(shared[key]).is_absolute() and Path(shared[key]).is_relative_to(root), \
            shared

    # the "existing Airflow": the venv's components on PostgreSQL, its own DAGs folder,
    # Airflow's defaults otherwise (new DAGs start paused)
    (tmp_path / "stack").mkdir()
    with mock.patch.dict(os.environ, user_env(), clear=True):
        stack = AirflowStack(tmp_path / "stack", bin_dir=venv / "bin",
                             extra_env={"AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags")})
    (tmp_path / "dags").mkdir()
    for key in ("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "STYLEGAN_STORE",
                "STYLEGAN_WORKSPACE"):
        stack.env.pop(key)
    stack.env.update(shared)
    stack.env.update({"VIRTUAL_ENV": str(venv),
                      "PATH": f"{venv / 'bin'}{os.pathsep}{user_env()['PATH']}"})
    confs: dict[str, dict[str, Any]] = {}
    try:
        stack.start()
        timings["stack up"] = time.monotonic() - started
        for block in after:
            bash(f"source {venv}/bin/activate\n{block}", stack.env, src)
            for dag_id, conf in triggers(block):
                confs[dag_id] = conf
                runs = wait_for_runs(stack, dag_id, timeout=420)
                assert [r["state"] for r in runs] == ["success"], (runs, stack.logs())
                timings[dag_id] = time.monotonic() - started
        # the api-server's pages read the store the workers wrote
        page = stack.api("GET", "/stylegan/api/versions")
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()
        print("README install section, seconds since start:",
              {k: round(v) for k, v in timings.items()})

    assert set(confs) == {"stylegan2_prepare", "stylegan2_train"}
    store = shared["STYLEGAN_STORE"]
    assert page is not None and page["store"] == store
    assert {"stylegan2-trained-network", confs["stylegan2_prepare"]["dataset_name"]} <= {
        n["name"] for n in page["names"]}

    def show(ref: str) -> dict[str, Any]:
        res = cli("store", "--store", store, "show", ref)
        assert res.exit_code == 0, res.stdout + res.stderr
        return dict(json.loads(res.stdout))

    dataset = show(confs["stylegan2_train"]["dataset_ref"])
    assert dataset["name"] == confs["stylegan2_prepare"]["dataset_name"]
    assert dataset["lineage"]["dag_id"] == "stylegan2_prepare"
    network = show("stylegan2-trained-network:latest")
    assert network["lineage"]["dag_id"] == "stylegan2_train"
    assert network["lineage"]["inputs"] == [f"{dataset['name']}@{dataset['id']}"]
    evaluation = show("stylegan2-evaluation-ours:latest")
    assert set(evaluation["meta"]["metrics"]) == set(confs["stylegan2_train"]["metrics"])
    assert (Path(shared["STYLEGAN_WORKSPACE"]) / "stylegan2_train").is_dir()
