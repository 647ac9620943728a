"""The docker runner against a real Docker engine and the CPU stage image."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
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


def test_failing_stage_in_a_container_fails_with_its_message(profiles: Path) -> None:
    from airflow.sdk.exceptions import AirflowException
    from stylegan_airflow.operators import StageOperator

    op = StageOperator(task_id="bad", stage="inspect", arguments=["/nonexistent-dataset"],
                       profile="docker-cpu")
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="bad", try_number=1, map_index=-1)
    with pytest.raises(AirflowException, match="not a directory: /nonexistent-dataset"):
        op.execute({"ti": ti})
