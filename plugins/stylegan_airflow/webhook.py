"""GitHub push webhook: the runs the repo watcher would trigger, as soon as GitHub says so.

``POST <prefix>/github/webhook`` checks ``X-Hub-Signature-256`` (HMAC-SHA256 of the raw
body with the secret from the Variable ``stylegan_webhook_secret`` or the password of the
connection ``stylegan_github_webhook``) before reading anything else. For a push to the
watched repository and branch it reads the settings file at each pushed commit (oldest
first) with the watcher's own backend and triggers the DAG it names with run id
``commit__<sha>``. A run id that already exists (a redelivery, or the watcher was first)
triggers nothing, so each commit runs exactly once whichever of the two sees it first. The
watcher's remembered head is left alone: it still catches commits a webhook missed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

log = logging.getLogger(__name__)

SECRET_VARIABLE = "stylegan_webhook_secret"  # noqa: S105 - a Variable name, not a secret
SECRET_CONNECTION = "stylegan_github_webhook"  # noqa: S105 - a connection id
REPO_VARIABLE = "stylegan_watch_repo"
WATCH_DAG = "stylegan2_watch_repo"
ALLOWED = ("stylegan2_prepare", "stylegan2_train")
MAX_BODY = 10 << 20  # GitHub caps payloads at 25 MB; a push of settings is far smaller
SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@dataclass(frozen=True)
class WatchConfig:
    """Where the watcher looks; the webhook accepts pushes to exactly that."""

    repo: str
    branch: str = "main"
    backend: str = "github"
    github_conn_id: str = "github_default"
    settings_path: str = "stylegan2.yaml"
    allowed_dags: tuple[str, ...] = ALLOWED


@dataclass
class Outcome:
    """What one push did, commit by commit."""

    triggered: list[dict[str, str]] = field(default_factory=list)
    existing: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


class Env(Protocol):
    """Everything the webhook needs from Airflow (tests pass a fake)."""

    def secret(self) -> str | None: ...

    def config(self) -> WatchConfig: ...

    def existing(self, run_id: str, dag_ids: Sequence[str]) -> str | None: ...

    def read_settings(self, cfg: WatchConfig, sha: str) -> str | None: ...

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> bool: ...


class RefusedError(Exception):
    """A commit whose run cannot be created (bad conf, unknown DAG): skipped, said why."""


def signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time check of GitHub's ``X-Hub-Signature-256`` header."""
    if not header:
        return False
    return hmac.compare_digest(signature(secret, body).encode(), header.strip().encode())


def _norm(url: str) -> str:
    return url.strip().lower().removesuffix("/").removesuffix(".git")


def same_repo(cfg: WatchConfig, repository: dict[str, Any]) -> bool:
    """Whether the payload's repository is the watched one (owner/name or any of its URLs)."""
    want = _norm(cfg.repo)
    keys = ("full_name", "clone_url", "ssh_url", "git_url", "html_url", "url")
    return bool(want) and any(_norm(str(repository.get(k) or "")) == want for k in keys)


def commits_of(payload: dict[str, Any]) -> list[str]:
    """The pushed commits, oldest first, always ending with ``after``."""
    shas = [str(c.get("id", "")) for c in payload.get("commits") or [] if isinstance(c, dict)]
    after = str(payload.get("after", ""))
    if after and after not in shas:
        shas.append(after)
    return [s for s in shas if SHA_RE.match(s)]


def handle_push(env: Env, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Trigger a run per pushed commit; (status, body)."""
    from stylegan_airflow.sensors import plan_commit

    cfg = env.config()
    ref = payload.get("ref")
    if not same_repo(cfg, dict(payload.get("repository") or {})) or \
            ref != f"refs/heads/{cfg.branch}":
        return 204, {}
    if payload.get("deleted"):
        return 204, {}
    out = Outcome()
    for sha in commits_of(payload):
        run_id = f"commit__{sha}"
        if dag_id := env.existing(run_id, cfg.allowed_dags):  # redelivery: no GitHub call
            out.existing.append({"dag_id": dag_id, "run_id": run_id})
            continue
        try:
            text = env.read_settings(cfg, sha)
        except Exception as exc:  # noqa: BLE001 - GitHub down: GitHub may redeliver later
            log.warning("cannot read %s at %s: %s", cfg.settings_path, sha, type(exc).__name__)
            return 502, {"detail": f"cannot read {cfg.settings_path} at {sha} "
                                   f"({type(exc).__name__}); nothing lost: redeliver, or the "
                                   "watcher picks it up", **_body(cfg, payload, out)}
        run, reason = plan_commit(sha, text, cfg.allowed_dags)
        if run is None:
            out.skipped.append({"sha": sha, "reason": reason})
            continue
        try:
            created = env.trigger(run["dag_id"], run["run_id"], run["conf"])
        except RefusedError as exc:
            out.skipped.append({"sha": sha, "reason": str(exc)})
            continue
        entry = {"dag_id": run["dag_id"], "run_id": run_id}
        (out.triggered if created else out.existing).append(entry)
        if created:
            log.info("push webhook triggered %s %s", run["dag_id"], run_id)
    return 202, _body(cfg, payload, out)


def _body(cfg: WatchConfig, payload: dict[str, Any], out: Outcome) -> dict[str, Any]:
    return {"repo": cfg.repo, "branch": cfg.branch, "after": payload.get("after"),
            "triggered": out.triggered, "existing": out.existing, "skipped": out.skipped}


def make_router(env: Env) -> APIRouter:
    """The webhook route; no Airflow login (GitHub cannot log in): the signature is the key."""
    router = APIRouter()

    @router.post("/github/webhook")
    async def github_webhook(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return JSONResponse({"detail": "payload too large"}, status_code=413)
        secret = await run_in_threadpool(env.secret)
        if not secret:
            return JSONResponse({"detail": f"webhook not configured: set the Variable "
                                           f"{SECRET_VARIABLE}"}, status_code=503)
        if not verify(secret, body, request.headers.get("x-hub-signature-256")):
            return JSONResponse({"detail": "bad or missing X-Hub-Signature-256"},
                                status_code=401)
        if request.headers.get("x-github-event") != "push":
            return Response(status_code=204)  # ping and every other event: nothing to do
        try:
            payload = _parse(body, request.headers.get("content-type", ""))
        except ValueError as exc:
            return JSONResponse({"detail": f"unreadable push payload: {exc}"}, status_code=400)
        status, result = await run_in_threadpool(handle_push, env, payload)
        if status == 204:
            return Response(status_code=204)
        return JSONResponse(result, status_code=status)

    return router


def _parse(body: bytes, content_type: str) -> dict[str, Any]:
    """GitHub sends JSON, or a form with a ``payload`` field, as the hook is configured."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        fields = parse_qs(body.decode())
        if "payload" not in fields:
            raise ValueError("form without a payload field")
        body = fields["payload"][0].encode()
    value = json.loads(body)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


# The api-server is Airflow's server side: like its own routes it reads Variables and
# Connections through airflow.models (metadata DB and secrets backends), not the Task SDK.
def _variable(key: str) -> str | None:
    from airflow.models import Variable

    value = Variable.get(key, default_var=None)  # noqa: AIR311
    return None if value is None else str(value)


def _connection(conn_id: str) -> Any:
    from airflow.models import Connection

    return Connection.get_connection_from_secrets(conn_id)  # noqa: AIR311


class AirflowEnv:
    """The webhook's view of Airflow from inside the api-server (metadata DB access)."""

    def secret(self) -> str | None:
        value = _variable(SECRET_VARIABLE)
        if value:
            return value
        try:
            return _connection(SECRET_CONNECTION).password or None
        except Exception:  # noqa: BLE001 - AirflowNotFoundException: no such connection
            return None

    def config(self) -> WatchConfig:
        """The watcher DAG's own param defaults (from its serialized DAG), then env."""
        params: dict[str, Any] = {}
        try:
            from airflow.models.dagbag import DBDagBag
            from airflow.utils.session import create_session

            with create_session() as session:
                dag = DBDagBag().get_latest_version_of_dag(WATCH_DAG, session=session)
                if dag is not None:
                    params = dict(dag.params.dump())
        except Exception:  # not parsed yet: the same defaults, from env
            log.debug("watcher DAG not in the DB; using env defaults", exc_info=True)
        env = os.environ
        repo = params.get("repo") or env.get("STYLEGAN_WATCH_REPO") or \
            _variable(REPO_VARIABLE) or ""
        return WatchConfig(
            repo=str(repo),
            branch=str(params.get("branch") or env.get("STYLEGAN_WATCH_BRANCH", "main")),
            backend=str(params.get("backend") or env.get("STYLEGAN_WATCH_BACKEND", "github")),
            github_conn_id=str(params.get("github_conn_id") or "github_default"),
            settings_path=str(params.get("settings_path") or "stylegan2.yaml"),
            allowed_dags=tuple(params.get("allowed_dags") or ALLOWED))

    def existing(self, run_id: str, dag_ids: Sequence[str]) -> str | None:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            found = session.scalar(select(DagRun.dag_id).where(
                DagRun.run_id == run_id, DagRun.dag_id.in_(list(dag_ids))).limit(1))
            return str(found) if found else None

    def read_settings(self, cfg: WatchConfig, sha: str) -> str | None:
        from stylegan_airflow.sensors import GitBackend, make_backend

        backend = make_backend(cfg.backend, cfg.repo, cfg.branch, cfg.github_conn_id)
        if isinstance(backend, GitBackend):
            backend.commits(None, sha)  # fetches the branch into its mirror
        return backend.read(sha, cfg.settings_path)

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> bool:
        """Create the run; False when it exists already (even if created concurrently)."""
        from airflow.api.common.trigger_dag import trigger_dag
        from airflow.exceptions import DagNotFound, DagRunAlreadyExists
        from airflow.utils.types import DagRunTriggeredByType
        from sqlalchemy.exc import IntegrityError

        try:
            trigger_dag(dag_id, run_id=run_id, conf=conf,
                        triggered_by=DagRunTriggeredByType.REST_API,
                        triggering_user_name="github-webhook",
                        note="triggered by a GitHub push webhook")
        except (DagRunAlreadyExists, IntegrityError):  # a concurrent redelivery won
            return False
        except DagNotFound as exc:
            raise RefusedError(f"DAG {dag_id!r} is not known to Airflow yet") from exc
        except ValueError as exc:  # ParamValidationError is a ValueError
            raise RefusedError(f"{dag_id} refused the settings' conf: {exc}") from exc
        return True
