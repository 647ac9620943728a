"""docker-compose.yaml brought up as a user would, for tests: ``docker compose`` where the v2
plugin is installed, else Debian's ``docker-compose`` 1.29; local PostgreSQL and Redis images
(``images/build.sh stack``) selected through the file's image variables; the api-server
published on 127.0.0.1 only; everything removed at teardown (containers, volume, network,
stage containers the stack started).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.airflow.stack import AirflowAPI

ROOT = Path(__file__).resolve().parents[2]
TAG = "0.1.0"
IMAGES = {"AIRFLOW_IMAGE": f"stylegan-airflow/airflow:{TAG}",
          "POSTGRES_IMAGE": f"stylegan-airflow/postgres:{TAG}",
          "REDIS_IMAGE": f"stylegan-airflow/redis:{TAG}"}
STAGE_IMAGE = f"stylegan-airflow/stage-cpu:{TAG}"
AIRFLOW_UID = 50000
PASSWORD = "compose-test-password"  # a throwaway stack on 127.0.0.1


def compose_command() -> list[str] | None:
    """The v2 plugin if it works, else the 1.29 standalone; None when neither exists."""
    if shutil.which("docker") and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_root() -> Path:
    """STYLEGAN_ROOT: a host directory uid 50000 (the Airflow image's user) owns, mounted at
    the same path in every container, as the compose file's header tells users to make."""
    root = Path(tempfile.mkdtemp(prefix="stylegan-compose-"))
    root.chmod(0o755)
    os.chown(root, AIRFLOW_UID, 0)
    (root / "passwords").write_text(json.dumps({"admin": PASSWORD}))
    os.chown(root / "passwords", AIRFLOW_UID, 0)
    return root


class ComposeStack(AirflowAPI):
    """One compose project; ``up`` may be called again with other settings (executor,
    profiles): compose recreates the containers whose configuration changed."""

    def __init__(self, root: Path, **settings: str) -> None:
        cmd = compose_command()
        if cmd is None:
            raise RuntimeError("neither `docker compose` nor `docker-compose` is installed")
        self.cmd = cmd
        self.root = root
        self.project = f"sgtest{secrets.token_hex(3)}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ, **IMAGES,
            "STYLEGAN_ROOT": str(root),
            "AIRFLOW_SECRET_KEY": secrets.token_hex(32),
            "POSTGRES_PASSWORD": secrets.token_hex(16),
            "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
            "AIRFLOW_PORT": f"127.0.0.1:{self.port}",
            **settings,
        }
        self.password = PASSWORD

    def compose(self, *args: str, check: bool = True, timeout: float = 600,
                **settings: str) -> subprocess.CompletedProcess[str]:
        self.env.update(settings)
        return subprocess.run([*self.cmd, "-p", self.project, "-f",
                               str(ROOT / "docker-compose.yaml"), *args],
                              cwd=ROOT, env=self.env, text=True, capture_output=True,
                              check=check, timeout=timeout)

    def up(self, *args: str, **settings: str) -> float:
        """``up -d`` and wait until the api-server reports every component healthy;
        returns the seconds that took."""
        started = time.monotonic()
        self.compose(*args, "up", "-d", **settings)
        self.wait(self.healthy, 300, "every component to report healthy")
        self._token = None  # a recreated api-server may have restarted its sessions
        return time.monotonic() - started

    def healthy(self) -> bool:
        health = self.api("GET", "/api/v2/monitor/health", auth=False)
        return bool(health) and all(
            health.get(part, {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"))

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "-t", "20", check=False)
        # stage containers the docker runner started (auto-removed when they end normally)
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", "name=stylegan2_"],
                             capture_output=True, text=True, check=False).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)

    def containers(self, service: str) -> list[str]:
        out = self.compose("ps", "-q", service).stdout
        return [c for c in out.split() if c]

    def hostname(self, container: str) -> str:
        return subprocess.run(["docker", "inspect", "-f", "{{.Config.Hostname}}", container],
                              capture_output=True, text=True, check=True).stdout.strip()

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "60", check=False).stdout

    # --- the REST API, with the login a user has --------------------------------------------

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """A raw authenticated GET (pages, files); header names in lower case."""
        req = urllib.request.Request(f"{self.url}{path}",
                                     headers={"Authorization": f"Bearer {self.token()}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> None:
        """Unpause (DAGs start paused) and create a run, as a user of the REST API would."""
        self.wait(lambda: self.api("GET", f"/api/v2/dags/{dag_id}") is not None, 180,
                  f"{dag_id} to be parsed")
        assert self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        created = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                           {"dag_run_id": run_id, "logical_date": None, "conf": conf})
        assert created is not None and created["dag_run_id"] == run_id, created

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        found = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
                                "/taskInstances?limit=100")
        return list(found["task_instances"]) if found else []

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """Every try of a task, with the hostname of the worker that ran it."""
        found = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
                                f"/taskInstances/{task_id}/tries")
        return list(found["task_instances"]) if found else []

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int,
                 map_index: int = -1) -> str:
        found = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"
                                f"/taskInstances/{task_id}/logs/{try_number}"
                                f"?map_index={map_index}")
        events = found["content"] if found else []
        return "\n".join(str(e.get("event", "")) if isinstance(e, dict) else str(e)
                         for e in events)

    def stage_tasks(self, dag_id: str) -> set[str]:
        tasks = self.api("GET", f"/api/v2/dags/{dag_id}/tasks")["tasks"]
        return {t["task_id"] for t in tasks if t["operator_name"] == "StageOperator"}

