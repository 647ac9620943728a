"""The repo watcher: one triggered run per commit, through GitHub's API or plain git."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakegithub import FakeGithub, git, make_origin

pytestmark = pytest.mark.airflow


@pytest.fixture
def origin(tmp_path: Path) -> tuple[Path, Path]:
    """A bare 'remote' repository and a working clone that pushes to it."""
    return make_origin(tmp_path)


def push(work: Path, conf: dict[str, Any] | None, dag: str = "stylegan2_prepare") -> str:
    settings = work / "stylegan2.yaml"
    if conf is None:
        (work / "README").write_text(f"no settings {os.urandom(4).hex()}")
        settings.unlink(missing_ok=True)
    else:
        settings.write_text(yaml.safe_dump({"dag": dag, "conf": conf}))
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", f"settings {conf}")
    git(work, "push", "-q", "origin", "HEAD:main")
    return git(work, "rev-parse", "HEAD").strip()


def triggered(shas: list[str]) -> dict[str, dict[str, Any]]:
    """Runs of stylegan2_prepare created for these commits: run_id → conf."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    ids = [f"commit__{sha}" for sha in shas]
    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "stylegan2_prepare",
                                            DagRun.run_id.in_(ids)).all()
        return {r.run_id: dict(r.conf or {}) for r in runs}


def watch(dagbag: Any, conf: dict[str, Any]) -> str:
    run = dagbag.dags["stylegan2_watch_repo"].test(run_conf=conf)
    return str(run.state)


@pytest.fixture
def github_conn(monkeypatch: pytest.MonkeyPatch) -> Any:
    def set_host(url: str) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_GITHUB_FAKE", json.dumps(
            {"conn_type": "github", "password": "s3cret-token", "host": url}))
    return set_host


@pytest.mark.parametrize("backend", ["git", "github"])
def test_each_commit_triggers_exactly_one_run(airflow_db: Path, dagbag: Any,
                                              origin: tuple[Path, Path], github_conn: Any,
                                              backend: str, caplog: Any) -> None:
    bare, work = origin
    with FakeGithub(bare) as api:
        github_conn(api.url)
        conf = {"repo": str(bare) if backend == "git" else "cats/pipeline",
                "backend": backend, "github_conn_id": "github_fake"}
        first = push(work, {"sample_count": 10, "resolution": 16})
        assert watch(dagbag, conf) == "success"
        assert triggered([first]) == {f"commit__{first}": {
            "sample_count": 10, "resolution": 16, "git_commit": first}}

        shas = [push(work, {"sample_count": 20 + i, "resolution": 16}) for i in range(3)]
        skipped = push(work, None)  # no settings file at this commit: nothing to run
        last = push(work, {"sample_count": 99, "resolution": 32})
        assert watch(dagbag, conf) == "success"
        runs = triggered([*shas, skipped, last])
        assert set(runs) == {f"commit__{s}" for s in [*shas, last]}
        for i, sha in enumerate(shas):
            assert runs[f"commit__{sha}"] == {"sample_count": 20 + i, "resolution": 16,
                                              "git_commit": sha}
        # a restart: a fresh parse of the DAGs, the state still in the metadata DB
        from airflow.dag_processing.dagbag import DagBag

        fresh = DagBag(dagbag.dag_folder)
        assert watch(fresh, conf) == "success"
        assert len(triggered([first, *shas, last])) == 5
        if backend == "github":
            assert api.auth == {"token s3cret-token"}
    assert "s3cret-token" not in caplog.text


def test_server_errors_and_rate_limits_delay_but_lose_nothing(
        airflow_db: Path, dagbag: Any, origin: tuple[Path, Path], github_conn: Any) -> None:
    bare, work = origin
    with FakeGithub(bare) as api:
        github_conn(api.url)
        conf = {"repo": "cats/pipeline", "backend": "github", "github_conn_id": "github_fake"}
        first = push(work, {"sample_count": 1})
        # 500s and a rate limit are absorbed by the client's retries; a 429 by a re-poke
        api.faults.extend(["500", "ratelimit", "429", "500"])
        assert watch(dagbag, conf) == "success"
        assert set(triggered([first])) == {f"commit__{first}"}

        second = push(work, {"sample_count": 2})
        api.faults.extend(["500"] * 400)  # down for longer than this watcher run looks
        assert watch(dagbag, conf) == "success"  # the sensor skips; nothing fails
        assert triggered([second]) == {}
        api.faults.clear()
        third = push(work, {"sample_count": 3})
        assert watch(dagbag, conf) == "success"
        runs = triggered([second, third])
        assert runs[f"commit__{second}"]["sample_count"] == 2
        assert runs[f"commit__{third}"]["sample_count"] == 3
