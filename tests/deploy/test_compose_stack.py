"""The stack users deploy: docker-compose.yaml brought up for real, both DAGs through the
REST API with every stage in a stage container, first with the LocalExecutor, then with the
CeleryExecutor (one worker per queue; the gpu profile on a remote Docker engine over TLS; a
worker killed mid-task). One stack for the module: the Celery step re-ups the same project,
so PostgreSQL, the store and the prepared dataset carry over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import cli, need
from tests.deploy.compose import ROOT, STAGE_IMAGE, ComposeStack, compose_command, make_root

pytestmark = [pytest.mark.compose, pytest.mark.docker, pytest.mark.slow]

PREPARE = {"source_url": "sample", "sample_count": 40, "resolution": 32, "max_images": 32,
           "shards": 2, "dataset_name": "compose-cats", "tags": []}
TRAIN = {"dataset_ref": "compose-cats:latest", "config": "small", "total_kimg": 0.2,
         "batch": 8, "tick_kimg": 0.1, "snapshot_ticks": 1, "metrics": ["swd"],
         "metric_images": 32, "seeds": "1-3",
         "profiles": {"download": "cpu", "train": "cpu", "evaluate": "cpu", "generate": "cpu"}}
WALL: dict[str, float] = {}  # printed at the end of the module: the README's figures


def docker_ok() -> bool:
    return bool(shutil.which("docker")) and subprocess.run(
        ["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def stack() -> Iterator[ComposeStack]:
    need(docker_ok(), "no running Docker engine (docker info failed)")
    need(compose_command() is not None, "neither `docker compose` nor `docker-compose` found")
    started = time.monotonic()
    # airflow + stage-cpu from the wheelhouse, PostgreSQL and Redis from Debian packages:
    # cached layers make an up-to-date set cost seconds, a clean machine builds them all
    subprocess.run([str(ROOT / "images/build.sh"), "stack"], check=True)
    WALL["images"] = time.monotonic() - started
    root = make_root()
    stack = ComposeStack(root)
    try:
        WALL["start (LocalExecutor)"] = stack.up()
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.down()
        shutil.rmtree(root, ignore_errors=True)
        print("\ncompose stack wall times (s): " + ", ".join(f"{k} {v:.0f}"
                                                            for k, v in WALL.items()))


@pytest.fixture(scope="module")
def pretrained(stack: ComposeStack) -> Path:
    """An NVIDIA-layout pickle (the small test network) in the workspace: the stage
    containers see the workspace and the store, nothing else of the host."""
    from tests.netfiles import make_pickle, nvidia_network_class

    inputs = stack.root / "workspace" / "inputs"
    inputs.mkdir(parents=True)
    with nvidia_network_class() as cls:
        make_pickle(cls, inputs / "stylegan2-cat-stand-in.pkl")
    return inputs / "stylegan2-cat-stand-in.pkl"


def show(stack: ComposeStack, ref: str) -> dict[str, Any]:
    """A version as the store on the host path records it."""
    res = cli("store", "--store", stack.root / "store", "show", ref)
    assert res.exit_code == 0, res.stderr
    return dict(json.loads(res.stdout))


def assert_every_stage_ran_in_a_container(stack: ComposeStack, dag_id: str, run_id: str,
                                          hosts: dict[str, str] | None = None) -> None:
    """Each stage task that ran logged the stage image and the Docker host it ran on (the
    Airflow image has no TensorFlow: a stage cannot have run anywhere else)."""
    stages = stack.stage_tasks(dag_id)
    ran = [t for t in stack.task_instances(dag_id, run_id)
           if t["task_id"] in stages and t["state"] == "success"]
    assert ran, "no stage task ran"
    for ti in ran:
        log = stack.task_log(dag_id, run_id, ti["task_id"], ti["try_number"], ti["map_index"])
        host = (hosts or {}).get(ti["task_id"], "unix://var/run/docker.sock")
        assert f"in {STAGE_IMAGE} on {host}" in log, (ti["task_id"], log[-2000:])


def test_local_executor_runs_both_dags_in_stage_containers(stack: ComposeStack,
                                                           pretrained: Path) -> None:
    started = time.monotonic()
    stack.trigger("stylegan2_prepare", "compose_prepare", PREPARE)
    state = stack.wait_for_run("stylegan2_prepare", "compose_prepare", 900)
    assert state == "success", stack.logs()
    WALL["stylegan2_prepare (sample)"] = time.monotonic() - started
    assert_every_stage_ran_in_a_container(stack, "stylegan2_prepare", "compose_prepare")

    started = time.monotonic()
    stack.trigger("stylegan2_train", "compose_train", {**TRAIN, "pretrained": str(pretrained)})
    state = stack.wait_for_run("stylegan2_train", "compose_train", 900)
    assert state == "success", stack.logs()
    WALL["stylegan2_train (small, swd)"] = time.monotonic() - started
    assert_every_stage_ran_in_a_container(stack, "stylegan2_train", "compose_train")

    # the versions and their lineage, in the store on the host path
    dataset = show(stack, "compose-cats:v1")
    assert dataset["lineage"]["dag_id"] == "stylegan2_prepare"
    assert dataset["lineage"]["run_id"] == "compose_prepare"
    trained = show(stack, "stylegan2-trained-network:latest")
    assert trained["lineage"]["run_id"] == "compose_train"
    assert trained["lineage"]["inputs"] == [f"compose-cats@{dataset['id']}"]
    for side, network in (("ours", trained),
                          ("pretrained", show(stack, "stylegan2-pretrained-network:latest"))):
        evaluation = show(stack, f"stylegan2-evaluation-{side}:latest")
        assert f"stylegan2-{'trained' if side == 'ours' else 'pretrained'}-network@" \
               f"{network['id']}" in evaluation["lineage"]["inputs"], evaluation["lineage"]
        generated = show(stack, f"stylegan2-generated-{side}:latest")
        assert generated["lineage"]["inputs"] == [
            f"stylegan2-{'trained' if side == 'ours' else 'pretrained'}-network@{network['id']}"]


def test_the_ui_and_a_version_image_through_the_api_server(stack: ComposeStack) -> None:
    status, _, page = stack.get("/stylegan/")
    assert status == 200, page[:500]
    assert b"compose-cats" in page and b"stylegan2-trained-network" in page
    status, headers, png = stack.get("/stylegan/files/compose-cats:v1/reals.png")
    assert status == 200 and headers["content-type"] == "image/png"
    entry = {f["path"]: f for f in show(stack, "compose-cats:v1")["manifest"]["files"]}
    assert hashlib.sha256(png).hexdigest() == entry["reals.png"]["sha256"]
    # without the login: nothing
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{stack.url}/stylegan/api/versions", timeout=30)
    assert denied.value.code in (401, 403)


def celery_profiles(stack: ComposeStack, tls: Any) -> Path:
    """cpu on the host's engine, gpu on the TLS engine (with gpus: 0, no GPU here); the
    client files under STYLEGAN_ROOT, where every container sees them, readable by the
    Airflow user only."""
    certs = stack.root / "tls"
    certs.mkdir(mode=0o700)
    os.chown(certs, 50000, 0)
    files = {}
    for key, src in (("tls_ca_cert", tls.certs.ca), ("tls_client_cert", tls.certs.client_cert),
                     ("tls_client_key", tls.certs.client_key)):
        dst = certs / Path(src).name
        shutil.copyfile(src, dst)
        os.chown(dst, 50000, 0)
        dst.chmod(0o600)
        files[key] = str(dst)
    path = stack.root / "profiles.yaml"
    path.write_text(yaml.safe_dump({
        "cpu": {"runner": "docker", "image": STAGE_IMAGE, "queue": "cpu", "cpus": 1.0},
        "gpu": {"runner": "docker", "image": STAGE_IMAGE, "queue": "gpu", "gpus": 0,
                "docker_url": tls.gateway_url, **files},
    }))
    path.chmod(0o644)
    return path


def test_celery_workers_per_queue_a_tls_gpu_host_and_a_killed_worker(
        stack: ComposeStack, tls_docker: Any) -> None:
    profiles = celery_profiles(stack, tls_docker)
    WALL["start (CeleryExecutor)"] = stack.up(
        "--profile", "celery", AIRFLOW_EXECUTOR="CeleryExecutor",
        STYLEGAN_PROFILES_FILE=str(profiles), AIRFLOW_TASK_HEARTBEAT_TIMEOUT="30",
        STYLEGAN_TRAIN_RETRY_DELAY="1")
    # a second gpu worker, so a killed one's task has somewhere else to go
    stack.compose("--profile", "celery", "up", "-d", "--no-recreate", "--scale",
                  "worker-gpu=2")
    workers = {q: {stack.hostname(c): c for c in stack.containers(f"worker-{q}")}
               for q in ("cpu", "gpu")}
    assert len(workers["gpu"]) == 2 and len(workers["cpu"]) == 1, workers

    conf = {**TRAIN, "pretrained": None, "total_kimg": 1.0,
            "profiles": {"download": "cpu", "train": "gpu", "evaluate": "gpu",
                         "generate": "cpu"}}
    started = time.monotonic()
    stack.trigger("stylegan2_train", "celery_train", conf)

    def training() -> dict[str, Any] | None:
        tries = stack.tries("stylegan2_train", "celery_train", "train")
        running = [t for t in tries if t["state"] == "running" and t["hostname"]]
        return running[0] if running else None

    stack.wait(lambda: training() is not None and tls_docker.docker(
        "ps", "-q", "--filter", "name=celery_train").stdout.strip(), 300,
        "training to start in a container on the TLS engine")
    first = training()
    assert first is not None and first["hostname"] in workers["gpu"], first
    subprocess.run(["docker", "kill", workers["gpu"][first["hostname"]]], check=True,
                   capture_output=True)

    state = stack.wait_for_run("stylegan2_train", "celery_train", timeout=900)
    assert state == "success", stack.logs()
    WALL["stylegan2_train on Celery (a worker killed)"] = time.monotonic() - started

    # the killed worker's try failed; the next ran on the other gpu worker
    tries = stack.tries("stylegan2_train", "celery_train", "train")
    assert [t["try_number"] for t in tries][:2] == [1, 2], tries
    assert tries[0]["hostname"] == first["hostname"]
    assert tries[-1]["state"] == "success"
    assert tries[-1]["hostname"] in workers["gpu"]
    assert tries[-1]["hostname"] != first["hostname"]
    # the try 1 container the dead worker left behind was stopped before try 2 began
    log = stack.task_log("stylegan2_train", "celery_train", "train", tries[-1]["try_number"])
    assert "celery_train-train-try1" in log and "stopped" in log, log[-3000:]

    # each task ran on its profile's queue's worker; the gpu ones on the TLS host
    profile_of = {"train": "gpu", "evaluate_ours": "gpu", "generate_ours": "cpu"}
    hosts = {}
    for ti in stack.task_instances("stylegan2_train", "celery_train"):
        kind = profile_of.get(ti["task_id"])
        if kind and ti["state"] == "success":
            assert ti["hostname"] in workers[kind], (ti["task_id"], ti["hostname"], workers)
            assert ti["queue"] == kind, ti
            if kind == "gpu":
                hosts[ti["task_id"]] = tls_docker.gateway_url
    assert set(hosts) == {"train", "evaluate_ours"}, hosts
    assert_every_stage_ran_in_a_container(stack, "stylegan2_train", "celery_train", hosts)
    assert show(stack, "stylegan2-trained-network:latest")["lineage"]["run_id"] == "celery_train"
