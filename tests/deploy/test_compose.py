"""docker-compose.yaml and the image files hold together (structure, not a live stack)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_stack_has_the_airflow3_services() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "airflow-init", "airflow-apiserver", "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer"} <= set(services)
    assert services["airflow-apiserver"]["ports"] == ["${AIRFLOW_PORT:-8080}:8080"]
    assert {n for n, s in services.items() if "celery" in s.get("profiles", [])} == {
        "redis", "worker-cpu", "worker-gpu"}
    queues = {n: s["command"][-1] for n, s in services.items() if n.startswith("worker-")}
    assert queues == {"worker-cpu": "cpu,default", "worker-gpu": "gpu"}
    for name, service in services.items():
        if name in ("postgres", "redis"):
            continue
        root = "${STYLEGAN_ROOT:-/opt/stylegan}"
        # workspace and store: the same path inside and out, so docker-runner mounts agree
        assert f"{root}:{root}" in service["volumes"], name
        assert "/var/run/docker.sock:/var/run/docker.sock" in service["volumes"]
        assert service["environment"]["STYLEGAN_STORE"].startswith(root)


def test_compose_profiles_file_is_valid() -> None:
    from stylegan_airflow.profiles import load_profiles

    profiles = load_profiles(str(ROOT / "images/profiles.compose.yaml"))
    assert profiles["cpu"].runner == profiles["gpu"].runner == "docker"
    assert profiles["gpu"].wants_gpu and profiles["gpu"].queue == "gpu"


def test_dockerfiles_take_a_base_image_and_run_as_non_root() -> None:
    for name in ("stage", "airflow"):
        text = (ROOT / "images" / name / "Dockerfile").read_text()
        assert "ARG BASE_IMAGE" in text and "FROM ${BASE_IMAGE}" in text
        assert "--no-index" in text  # offline install from the wheelhouse
        user = [ln for ln in text.splitlines() if ln.startswith("USER ")]
        assert user and user[-1] != "USER root"


def test_no_secret_has_a_default_and_every_service_is_checked() -> None:
    text = (ROOT / "docker-compose.yaml").read_text()
    compose = yaml.safe_load(text)
    # secrets come from the environment or a git-ignored .env: compose refuses to start
    # without them rather than fall back to a value everyone can read here
    assert "${AIRFLOW_SECRET_KEY:?" in text and "${POSTGRES_PASSWORD:?" in text
    assert "change-me" not in text and "JWT_SECRET:-" not in text
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    for name, service in compose["services"].items():
        if name == "airflow-init":
            assert service["restart"] == "no"
            continue
        assert "healthcheck" in service, name
        assert service["restart"] == "unless-stopped", name
    # registry images by default, the local stand-ins only when chosen
    assert compose["services"]["postgres"]["image"] == "${POSTGRES_IMAGE:-postgres:15}"
    assert compose["services"]["redis"]["image"] == "${REDIS_IMAGE:-redis:7}"
