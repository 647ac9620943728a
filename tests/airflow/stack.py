"""A real Airflow on 127.0.0.1 for tests: PostgreSQL, api-server, scheduler, dag-processor.

Started in a temporary directory, on free ports, and stopped afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PASSWORD = "stylegan-test-password"
LOCAL_SETTINGS = "from stylegan_airflow.policy import task_instance_mutation_hook  # noqa: F401\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin(name: str) -> str | None:
    """initdb/pg_ctl from PATH or Debian's versioned directory."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


def postgres_available() -> bool:
    return all(pg_bin(n) for n in ("initdb", "pg_ctl", "postgres"))


class Postgres:
    """A throwaway PostgreSQL cluster; as root, it runs as the 'postgres' user."""

    def __init__(self) -> None:
        # Its own directory: pytest's tmp dirs are private to root, and as root the
        # server runs as 'postgres', which must be able to reach its data directory.
        self.dir = Path(tempfile.mkdtemp(prefix="stylegan-pg-"))
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            pwd.getpwnam(self.user)  # KeyError when the package's user is missing

    def _run(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> str:
        self.dir.chmod(0o755)
        if self.user:
            shutil.chown(self.dir, self.user)
        self._run(pg_bin("initdb") or "initdb", "-D", str(self.dir / "data"), "-A", "trust",
                  "-U", "airflow", "-E", "UTF8")
        self._run(pg_bin("pg_ctl") or "pg_ctl", "-D", str(self.dir / "data"), "-w", "-l",
                  str(self.dir / "log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start")
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if (self.dir / "data" / "postmaster.pid").exists():
            self._run(pg_bin("pg_ctl") or "pg_ctl", "-D", str(self.dir / "data"), "-m",
                      "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class AirflowAPI:
    """An api-server's REST API as a user reaches it: log in once (the token is reused for
    5 minutes), call, wait for runs. Shared by the host stack and the compose stack."""

    url: str
    password: str = PASSWORD
    _token: tuple[float, str] | None = None

    def token(self) -> str:
        if self._token is None or time.monotonic() - self._token[0] > 300:
            req = urllib.request.Request(
                f"{self.url}/auth/token", method="POST",
                data=json.dumps({"username": "admin", "password": self.password}).encode(),
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                self._token = (time.monotonic(), str(json.loads(resp.read())["access_token"]))
        return self._token[1]

    def api(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth and not path.startswith("/api/v2/monitor"):
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(f"{self.url}{path}", method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    @staticmethod
    def wait(check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(1)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        from urllib.parse import quote

        run = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")
        return None if run is None else str(run["state"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        self.wait(lambda: self.run_state(dag_id, run_id) in ("success", "failed"), timeout,
                  f"run {run_id} of {dag_id}")
        return str(self.run_state(dag_id, run_id))


class AirflowStack(AirflowAPI):
    """Airflow 3 services as subprocesses sharing one environment."""

    def __init__(self, base: Path, extra_env: dict[str, str] | None = None,
                 bin_dir: Path = BIN) -> None:
        self.base = base
        self.bin = bin_dir  # where `airflow` is: this venv's, or an installed Airflow's
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.postgres = Postgres()
        self.procs: list[subprocess.Popen[bytes]] = []
        (base / "passwords.json").write_text(json.dumps({"admin": PASSWORD}))
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(base / "home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(base / "passwords.json"),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API_AUTH__JWT_SECRET": "stylegan-test-jwt-secret-0123456789abcdef",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "STYLEGAN_WORKSPACE": str(base / "workspace"),
            "STYLEGAN_STORE": str(base / "store"),
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / "airflow"), *args], env=self.env, text=True,
                              capture_output=True, check=check, timeout=300)

    def start(self) -> AirflowStack:
        # the queue/pool policy, enabled as the README tells operators to
        config = Path(self.env["AIRFLOW_HOME"]) / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
        self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.postgres.start()
        self.airflow("db", "migrate")
        for service in (["api-server", "--port", str(self.port), "--host", "127.0.0.1"],
                        ["scheduler"], ["dag-processor"]):
            log = (self.base / f"{service[0]}.log").open("wb")
            self.procs.append(subprocess.Popen([str(self.bin / "airflow"), *service],
                                               env=self.env,
                                               stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True))
        self.wait(lambda: self.api("GET", "/api/v2/monitor/health") is not None, 120,
                  "the api-server to answer")
        return self

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.postgres.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.base.glob("*.log")))


@contextlib.contextmanager
def running_stack(base: Path, dags: tuple[str, ...],
                  extra_env: dict[str, str] | None = None) -> Iterator[AirflowStack]:
    """A started stack once ``dags`` are parsed; its logs printed if anything fails."""
    from tests.conftest import need

    need(postgres_available(), "PostgreSQL server binaries (initdb, pg_ctl) not found")
    stack = AirflowStack(base, extra_env=extra_env)
    try:
        stack.start()
        stack.wait(lambda: all(stack.api("GET", f"/api/v2/dags/{d}") is not None
                               for d in dags), 180, "the DAGs to be parsed")
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


def stage_pids(pattern: str) -> list[int]:
    """Pids of the processes whose command line matches ``pattern`` (pgrep -f)."""
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def commit_cats32(store: str, sample_lmdb: Path, base: Path) -> str:
    """Extract a 32 px dataset from the sample and commit it as ``cats-32`` in ``store``."""
    from tests.conftest import cli

    out = base / "cats"
    assert cli("prepare", "lsun", sample_lmdb, "--out", out, "--resolution", 32,
               "--max-images", 40).exit_code == 0
    assert cli("store", "--store", store, "snapshot", out, "--name", "cats-32").exit_code == 0
    return "cats-32:latest"
