"""STYLEGAN_STORE and STYLEGAN_WORKSPACE: absolute, or one announced absolute default; a
relative value (which each component would resolve against its own cwd) is refused by the
tasks and by the page."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException
from stylegan_airflow import runners
from stylegan_airflow.operators import DatasetVersionOperator, StageOperator
from stylegan_airflow.paths import run_dir
from stylegan_airflow.runners import store_path, workspace

from tests.airflow.test_operators import ti_context

pytestmark = pytest.mark.airflow

SETTINGS = [
    pytest.param("STYLEGAN_STORE", store_path, "/tmp/stylegan-store", id="store"),
    pytest.param("STYLEGAN_WORKSPACE", workspace, "/tmp/stylegan-workspace", id="workspace"),
]


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test is a process that has announced no default yet."""
    monkeypatch.setattr(runners, "_defaulted", set())


@pytest.mark.parametrize(("env", "read", "default"), SETTINGS)
def test_an_absolute_value_is_used_as_given(env: str, read: Callable[[], str], default: str,
                                            monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(env, "/srv/shared/stylegan")
    assert read() == "/srv/shared/stylegan"
    assert not caplog.records


@pytest.mark.parametrize("unset", [pytest.param(None, id="absent"),
                                   pytest.param("", id="empty")])
@pytest.mark.parametrize(("env", "read", "default"), SETTINGS)
def test_unset_means_one_absolute_default_said_once(
        env: str, read: Callable[[], str], default: str, unset: str | None,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        tmp_path: Path) -> None:
    if unset is None:
        monkeypatch.delenv(env, raising=False)
    else:
        monkeypatch.setenv(env, unset)
    monkeypatch.chdir(tmp_path)  # the cwd plays no part
    with caplog.at_level(logging.WARNING, logger="stylegan_airflow.runners"):
        assert read() == default and read() == default
    assert [r.getMessage() for r in caplog.records] == [f"{env} not set: using {default}"]


@pytest.mark.parametrize("value", [
    pytest.param(".stylegan-store", id="dot-name"),
    pytest.param("store", id="bare-name"),
    pytest.param("./data/store", id="dot-slash"),
    pytest.param("~/stylegan", id="tilde"),  # no shell expands it in a service's env
])
@pytest.mark.parametrize(("env", "read", "default"), SETTINGS)
def test_a_relative_value_is_an_error_naming_it(env: str, read: Callable[[], str],
                                                default: str, value: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(AirflowException) as info:
        read()
    assert str(info.value) == (f"{env}={value!r} is a relative path: set it to an absolute "
                               "path, the same on every Airflow component and host")


def test_tasks_refuse_a_relative_store_before_doing_anything(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STYLEGAN_STORE", "store")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_text("x")
    commit = DatasetVersionOperator(task_id="commit", source=str(tmp_path / "data"),
                                    name="cats")
    with pytest.raises(AirflowException, match="STYLEGAN_STORE='store' is a relative path"):
        commit.execute(ti_context("commit"))
    stage = StageOperator(task_id="t", stage="info")  # the local runner hands both on
    with pytest.raises(AirflowException, match="STYLEGAN_STORE='store' is a relative path"):
        stage.execute(ti_context())
    assert stage._runner is None or stage._runner.proc is None  # no stage was started
    assert not (tmp_path / "store").exists()


def test_tasks_refuse_a_relative_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STYLEGAN_WORKSPACE", "ws")
    with pytest.raises(AirflowException, match="STYLEGAN_WORKSPACE='ws' is a relative path"):
        run_dir("stylegan2_prepare", "manual__1")


def test_the_local_runner_hands_the_resolved_paths_to_the_stage(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A stage (e.g. ``store`` commands) sees the same store as the task, never its cwd's."""
    monkeypatch.delenv("STYLEGAN_STORE", raising=False)
    monkeypatch.setenv("STYLEGAN_WORKSPACE", str(tmp_path / "ws"))
    seen: dict[str, str] = {}

    class Recorder:
        def __init__(self, *args: object, env: dict[str, str], **kwargs: object) -> None:
            seen.update(env)
            raise OSError("recorded")

    monkeypatch.setattr(runners.subprocess, "Popen", Recorder)
    with pytest.raises(OSError, match="recorded"):
        StageOperator(task_id="t", stage="info").execute(ti_context())
    assert seen["STYLEGAN_STORE"] == "/tmp/stylegan-store"
    assert seen["STYLEGAN_WORKSPACE"] == str(tmp_path / "ws")


@pytest.mark.parametrize(("value", "status", "says"), [
    pytest.param("store", 500, "STYLEGAN_STORE=&#39;store&#39; is a relative path",
                 id="relative"),
    pytest.param(None, 200, "/tmp/stylegan-store", id="unset"),
])
def test_the_page_reads_the_same_setting(value: str | None, status: int, says: str,
                                         monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from stylegan_airflow.ui import create_app
    from stylegan_airflow.ui.auth import require_user

    if value is None:
        monkeypatch.delenv("STYLEGAN_STORE", raising=False)
    else:
        monkeypatch.setenv("STYLEGAN_STORE", value)
    monkeypatch.chdir(tmp_path)
    app = create_app()  # no fixed root: per request from STYLEGAN_STORE, as in the api-server
    app.dependency_overrides[require_user] = lambda: "tester"
    client = TestClient(app, raise_server_exceptions=False)
    page = client.get("/", headers={"accept": "text/html"})
    assert page.status_code == status and says in page.text
    assert "Traceback" not in page.text
    api = client.get("/api/versions")
    if status == 500:
        assert api.json() == {"detail": "STYLEGAN_STORE='store' is a relative path: set it "
                                        "to an absolute path, the same on every Airflow "
                                        "component and host"}
