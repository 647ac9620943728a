"""The docker runner against a real Docker engine and the CPU stage image (the image and
GPU error tests need no stage image)."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import need

pytestmark = [pytest.mark.docker, pytest.mark.airflow]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "stylegan-airflow/stage-cpu:0.1.0"


def docker_ok() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="session")
def stage_image() -> str:
    """The CPU stage image, built offline (debootstrapped base + host wheelhouse); its
    dependency layer is cached, so an up-to-date image costs seconds."""
    need(docker_ok(), "no running Docker engine (docker info failed)")
    subprocess.run([str(ROOT / "images/build.sh"), "stage-cpu"], check=True)
    return IMAGE


@pytest.fixture
def profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage_image: str) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(textwrap.dedent(f"""
        cpu: {{runner: local, queue: cpu}}
        docker-cpu: {{runner: docker, image: "{stage_image}", mem_limit: 2g, shm_size: 256m,
                      cpus: 2.0, queue: cpu}}
        docker-gpu: {{runner: docker, image: "{stage_image}", gpus: all, queue: gpu}}
    """))
    monkeypatch.setenv("STYLEGAN_PROFILES", str(path))
    return path


def dataset_files(run: Any, name: str) -> dict[str, bytes]:
    from stylegan_airflow.paths import run_dir

    ds = Path(run_dir("stylegan2_prepare", run.run_id)) / "dataset" / name
    return {p.name: p.read_bytes() for p in sorted(ds.glob("*.tfrecords"))}


def test_prepare_in_containers_matches_the_local_runner(airflow_db: Path, dagbag: Any,
                                                        profiles: Path) -> None:
    conf = {"source_url": "sample", "sample_count": 30, "resolution": 16, "max_images": 24,
            "shards": 2, "tags": []}
    dag = dagbag.dags["stylegan2_prepare"]
    local = dag.test(run_conf={**conf, "dataset_name": "dk-local", "profile": "cpu"})
    docker = dag.test(run_conf={**conf, "dataset_name": "dk-docker", "profile": "docker-cpu"})
    assert str(local.state) == str(docker.state) == "success"
    ours, theirs = dataset_files(local, "dk-local"), dataset_files(docker, "dk-docker")
    assert len(ours) == 3
    assert {k.replace("dk-local", ""): v for k, v in ours.items()} == {
        k.replace("dk-docker", ""): v for k, v in theirs.items()}
    leftover = subprocess.run(["docker", "ps", "-a", "--filter", "name=stylegan2_prepare",
                               "-q"], capture_output=True, text=True, check=True).stdout
    assert leftover.strip() == ""  # containers are removed afterwards


def test_gpu_profile_on_a_host_without_gpus_fails_clearly(profiles: Path) -> None:
    from airflow.sdk.exceptions import AirflowException
    from stylegan_airflow.operators import StageOperator

    op = StageOperator(task_id="gpu_check", stage="inspect", arguments=["/tmp"],
                       profile="docker-gpu")
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="gpu_check", try_number=1,
                         map_index=-1, xcom_push=lambda *a, **k: None)
    with pytest.raises(AirflowException, match="has no GPU runtime"):
        op.execute({"ti": ti})


@pytest.fixture
def engine() -> None:
    need(docker_ok(), "no running Docker engine (docker info failed)")


@pytest.fixture
def empty_image(engine: None) -> Iterator[str]:
    """An image with no files at all, made locally: enough for the engine to get as far as
    starting a container, with nothing from a registry."""
    name = "stylegan-test/empty:1"
    tar = io.BytesIO()
    tarfile.open(fileobj=tar, mode="w").close()
    subprocess.run(["docker", "import", "-", name], input=tar.getvalue(), check=True,
                   capture_output=True)
    yield name
    subprocess.run(["docker", "rmi", name], check=False, capture_output=True)


def run_stage(profiles_yaml: str, profile: str, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run `inspect /tmp` under ``profile``; returns the exception it failed with."""
    from airflow.sdk.exceptions import AirflowException
    from stylegan_airflow.operators import StageOperator

    (tmp_path / "profiles.yaml").write_text(textwrap.dedent(profiles_yaml))
    monkeypatch.setenv("STYLEGAN_PROFILES", str(tmp_path / "profiles.yaml"))
    op = StageOperator(task_id="image_check", stage="inspect", arguments=["/tmp"],
                       profile=profile)
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="image_check", try_number=1,
                         map_index=-1, xcom_push=lambda *a, **k: None)
    with pytest.raises(AirflowException) as info:
        op.execute({"ti": ti})
    return info.value


@pytest.mark.parametrize(("image", "advice"), [
    pytest.param("stylegan-ops:gpu-missing-test", "set `pull: missing` in the profile",
                 id="any-image"),
    pytest.param("stylegan-airflow/stage-gpu:missing-test",
                 "build it there with `TAG=missing-test images/build.sh stage-gpu`",
                 id="built-by-images-build-sh"),
])
def test_missing_image_fails_at_once_without_a_pull(engine: None, image: str, advice: str,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import docker

    pulls: list[object] = []
    monkeypatch.setattr(docker.APIClient, "pull", lambda self, *a, **k: pulls.append(a))
    start = time.monotonic()
    error = run_stage(f"gpu: {{runner: docker, image: '{image}', gpus: all}}\n", "gpu",
                      tmp_path, monkeypatch)
    assert time.monotonic() - start < 5
    message = str(error)
    assert (f"profile 'gpu': image {image} is not on the Docker host "
            "unix://var/run/docker.sock") in message
    assert advice in message and "GPU runtime" not in message
    assert pulls == []


def test_pull_missing_reports_the_registry_answer(engine: None, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # a registry on a port nothing listens on: a real pull, answered at once, offline
    image = "localhost:1/stylegan-ops:gpu-missing-test"
    start = time.monotonic()
    error = run_stage(f"gpu: {{runner: docker, image: '{image}', gpus: all, pull: missing}}\n",
                      "gpu", tmp_path, monkeypatch)
    assert time.monotonic() - start < 30
    assert f"(pull: missing): cannot pull image {image} onto the Docker host" in str(error)
    assert "connection refused" in str(error) and "GPU" not in str(error)


def test_gpu_request_on_an_engine_without_gpu_runtime(empty_image: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    info = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"],
                          capture_output=True, text=True, check=True).stdout
    if "nvidia" in info or shutil.which("nvidia-container-runtime-hook"):
        pytest.skip("this Docker engine has a GPU runtime")
    error = run_stage(f"gpu: {{runner: docker, image: '{empty_image}', gpus: all}}\n", "gpu",
                      tmp_path, monkeypatch)
    assert ("profile 'gpu' asks for GPUs but the Docker host unix://var/run/docker.sock has "
            "no GPU runtime") in str(error)
    assert 'could not select device driver "" with capabilities: [[gpu]]' in str(error)
    leftover = subprocess.run(["docker", "ps", "-a", "-q", "--filter", "name=d-r-image_check"],
                              capture_output=True, text=True, check=True).stdout
    assert leftover.strip() == ""


def test_failing_stage_in_a_container_fails_with_its_message(profiles: Path) -> None:
    from airflow.sdk.exceptions import AirflowException
    from stylegan_airflow.operators import StageOperator

    op = StageOperator(task_id="bad", stage="inspect", arguments=["/nonexistent-dataset"],
                       profile="docker-cpu")
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="bad", try_number=1, map_index=-1)
    with pytest.raises(AirflowException, match="not a directory: /nonexistent-dataset"):
        op.execute({"ti": ti})


def test_train_dag_in_containers_generates_the_same_images(airflow_db: Path, dagbag: Any,
                                                           profiles: Path, sample_lmdb: Path,
                                                           tmp_path: Path) -> None:
    """Train, evaluate and generate in the CPU stage image vs. the local runner."""
    import json
    import os

    from tests.conftest import cli

    store = os.environ["STYLEGAN_STORE"]
    assert cli("prepare", "lsun", sample_lmdb, "--out", tmp_path / "cats", "--resolution", 32,
               "--max-images", 24).exit_code == 0
    assert cli("store", "--store", store, "snapshot", tmp_path / "cats",
               "--name", "dk-cats-32").exit_code == 0
    conf = {"dataset_ref": "dk-cats-32:latest", "pretrained": None, "config": "small",
            "total_kimg": 0.1, "batch": 8, "tick_kimg": 0.05, "metrics": "swd",
            "metric_images": 16, "seeds": "7-9"}
    generated = []
    for kind in ("cpu", "docker-cpu"):
        profiles_conf = {"download": "cpu", "train": kind, "evaluate": kind, "generate": kind}
        run = dagbag.dags["stylegan2_train"].test(run_conf={**conf, "profiles": profiles_conf})
        assert str(run.state) == "success", kind
        res = cli("store", "--store", store, "show", "stylegan2-generated-ours:latest")
        version = json.loads(res.stdout)
        assert version["lineage"]["run_id"] == run.run_id
        generated.append({f["path"]: f["sha256"] for f in version["manifest"]["files"]
                          if f["path"].endswith(".png")})
    # the images, byte for byte (generate.json names the weights by digest, and the two
    # runs' weights are equal as numbers but may differ in the sign of a zero)
    assert generated[0] == generated[1]
    assert {"seed0007.png", "seed0008.png", "seed0009.png"} <= set(generated[0])


def test_a_retry_removes_the_container_a_dead_worker_left(profiles: Path) -> None:
    """Try 1's worker died without stopping its container: try 2 removes it (and only
    it: other tasks', other map indexes' and later tries' containers stay)."""
    import logging

    import docker
    from stylegan_airflow.profiles import get_profile
    from stylegan_airflow.runners import DockerRunner

    names = {"stale": "d-r-train-try1", "mine": "d-r-train-try2", "other": "d-r-train2-try1",
             "mapped": "d-r-train-try1-map0", "later": "d-r-train-try3"}
    for name in names.values():
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "run", "-d", "--name", name, "--entrypoint", "sleep",
                        IMAGE, "300"], check=True, capture_output=True)
    try:
        ti = SimpleNamespace(dag_id="d", run_id="r", task_id="train", try_number=2,
                             map_index=-1)
        cli = docker.APIClient(base_url="unix://var/run/docker.sock")
        DockerRunner(get_profile("docker-cpu")).stop_earlier_tries(
            cli, {"ti": ti}, logging.getLogger("test"))
        left = set(subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"],
                                  capture_output=True, text=True, check=True).stdout.split())
        assert names["stale"] not in left
        assert {names["mine"], names["other"], names["mapped"], names["later"]} <= left
    finally:
        for name in names.values():
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def import_image(name: str, files: dict[str, bytes]) -> str:
    """``docker import`` a tar of ``files`` as ``name``; returns the new image's id."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    subprocess.run(["docker", "import", "-", name], input=tar.getvalue(), check=True,
                   capture_output=True)
    return subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", name],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_code_identity_is_the_image_id_and_a_rebuild_changes_the_key(
        engine: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage image rebuilt under the same tag is new code: its cache keys change."""
    import logging

    from stylegan_airflow.profiles import get_profile
    from stylegan_airflow.reuse import Decision, Reuse
    from stylegan_airflow.runners import DockerRunner

    name = "stylegan-test/code-identity:1"
    (tmp_path / "profiles.yaml").write_text(f'ident: {{runner: docker, image: "{name}"}}\n')
    monkeypatch.setenv("STYLEGAN_PROFILES", str(tmp_path / "profiles.yaml"))
    monkeypatch.setenv("STYLEGAN_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("STYLEGAN_STORE", str(tmp_path / "store"))
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="generate", try_number=1,
                         map_index=-1, xcom_pull=lambda **k: None)
    context, log = {"ti": ti, "params": {}}, logging.getLogger("test")

    def identity_and_key() -> tuple[str, str]:
        runner = DockerRunner(get_profile("ident"))
        decision = Decision(Reuse(name="g", kind="generate"), "generate",
                            ["stylegan-ops", "generate", "--seeds", "1", "--out", "/o"],
                            context, runner, log, lambda value: value)
        return runner.code_identity(context, log), decision.compute_key().key

    ids = []
    try:
        ids.append(import_image(name, {"code.py": b"print(1)\n"}))
        before, key_before = identity_and_key()
        assert before == f"image {name} {ids[0]}"
        ids.append(import_image(name, {"code.py": b"print(2)\n"}))
        after, key_after = identity_and_key()
        assert ids[1] != ids[0] and after == f"image {name} {ids[1]}"
        assert key_after != key_before
    finally:
        for image in [name, *ids]:
            subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False)


def test_code_identity_on_an_unreachable_host_is_the_one_line_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key needs the image id, so a stage with reuse meets the host first: the task
    fails with the runner's own one-line message, not a traceback from the key."""
    import socket

    from airflow.sdk.exceptions import AirflowException
    from stylegan_airflow.operators import StageOperator
    from stylegan_airflow.reuse import Reuse

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"tcp://127.0.0.1:{s.getsockname()[1]}"  # closed once the socket is
    (tmp_path / "profiles.yaml").write_text(
        f'far: {{runner: docker, image: "{IMAGE}", docker_url: "{url}"}}\n')
    monkeypatch.setenv("STYLEGAN_PROFILES", str(tmp_path / "profiles.yaml"))
    monkeypatch.setenv("STYLEGAN_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("STYLEGAN_STORE", str(tmp_path / "store"))
    op = StageOperator(task_id="generate", stage="generate", profile="far",
                       arguments=["--seeds", "1", "--out", str(tmp_path / "o")],
                       reuse=Reuse(name="g", kind="generate"))
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="generate", try_number=1,
                         map_index=-1, xcom_pull=lambda **k: None,
                         xcom_push=lambda *a, **k: None)
    with pytest.raises(AirflowException) as info:
        op.execute({"ti": ti, "params": {}})
    assert str(info.value) == (f"profile 'far': cannot reach the Docker host {url}: "
                               "[Errno 111] Connection refused")
