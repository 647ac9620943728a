"""Deployment fixtures: a second Docker engine over TLS (see tests/deploy/tlsdocker.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import need
from tests.deploy.tlsdocker import ROOT, STAGE_IMAGE, TLSDockerHost, can_start, docker_ok


@pytest.fixture(scope="session")
def tls_docker_engine() -> Iterator[TLSDockerHost]:
    """A dockerd answering only over TLS on 127.0.0.1 and the docker0 gateway; no images."""
    need(docker_ok(), "no running Docker engine (docker info failed)")
    reason = can_start()
    need(reason is None, f"cannot start a second Docker engine: {reason}")
    with TLSDockerHost() as host:
        yield host


@pytest.fixture(scope="session")
def stage_image() -> str:
    """The CPU stage image on the main engine, built offline (cached layers: seconds when
    it is up to date)."""
    need(docker_ok(), "no running Docker engine (docker info failed)")
    subprocess.run([str(ROOT / "images/build.sh"), "stage-cpu"], check=True)
    return STAGE_IMAGE


@pytest.fixture(scope="session")
def tls_docker(tls_docker_engine: TLSDockerHost, stage_image: str) -> TLSDockerHost:
    """The TLS engine holding the CPU stage image, copied over from the main engine (once
    per session: ``load_image`` again is a no-op while the image is the same)."""
    tls_docker_engine.load_image(stage_image)
    return tls_docker_engine
