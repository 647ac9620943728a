"""A profile pointed at a remote Docker host over TLS: a second, test-started dockerd with
certificates made by openssl. A stage runs there through the docker runner; wrong or
missing TLS files fail with one line naming the host, the file and the TLS error."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

# Airflow reads its configuration at import: a private AIRFLOW_HOME before the operator is
# imported (the same module object pytest loads as tests/airflow's conftest)
from tests.airflow import conftest as airflow_env  # noqa: F401
from tests.deploy.tlsdocker import (
    HOSTNAME,
    STAGE_IMAGE,
    Certs,
    TLSDockerHost,
    free_port,
    link_index,
    make_certs,
)

SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def write_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **profiles: Any) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(profiles))
    monkeypatch.setenv("STYLEGAN_PROFILES", str(path))


def stage_operator(task_id: str, stage: str, arguments: list[str]) -> tuple[Any, Any]:
    from stylegan_airflow.operators import StageOperator

    op = StageOperator(task_id=task_id, stage=stage, arguments=arguments, profile="remote")
    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id=task_id, try_number=1, map_index=-1,
                         xcom_push=lambda key, value: pushed.__setitem__(key, value))
    return op, ti


def started_containers(docker: list[str], since: float) -> list[str]:
    """Names of the containers an engine started since ``since`` (its event log)."""
    out = subprocess.run([*docker, "events", "--since", f"{since:.3f}", "--until",
                          f"{time.time() + 1:.3f}", "--filter", "type=container",
                          "--filter", "event=start", "--format",
                          "{{.Actor.Attributes.name}}"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return out.split()


@pytest.mark.parametrize("ca_bundle", [
    pytest.param(None, id="plain-environment"),
    # requests would let this replace the profile's CA (psf/requests#4726)
    pytest.param(SYSTEM_BUNDLE, id="requests-ca-bundle-set"),
])
@pytest.mark.docker
@pytest.mark.slow
def test_stage_runs_on_the_tls_host_and_returns_its_result(
        tls_docker: TLSDockerHost, ca_bundle: str | None, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    if ca_bundle:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_bundle)
    monkeypatch.setenv("STYLEGAN_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("STYLEGAN_STORE", str(tmp_path / "store"))
    write_profiles(tmp_path, monkeypatch, remote=tls_docker.profile(STAGE_IMAGE))
    out = tmp_path / "workspace" / "tls-sample"
    op, ti = stage_operator("tls_sample", "make-sample-lmdb",
                            ["--out", str(out), "--count", "4", "--workers", "1"])
    since = time.time() - 1

    result = op.execute({"ti": ti})

    assert result == {"bad_records": 2, "images": 4, "out": str(out)}
    assert (out / "data.mdb").stat().st_size > 0  # written through the bind mount
    name = "d-r-tls_sample-try1"
    assert name in started_containers(["docker", "-H", f"unix://{tls_docker.sock}"], since)
    assert name not in started_containers(["docker"], since)  # not on the main engine
    assert tls_docker.docker("ps", "-aq").stdout.strip() == ""  # removed afterwards
    assert os.environ.get("REQUESTS_CA_BUNDLE") == ca_bundle  # put back after the task
    assert link_index("docker0") == tls_docker.docker0_before  # main engine's bridge intact


@pytest.mark.parametrize(("files", "says"), [
    pytest.param({"cert": "wrong_client_cert", "key": "wrong_client_key"},
                 ["the Docker host {url} refused the client certificate tls_client_cert "
                  "{wrong_client_cert}",
                  "(TLS error: sslv3 alert bad certificate)"], id="client-cert-of-another-ca"),
    pytest.param({"ca": "wrong_ca"},
                 ["the Docker host {url} failed TLS verification against tls_ca_cert "
                  "{wrong_ca}",
                  "(TLS error: certificate verify failed: unable to get local issuer "
                  "certificate)"], id="wrong-ca-file"),
    pytest.param({"key": "wrong_client_key"},
                 ["cannot connect to the Docker host {url}: tls_client_key {wrong_client_key} "
                  "is not the key of tls_client_cert {client_cert}",
                  "(TLS error: key values mismatch)"],
                 id="key-of-another-cert"),
])
@pytest.mark.parametrize("ca_bundle", [None, SYSTEM_BUNDLE], ids=["plain-env", "ca-bundle"])
@pytest.mark.docker
@pytest.mark.slow
def test_wrong_tls_files_fail_with_one_line_naming_host_file_and_tls_error(
        tls_docker_engine: TLSDockerHost, files: dict[str, str], says: list[str],
        ca_bundle: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowException

    host, certs = tls_docker_engine, tls_docker_engine._certs()
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    if ca_bundle:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_bundle)
    paths = {k: getattr(certs, v) for k, v in files.items()}
    write_profiles(tmp_path, monkeypatch, remote=host.profile(STAGE_IMAGE, **paths))
    op, ti = stage_operator("tls_refused", "info", [])
    started = time.monotonic()
    with pytest.raises(AirflowException) as info:
        op.execute({"ti": ti})
    message = str(info.value)
    assert time.monotonic() - started < 30
    named = {n: getattr(certs, n) for n in ("wrong_client_cert", "wrong_ca",
                                             "wrong_client_key", "client_cert")}
    assert message.startswith("profile 'remote': ")
    for part in says:
        assert part.format(url=host.url, **named) in message
    assert "\n" not in message and "Traceback" not in message
    assert "PRIVATE KEY" not in message and certs.client_key.read_text() not in message


@pytest.mark.docker
def test_nothing_listening_names_the_host_and_the_refusal(
        tls_docker_engine: TLSDockerHost, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowException

    url = f"tcp://127.0.0.1:{free_port(('127.0.0.1',))}"
    write_profiles(tmp_path, monkeypatch, remote=tls_docker_engine.profile(STAGE_IMAGE, url=url))
    op, ti = stage_operator("tls_nobody", "info", [])
    with pytest.raises(AirflowException) as info:
        op.execute({"ti": ti})
    assert str(info.value) == (f"profile 'remote': cannot reach the Docker host {url}: "
                               "[Errno 111] Connection refused")


@pytest.fixture
def tls_server_for_another_name(tmp_path: Path) -> Iterator[tuple[int, Certs]]:
    """A TLS server on 127.0.0.1 whose certificate names only DNS names, not that address:
    the handshake is all that matters, so no Docker engine is needed."""
    certs = make_certs(tmp_path / "certs", ips=())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca))
    context.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1]), certs
    done.set()
    thread.join()
    listener.close()


def test_a_host_certificate_for_another_name_says_so(
        tls_server_for_another_name: tuple[int, Certs], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowException

    port, certs = tls_server_for_another_name
    url = f"tcp://127.0.0.1:{port}"
    write_profiles(tmp_path, monkeypatch, remote={
        "runner": "docker", "image": STAGE_IMAGE, "docker_url": url,
        "tls_ca_cert": str(certs.ca), "tls_client_cert": str(certs.client_cert),
        "tls_client_key": str(certs.client_key)})
    op, ti = stage_operator("tls_other_name", "info", [])
    with pytest.raises(AirflowException) as info:
        op.execute({"ti": ti})
    assert str(info.value) == (
        f"profile 'remote': the Docker host {url} has a TLS certificate for another name "
        "(TLS error: certificate verify failed: IP address mismatch, certificate is not valid "
        "for '127.0.0.1'.); use a docker_url with a name or address that certificate lists")


def test_a_missing_tls_file_is_named_before_any_connection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowException

    (tmp_path / "ca.pem").write_text("not used\n")
    (tmp_path / "cert.pem").write_text("not used\n")
    missing = tmp_path / "no-such-key.pem"
    write_profiles(tmp_path, monkeypatch, remote={
        "runner": "docker", "image": STAGE_IMAGE, "docker_url": "tcp://127.0.0.1:1",
        "tls_ca_cert": str(tmp_path / "ca.pem"), "tls_client_cert": str(tmp_path / "cert.pem"),
        "tls_client_key": str(missing)})
    op, ti = stage_operator("tls_missing", "info", [])
    with pytest.raises(AirflowException) as info:
        op.execute({"ti": ti})
    assert str(info.value).startswith(
        f"profile 'remote': tls_client_key {missing} does not exist (on ")


@pytest.mark.parametrize(("settings", "error"), [
    pytest.param({"tls_ca_cert": "/c/ca.pem", "tls_client_cert": "/c/cert.pem"},
                 "profile 'remote': tls_ca_cert, tls_client_cert and tls_client_key go "
                 "together; missing tls_client_key", id="a-file-short"),
    pytest.param({"tls_ca_cert": "ca.pem", "tls_client_cert": "/c/cert.pem",
                  "tls_client_key": "/c/key.pem"},
                 "profile 'remote': tls_ca_cert must be an absolute path, got 'ca.pem'",
                 id="relative-path"),
    pytest.param({"docker_url": "unix://var/run/docker.sock", "tls_ca_cert": "/c/ca.pem",
                  "tls_client_cert": "/c/cert.pem", "tls_client_key": "/c/key.pem"},
                 "profile 'remote': TLS files need a tcp:// docker_url, got "
                 "'unix://var/run/docker.sock'", id="tls-on-a-unix-socket"),
])
def test_tls_settings_are_checked_when_profiles_load(settings: dict[str, str],
                                                     error: str) -> None:
    from stylegan_airflow.profiles import Profile

    body = {"runner": "docker", "image": STAGE_IMAGE, "docker_url": "tcp://gpu-host:2376",
            **settings}
    with pytest.raises(ValueError) as info:
        Profile.from_dict("remote", body)
    assert str(info.value) == error


@pytest.mark.docker
def test_containers_of_the_main_engine_reach_it_by_name_as_the_image_user(
        tls_docker_engine: TLSDockerHost, stage_image: str) -> None:
    """What the compose stack's workers do: uid 50000 reads the client key and speaks TLS
    to ``tls-docker-host`` (extra_hosts → the docker0 gateway) through the main engine."""
    host, certs = tls_docker_engine, tls_docker_engine._certs()
    probe = textwrap.dedent(f"""
        import http.client, json, ssl
        ctx = ssl.create_default_context(cafile="/certs/{certs.ca.name}")
        ctx.load_cert_chain("/certs/{certs.client_cert.name}", "/certs/{certs.client_key.name}")
        conn = http.client.HTTPSConnection("{HOSTNAME}", {host.port}, context=ctx, timeout=10)
        conn.request("GET", "/version")
        print(json.dumps(json.loads(conn.getresponse().read())["ApiVersion"]))
    """)
    out = subprocess.run(
        ["docker", "run", "--rm", "--user", "50000:0", "--entrypoint", "python3",
         "--add-host", host.extra_hosts[0], "-v", f"{certs.dir}:/certs:ro", stage_image,
         "-c", probe], capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout).startswith("1.")
    assert host.container_url == f"tcp://{HOSTNAME}:{host.port}"
