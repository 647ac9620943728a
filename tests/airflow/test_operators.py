"""Operators, commands, profiles and runners, without running Airflow."""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from stylegan_airflow.commands import build_command, last_json
from stylegan_airflow.operators import DatasetVersionOperator, StageOperator
from stylegan_airflow.profiles import get_profile, load_profiles
from stylegan_airflow.runners import DockerRunner, _bytes, container_name


def context(task_id: str = "extract", map_index: int = -1) -> dict[str, object]:
    ti = SimpleNamespace(dag_id="stylegan2_prepare", run_id="manual__2026-01-01T00:00:00+00:00",
                         task_id=task_id, try_number=2, map_index=map_index,
                         xcom_push=lambda key, value: None)
    return {"ti": ti}


@pytest.mark.parametrize(("stage", "args", "argv"), [
    pytest.param("download", ["http://x/cat.zip", "--out", "/w/cat.zip"],
                 ["stylegan-ops", "download", "http://x/cat.zip", "--out", "/w/cat.zip"],
                 id="download"),
    pytest.param("prepare lsun", ["/w/lmdb", "--shard", "0/2", "--resolution", 256],
                 ["stylegan-ops", "prepare", "lsun", "/w/lmdb", "--shard", "0/2",
                  "--resolution", "256"], id="prepare-lsun"),
    pytest.param("store snapshot", ["/w/d", "--name", "x"],
                 ["stylegan-ops", "store", "snapshot", "/w/d", "--name", "x"], id="store"),
    pytest.param("evaluate", ["--network", "/n", ["--data", "/d", "--num-images", 8], [],
                              None, "--out", "/o"],
                 ["stylegan-ops", "evaluate", "--network", "/n", "--data", "/d",
                  "--num-images", "8", "--out", "/o"], id="rendered-lists-flattened"),
])
def test_built_commands(stage: str, args: list[object], argv: list[str]) -> None:
    assert build_command(stage, args) == argv
    assert StageOperator(task_id="t", stage=stage, arguments=args).command() == argv


def test_unknown_stage_and_profile_are_refused_at_dag_build() -> None:
    with pytest.raises(ValueError, match="unknown stage 'prepare lmdb'"):
        StageOperator(task_id="t", stage="prepare lmdb")
    with pytest.raises(ValueError, match="unknown profile 'tpu'"):
        StageOperator(task_id="t", stage="download", profile="tpu")
    with pytest.raises(ValueError, match="invalid version name"):
        DatasetVersionOperator(task_id="c", source="/x", name="Bad Name")


def test_default_profiles_set_queue_and_pool() -> None:
    profiles = load_profiles()
    assert set(profiles) >= {"cpu", "gpu"}
    assert profiles["cpu"].runner == "local" and not profiles["cpu"].wants_gpu
    assert profiles["gpu"].runner == "docker" and profiles["gpu"].wants_gpu
    op = StageOperator(task_id="t", stage="download", profile="gpu")
    assert (op.queue, op.pool) == ("gpu", "default_pool")


def test_profiles_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(textwrap.dedent("""
        cpu: {runner: docker, image: "stage:1", mem_limit: 2g, shm_size: 512m}
        bad: {runner: ssh}
    """))
    monkeypatch.setenv("STYLEGAN_PROFILES", str(path))
    with pytest.raises(ValueError, match="unknown runner 'ssh'"):
        get_profile("cpu")
    path.write_text("cpu: {runner: docker, image: 'stage:1', gpus: 2, mem_limit: 2g}\n")
    assert get_profile("cpu").image == "stage:1"
    path.write_text("cpu: {runner: docker}\n")
    with pytest.raises(ValueError, match="needs an image"):
        get_profile("cpu")


def test_docker_runner_builds_the_provider_operator(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("STYLEGAN_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("STYLEGAN_STORE", str(tmp_path / "store"))
    gpu = get_profile("gpu")
    op = DockerRunner(gpu).build_operator(["stylegan-ops", "inspect", "/x"],
                                          context("extract", 3))
    assert op.image == gpu.image and op.command == ["stylegan-ops", "inspect", "/x"]
    assert op.container_name == ("stylegan2_prepare-manual__2026-01-01T00-00-00-00-00-"
                                 "extract-try2-map3")
    assert [(m["Source"], m["Target"]) for m in op.mounts] == [
        (str(tmp_path / "ws"), str(tmp_path / "ws")),
        (str(tmp_path / "store"), str(tmp_path / "store"))]
    assert op.device_requests[0]["Count"] == -1
    assert op.device_requests[0]["Capabilities"] == [["gpu"]]
    assert op.mem_limit == "64g" and op.shm_size == 16 * 2**30
    assert op.auto_remove == "force"
    assert op.environment["STYLEGAN_STORE"] == str(tmp_path / "store")
    cpu_op = DockerRunner(get_profile("cpu").__class__(
        name="c", runner="docker", image="i")).build_operator(["stylegan-ops", "inspect"],
                                                               context())
    assert cpu_op.device_requests is None


def test_helpers() -> None:
    assert _bytes("512m") == 512 * 2**20 and _bytes("1g") == 2**30 and _bytes(None) is None
    with pytest.raises(ValueError, match="bad size"):
        _bytes("lots")
    assert last_json(["progress", '{"a": 1}', "trailing", '{"b": 2}\n', "done"]) == {"b": 2}
    assert last_json(["no json"]) is None
    assert container_name(context()).startswith("stylegan2_prepare-manual")


def ti_context(task_id: str = "t") -> dict[str, object]:
    return context(task_id)


def test_local_runner_returns_the_stage_json(tmp_path: Path) -> None:
    op = StageOperator(task_id="t", stage="info")
    result = op.execute(ti_context())
    assert result["stylegan_ops"] and result["python"].startswith("3.")


def test_stage_failure_fails_the_task_with_its_message(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowException

    op = StageOperator(task_id="t", stage="inspect", arguments=[tmp_path / "missing"])
    with pytest.raises(AirflowException, match=r"exit code 2: .*not a directory: .*missing"):
        op.execute(ti_context())


def test_on_kill_stops_the_stage_process(tmp_path: Path) -> None:
    import threading
    import time

    from airflow.sdk.exceptions import AirflowException

    op = StageOperator(task_id="t", stage="make-sample-lmdb",
                       arguments=["--out", tmp_path / "big", "--count", 100000,
                                  "--workers", 1])
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(ti_context())
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while op._runner is None or op._runner.proc is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)
    started = time.monotonic()
    op.on_kill()
    thread.join(timeout=30)
    assert not thread.is_alive() and time.monotonic() - started < 15
    assert errors and isinstance(errors[0], AirflowException)
    assert op._runner.proc.poll() is not None
    assert not (tmp_path / "big").exists()  # the atomic write left nothing behind
