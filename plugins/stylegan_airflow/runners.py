"""Runners: where a built stage command runs. ``local`` (a worker subprocess) and ``docker``
(a container on the profile's Docker host, through the Docker provider's operator)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from airflow.sdk.exceptions import AirflowException

from stylegan_airflow import docker_errors
from stylegan_airflow.commands import last_json

STORE_ENV = "STYLEGAN_STORE"
WORKSPACE_ENV = "STYLEGAN_WORKSPACE"
# One absolute default for every component: a cwd-relative one would silently give the
# api-server and each worker a store of its own.
DEFAULT_WORKSPACE = "/tmp/stylegan-workspace"  # noqa: S108 - overridable, documented
DEFAULT_STORE = "/tmp/stylegan-store"  # noqa: S108 - overridable, documented
_defaulted: set[str] = set()  # settings whose default this process has already announced


def shared_path(env: str, default: str) -> str:
    """The absolute path setting ``env``, or ``default`` (said once per process) when unset;
    a relative value is an AirflowException naming it."""
    value = os.environ.get(env, "").strip()
    if not value:
        if env not in _defaulted:
            _defaulted.add(env)
            logging.getLogger(__name__).warning("%s not set: using %s", env, default)
        return default
    if not Path(value).is_absolute():
        raise AirflowException(f"{env}={value!r} is a relative path: set it to an absolute "
                               "path, the same on every Airflow component and host")
    return value


def workspace() -> str:
    """Where stage outputs live; the docker runner mounts it at the same path."""
    return shared_path(WORKSPACE_ENV, DEFAULT_WORKSPACE)


def store_path() -> str:
    """The version store every component (api-server, workers) reads and writes."""
    return shared_path(STORE_ENV, DEFAULT_STORE)


def stage_words(argv: Sequence[str]) -> str:
    """The sub-command of a built command (``train``, ``prepare lsun``), for messages."""
    words = []
    for arg in argv[1:3]:
        if not re.fullmatch(r"[a-z][a-z-]*", arg):
            break
        words.append(arg)
    return " ".join(words)


class Runner(Protocol):
    def run(self, argv: Sequence[str], context: Any, log: logging.Logger) -> Any: ...

    def code_identity(self, context: Any, log: logging.Logger) -> str:
        """What code a stage run here would run, for its cache key."""
        ...

    def kill(self) -> None: ...


class LocalRunner:
    """``stylegan-ops`` as a subprocess of the worker; output streamed live to the task log."""

    def __init__(self, profile: Any) -> None:
        self.profile = profile
        self.proc: subprocess.Popen[str] | None = None

    def code_identity(self, context: Any, log: logging.Logger) -> str:
        """The package version and a digest of its source (what this subprocess imports)."""
        from stylegan_ops.store.reuse import local_code

        return local_code()

    def run(self, argv: Sequence[str], context: Any, log: logging.Logger) -> Any:
        cmd = [sys.executable, "-m", "stylegan_ops.cli", *argv[1:]]
        # the resolved paths, so a stage reading them never falls back to its own cwd default
        env = {**os.environ, STORE_ENV: store_path(), WORKSPACE_ENV: workspace(),
               **self.profile.environment, "PYTHONUNBUFFERED": "1"}
        log.info("running %s", " ".join(argv))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, start_new_session=True)
        stdout: list[str] = []
        stderr: list[str] = []

        def pump(stream: Any, sink: list[str]) -> None:
            for line in stream:
                sink.append(line)
                log.info("%s", line.rstrip())

        threads = [threading.Thread(target=pump, args=(self.proc.stdout, stdout)),
                   threading.Thread(target=pump, args=(self.proc.stderr, stderr))]
        for t in threads:
            t.start()
        rc = self.proc.wait()
        for t in threads:
            t.join()
        if rc != 0:
            message = next((ln.strip() for ln in reversed(stderr) if ln.strip()), "")
            raise AirflowException(f"stage `{stage_words(argv)}` failed with exit code {rc}: "
                                   f"{message}")
        return last_json(stdout)

    def kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def container_name(context: Any) -> str:
    """dag-run-task-try (plus map index), in Docker's allowed characters."""
    ti = context["ti"]
    parts = [ti.dag_id, ti.run_id, ti.task_id, f"try{ti.try_number}"]
    if getattr(ti, "map_index", -1) not in (-1, None):
        parts.append(f"map{ti.map_index}")
    name = re.sub(r"[^a-zA-Z0-9_.-]+", "-", "-".join(str(p) for p in parts)).strip("-.")
    return name[:200]


class DockerRunner:
    """The stage image on the profile's Docker host, via the provider's DockerOperator.

    The workspace and the store are bind-mounted at the same paths inside the container,
    so argument paths mean the same thing on both sides. The image is looked up on the host
    first and pulled only as the profile's ``pull`` allows (the provider's operator would
    pull any image it cannot find, from whatever registry its name implies).
    """

    def __init__(self, profile: Any) -> None:
        self.profile = profile
        self.operator: Any = None

    def build_operator(self, argv: Sequence[str], context: Any) -> Any:
        from airflow.providers.docker.operators.docker import DockerOperator
        from docker.types import DeviceRequest, Mount

        p = self.profile
        mounts = []
        for path in dict.fromkeys([workspace(), store_path()]):
            Path(path).mkdir(parents=True, exist_ok=True)
            mounts.append(Mount(target=path, source=path, type="bind"))
        device_requests = None
        if p.wants_gpu:
            count = -1 if p.gpus == "all" else int(p.gpus)
            device_requests = [DeviceRequest(count=count, capabilities=[["gpu"]])]
        return DockerOperator(
            task_id=f"{context['ti'].task_id}_container",
            image=p.image,
            command=list(argv),
            docker_url=p.docker_url,
            tls_ca_cert=p.tls_ca_cert,
            tls_client_cert=p.tls_client_cert,
            tls_client_key=p.tls_client_key,
            container_name=container_name(context),
            auto_remove="force",
            mounts=mounts,
            mount_tmp_dir=False,
            mem_limit=p.mem_limit,
            shm_size=_bytes(p.shm_size),
            cpus=p.cpus,
            device_requests=device_requests,
            environment={STORE_ENV: store_path(), WORKSPACE_ENV: workspace(),
                         "PYTHONUNBUFFERED": "1", **p.environment},
            user=f"{os.getuid()}:{os.getgid()}",  # files in the workspace stay the worker's
            working_dir=workspace(),
            xcom_all=True,
            do_xcom_push=True,
        )

    def ensure_image(self, cli: Any, log: logging.Logger) -> None:
        """The profile's image on its Docker host, pulled only if ``pull`` says so."""
        from docker.errors import ImageNotFound

        p = self.profile
        if p.pull != "always":
            try:
                log.info("image %s is %s on %s", p.image, cli.inspect_image(p.image)["Id"],
                         p.docker_url)
                return
            except ImageNotFound as exc:
                if p.pull == "never":
                    raise AirflowException(docker_errors.missing_image(p)) from exc
        log.info("pulling %s (pull: %s)", p.image, p.pull)
        for event in cli.pull(p.image, stream=True, decode=True):
            if "error" in event:  # a failed pull can still answer 200 and stream its error
                raise AirflowException(docker_errors.pull_failed(p, str(event["error"])))
            if "status" in event and "id" not in event:  # skip per-layer progress
                log.info("%s", event["status"])

    def run(self, argv: Sequence[str], context: Any, log: logging.Logger) -> Any:
        try:
            self.profile.check_tls_files()
        except ValueError as exc:
            raise AirflowException(str(exc)) from None
        with _session_ca_honoured(self.profile):
            return self._run(argv, context, log)

    def code_identity(self, context: Any, log: logging.Logger) -> str:
        """The stage image's id on the profile's Docker host (pulled first if the profile
        allows it): a rebuilt image is new code even under the same tag."""
        from docker.errors import APIError, DockerException

        p = self.profile
        try:
            p.check_tls_files()
        except ValueError as exc:
            raise AirflowException(str(exc)) from None
        with _session_ca_honoured(p):
            operator = self.build_operator([], context)
            try:
                cli = operator.cli
            except (AirflowException, DockerException) as exc:
                raise AirflowException(docker_errors.unreachable(p, exc)) from exc
            try:
                self.ensure_image(cli, log)
                return f"image {p.image} {cli.inspect_image(p.image)['Id']}"
            except APIError as exc:
                raise AirflowException(docker_errors.explain(exc, p)) from exc
            except DockerException as exc:
                raise AirflowException(f"cannot use Docker host {p.docker_url}: {exc}") from exc

    def _run(self, argv: Sequence[str], context: Any, log: logging.Logger) -> Any:
        from docker.errors import APIError, DockerException

        p = self.profile
        self.operator = self.build_operator(argv, context)
        log.info("running %s in %s on %s", " ".join(argv), p.image, p.docker_url)
        try:
            cli = self.operator.cli
        except (AirflowException, DockerException) as exc:  # the hook found no host
            raise AirflowException(docker_errors.unreachable(p, exc)) from exc
        try:
            self.ensure_image(cli, log)
            self.stop_earlier_tries(cli, context, log)
            lines = self.operator.execute(context)
        except APIError as exc:
            raise AirflowException(docker_errors.explain(exc, p)) from exc
        except DockerException as exc:
            raise AirflowException(f"cannot use Docker host {p.docker_url}: {exc}") from exc
        except Exception as exc:
            if type(exc).__name__ == "DockerContainerFailedException":
                logs = getattr(exc, "logs", None) or []
                message = next((str(ln).strip() for ln in reversed(list(logs))
                                if "error" in str(ln).lower()), str(exc))
                raise AirflowException(f"stage `{stage_words(argv)}` failed in its "
                                       f"container: {message}") from exc
            raise
        if isinstance(lines, str):
            lines = [lines]
        return last_json(str(line) for line in (lines or []))

    def stop_earlier_tries(self, cli: Any, context: Any, log: logging.Logger) -> None:
        """Remove this task's containers from earlier tries that are still there. A worker
        that died (host lost, OOM-killed, ``docker kill``) never stopped its container; the
        retry must not write the same run's outputs alongside it."""
        ti = context["ti"]
        mine = container_name(context)
        prefix = mine[: mine.rindex(f"try{ti.try_number}")]
        tail = mine[len(prefix) + len(f"try{ti.try_number}"):]  # the map index part, if any
        for found in cli.containers(all=True, filters={"name": prefix}):
            for name in (n.lstrip("/") for n in found.get("Names") or []):
                earlier = re.fullmatch(rf"{re.escape(prefix)}try(\d+){re.escape(tail)}", name)
                if earlier and int(earlier.group(1)) < ti.try_number:
                    cli.remove_container(found["Id"], force=True)
                    log.warning("stopped container %s of try %s, left running by a worker "
                                "that is gone", name, earlier.group(1))

    def kill(self) -> None:
        if self.operator is not None:
            self.operator.on_kill()


@contextlib.contextmanager
def _session_ca_honoured(profile: Any) -> Iterator[None]:
    """Keep REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE out of the environment while a TLS profile's
    host is spoken to: requests lets them replace the CA file docker-py puts on its session
    (psf/requests#4726), and the host's own CA is then "unable to get local issuer"."""
    names = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE") if profile.tls_ca_cert else ()
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _bytes(size: str | None) -> int | None:
    """'1g' / '512m' / '65536' → bytes (DockerOperator wants shm_size as an int)."""
    if size is None:
        return None
    m = re.fullmatch(r"(\d+)([kmgt]?)b?", str(size).strip().lower())
    if not m:
        raise ValueError(f"bad size {size!r}: use e.g. 512m or 2g")
    return int(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " ")


RUNNERS: dict[str, type[LocalRunner] | type[DockerRunner]] = {
    "local": LocalRunner,
    "docker": DockerRunner,
}
