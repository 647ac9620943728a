"""GitCommitSensor: fires when a branch has commits the watcher has not fired for yet.

Backends: GitHub through the GitHub provider's hook (token from the connection; a GitHub
Enterprise base URL is the connection's host), and any git remote through ``git``. The
last commit fired for lives in an Airflow Variable, so it survives scheduler restarts; it
is advanced by the DAG only after the runs were triggered, so no commit is ever lost.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from airflow.sdk import BaseSensorOperator, PokeReturnValue, Variable

from stylegan_airflow.params import BRANCH_PATTERN, REPO_PATTERN, SETTINGS_PATH_PATTERN

_CHECKS = {"repo": re.compile(REPO_PATTERN), "branch": re.compile(BRANCH_PATTERN),
           "settings_path": re.compile(SETTINGS_PATH_PATTERN)}


def check_watch_target(**values: str) -> None:
    """Refuse a repo, branch or settings path that git would misread (a leading '-' is an
    option to git: ``--upload-pack=<command>`` runs a command); ValueError naming it."""
    for key, value in values.items():
        if "{{" in str(value):  # templated: checked once rendered, in poke
            continue
        if not isinstance(value, str) or not _CHECKS[key].search(value):
            raise ValueError(f"invalid {key} {value!r} for the repo watcher")


class Backend(Protocol):
    def head(self) -> str: ...

    def commits(self, since: str | None, head: str) -> list[str]: ...

    def read(self, sha: str, path: str) -> str | None: ...


class GitBackend:
    """Any git remote: ``git ls-remote`` for the head, a cached bare mirror for history."""

    def __init__(self, url: str, branch: str, cache_dir: str | None = None) -> None:
        check_watch_target(repo=url, branch=branch)
        self.url, self.branch = url, branch
        key = hashlib.sha256(f"{url}\0{branch}".encode()).hexdigest()[:16]
        base = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "stylegan-watch"
        self.mirror = base / key

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              check=False, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"git {args[0]} failed: {proc.stderr.strip()[:300]}")
        return proc.stdout

    def head(self) -> str:
        out = self._git("ls-remote", self.url, f"refs/heads/{self.branch}")
        if not out.strip():
            raise RuntimeError(f"branch {self.branch!r} not found at {self.url}")
        return out.split()[0]

    def commits(self, since: str | None, head: str) -> list[str]:
        if not (self.mirror / "HEAD").exists():
            self.mirror.mkdir(parents=True, exist_ok=True)
            self._git("init", "--bare", "-q", str(self.mirror))
        self._git("fetch", "-q", self.url, f"+refs/heads/{self.branch}:refs/heads/watched",
                  cwd=self.mirror)
        if since is None:
            return [head]
        try:
            out = self._git("rev-list", "--reverse", f"{since}..{head}", cwd=self.mirror)
        except RuntimeError:  # history rewritten past the remembered commit
            return [head]
        return out.split()

    def read(self, sha: str, path: str) -> str | None:
        try:
            return self._git("show", f"{sha}:{path}", cwd=self.mirror)
        except RuntimeError:
            return None


class GithubBackend:
    """GitHub's REST API through the provider's hook and its connection."""

    def __init__(self, conn_id: str, repo: str, branch: str) -> None:
        from airflow.providers.github.hooks.github import GithubHook

        self.client = GithubHook(github_conn_id=conn_id).get_conn()
        self.repo_name, self.branch = repo, branch
        self._repo: Any = None

    @property
    def repo(self) -> Any:
        if self._repo is None:
            self._repo = self.client.get_repo(self.repo_name)
        return self._repo

    def head(self) -> str:
        return str(self.repo.get_branch(self.branch).commit.sha)

    def commits(self, since: str | None, head: str) -> list[str]:
        from github import GithubException

        if since is None:
            return [head]
        try:
            return [str(c.sha) for c in self.repo.compare(since, head).commits]
        except GithubException as exc:
            if exc.status == 404:  # the remembered commit is gone (force push)
                return [head]
            raise

    def read(self, sha: str, path: str) -> str | None:
        from github import GithubException

        try:
            content = self.repo.get_contents(path, ref=sha)
        except GithubException as exc:
            if exc.status == 404:
                return None
            raise
        return bytes(content.decoded_content).decode()


def state_key(backend: str, repo: str, branch: str) -> str:
    """The Airflow Variable holding the last commit fired for this repo and branch."""
    digest = hashlib.sha256(f"{backend}\0{repo}\0{branch}".encode()).hexdigest()[:12]
    return f"stylegan_watch_state_{digest}"


def make_backend(backend: str, repo: str, branch: str, conn_id: str) -> Backend:
    if backend == "github":
        return GithubBackend(conn_id, repo, branch)
    if backend == "git":
        return GitBackend(repo, branch)
    raise ValueError(f"unknown backend {backend!r}; use 'github' or 'git'")


class GitCommitSensor(BaseSensorOperator):
    """Wait for commits on ``branch`` newer than the last one fired for.

    Returns (as XCom) where it looked and the new commits oldest first, each with its
    settings file text: ``{"backend", "repo", "branch", "commits": [{"sha", "settings"}]}``.
    Errors from the remote (5xx, rate limits, network) are logged and the sensor pokes
    again later: nothing fails or is lost.

    :param repo: ``owner/name`` for GitHub, a git URL or path for ``git``.
    :param branch: branch to watch.
    :param backend: ``github`` or ``git``.
    :param settings_path: pipeline settings file read at each commit.
    :param github_conn_id: Airflow connection for the GitHub backend.
    """

    template_fields: Sequence[str] = ("repo", "branch", "backend", "settings_path",
                                      "github_conn_id")

    def __init__(self, *, repo: str, branch: str = "main", backend: str = "github",
                 settings_path: str = "stylegan2.yaml", github_conn_id: str = "github_default",
                 **kwargs: Any) -> None:
        if backend not in ("github", "git") and "{{" not in backend:
            raise ValueError(f"unknown backend {backend!r}; use 'github' or 'git'")
        check_watch_target(repo=repo, branch=branch, settings_path=settings_path)
        super().__init__(**kwargs)
        self.repo, self.branch, self.backend = repo, branch, backend
        self.settings_path, self.github_conn_id = settings_path, github_conn_id

    def poke(self, context: Any) -> PokeReturnValue | bool:
        if not self.repo:
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException("no repository configured (param `repo` or Variable "
                                       "`stylegan_watch_repo`)")
        # rendered values are checked before the try: a bad one is a task failure naming
        # it, not a remote error to poke again for
        check_watch_target(repo=self.repo, branch=self.branch, settings_path=self.settings_path)
        key = state_key(self.backend, self.repo, self.branch)
        state = json.loads(Variable.get(key, default="{}"))
        try:
            backend = make_backend(self.backend, self.repo, self.branch, self.github_conn_id)
            head = backend.head()
            if head == state.get("last"):
                return False
            shas = backend.commits(state.get("last"), head)
            found = [{"sha": sha, "settings": backend.read(sha, self.settings_path)}
                     for sha in shas]
        except Exception as exc:  # noqa: BLE001 - any remote failure: try again later
            status = getattr(exc, "status", None)
            self.log.warning("cannot read %s@%s yet (%s%s); will poke again", self.repo,
                             self.branch, f"HTTP {status}: " if status else "",
                             type(exc).__name__)
            return False
        self.log.info("%d new commit(s) on %s@%s up to %s", len(found), self.repo,
                      self.branch, head)
        return PokeReturnValue(is_done=True, xcom_value={
            "backend": self.backend, "repo": self.repo, "branch": self.branch,
            "commits": found})


def remember(backend: str, repo: str, branch: str, sha: str) -> None:
    """Record ``sha`` as fired for; called once its runs exist."""
    Variable.set(state_key(backend, repo, branch), json.dumps({"last": sha}))


def plan_commit(sha: str, text: str | None, allowed: Sequence[str]
                ) -> tuple[dict[str, Any] | None, str]:
    """The watcher's rule for one commit: (run or None, reason)."""
    import yaml

    if text is None:
        return None, "no settings file at this commit"
    try:
        settings = yaml.safe_load(text) or {}
        dag_id, conf = settings["dag"], dict(settings.get("conf") or {})
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        return None, f"unreadable settings ({type(exc).__name__})"
    if dag_id not in allowed:
        return None, f"DAG {dag_id!r} is not in allowed_dags"
    return {"dag_id": dag_id, "run_id": f"commit__{sha}",
            "conf": {**conf, "git_commit": sha}}, "planned"
