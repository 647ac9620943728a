"""The GitHub push webhook against a fake Airflow: signatures, filters, one run per commit."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from stylegan_airflow.sensors import plan_commit
from stylegan_airflow.webhook import RefusedError, WatchConfig, signature

SECRET = "It's a Secret to Everybody"
SHAS = ["a" * 40, "b" * 40, "c" * 40]


@dataclass
class FakeAirflow:
    """Runs in a dict, settings files by commit; records every GitHub read."""

    settings: dict[str, str | None]
    secret_value: str | None = SECRET
    cfg: WatchConfig = field(default_factory=lambda: WatchConfig("cats/pipeline", "main"))
    runs: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)
    fail_reads: bool = False

    def secret(self) -> str | None:
        return self.secret_value

    def config(self) -> WatchConfig:
        return self.cfg

    def existing(self, run_id: str, dag_ids: Any) -> str | None:
        found = self.runs.get(run_id)
        return found[0] if found and found[0] in dag_ids else None

    def read_settings(self, cfg: WatchConfig, sha: str) -> str | None:
        if self.fail_reads:
            raise ConnectionError("github is down")
        self.reads.append(sha)
        return self.settings.get(sha)

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> bool:
        if conf.get("resolution") == 48:
            raise RefusedError("stylegan2_prepare refused the settings' conf: resolution")
        if run_id in self.runs:
            return False
        self.runs[run_id] = (dag_id, conf)
        return True


def settings(conf: dict[str, Any], dag: str = "stylegan2_prepare") -> str:
    return yaml.safe_dump({"dag": dag, "conf": conf})


def push(shas: list[str], repo: str = "cats/pipeline", ref: str = "refs/heads/main",
         **extra: Any) -> dict[str, Any]:
    return {"ref": ref, "before": "0" * 40, "after": shas[-1],
            "repository": {"full_name": repo, "clone_url": f"https://github.com/{repo}.git"},
            "commits": [{"id": s, "message": "m"} for s in shas], **extra}


@pytest.fixture
def fake() -> FakeAirflow:
    return FakeAirflow({SHAS[0]: settings({"sample_count": 10}),
                        SHAS[1]: None,  # a commit without a settings file
                        SHAS[2]: settings({"total_kimg": 2}, dag="stylegan2_train")})


@pytest.fixture
def post(fake: FakeAirflow, tmp_path: Path) -> Any:
    from fastapi.testclient import TestClient
    from stylegan_airflow.ui import create_app

    client = TestClient(create_app(tmp_path, webhook=fake))

    def send(payload: dict[str, Any] | bytes, event: str = "push", sign: str | None = SECRET,
             header: str | None = None, form: bool = False) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        kind = "application/json"
        if form:
            body, kind = urlencode({"payload": body.decode()}).encode(), \
                "application/x-www-form-urlencoded"
        headers = {"X-GitHub-Event": event, "Content-Type": kind,
                   "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
        if header is not None:
            headers["X-Hub-Signature-256"] = header
        elif sign is not None:
            headers["X-Hub-Signature-256"] = signature(sign, body)
        return client.post("/github/webhook", content=body, headers=headers)

    return send


def test_githubs_documented_signature_example() -> None:
    # the example from GitHub's "Validating webhook deliveries" documentation
    assert signature(SECRET, b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")


def test_signed_push_triggers_one_run_per_commit_oldest_first(fake: FakeAirflow,
                                                              post: Any) -> None:
    res = post(push(SHAS))
    assert res.status_code == 202
    body = res.json()
    assert body["triggered"] == [
        {"dag_id": "stylegan2_prepare", "run_id": f"commit__{SHAS[0]}"},
        {"dag_id": "stylegan2_train", "run_id": f"commit__{SHAS[2]}"}]
    assert body["skipped"] == [{"sha": SHAS[1], "reason": "no settings file at this commit"}]
    assert list(fake.runs) == [f"commit__{SHAS[0]}", f"commit__{SHAS[2]}"]
    assert fake.runs[f"commit__{SHAS[0]}"] == ("stylegan2_prepare",
                                               {"sample_count": 10, "git_commit": SHAS[0]})


def test_a_redelivery_triggers_nothing_and_asks_github_nothing(fake: FakeAirflow,
                                                               post: Any) -> None:
    assert post(push(SHAS[:1])).status_code == 202
    fake.reads.clear()
    again = post(push(SHAS[:1]))
    assert again.status_code == 202
    assert again.json()["triggered"] == [] and again.json()["existing"] == [
        {"dag_id": "stylegan2_prepare", "run_id": f"commit__{SHAS[0]}"}]
    assert fake.reads == [] and len(fake.runs) == 1


@pytest.mark.parametrize(("header", "sign"), [
    pytest.param(None, None, id="unsigned"),
    pytest.param(None, "the wrong secret", id="wrong-secret"),
    pytest.param("sha256=", None, id="empty-digest"),
    pytest.param("sha1=" + "0" * 40, None, id="sha1-only"),
    pytest.param("sha256=" + "0" * 64, None, id="zeros"),
])
def test_bad_or_missing_signatures_are_401_and_trigger_nothing(
        fake: FakeAirflow, post: Any, header: str | None, sign: str | None) -> None:
    res = post(push(SHAS), sign=sign, header=header)
    assert res.status_code == 401 and "X-Hub-Signature-256" in res.json()["detail"]
    assert fake.runs == {} and fake.reads == []


def test_a_body_changed_after_signing_is_refused(fake: FakeAirflow, post: Any) -> None:
    body = json.dumps(push(SHAS[:1])).encode()
    res = post(body.replace(b"main", b"mainx"), header=signature(SECRET, body))
    assert res.status_code == 401 and fake.runs == {}


@pytest.mark.parametrize(("payload", "event"), [
    pytest.param({"zen": "Design for failure.", "hook_id": 1}, "ping", id="ping"),
    pytest.param(push(SHAS), "pull_request", id="other-event"),
    pytest.param(push(SHAS, repo="dogs/pipeline"), "push", id="other-repo"),
    pytest.param(push(SHAS, ref="refs/heads/dev"), "push", id="other-branch"),
    pytest.param(push(SHAS, ref="refs/tags/v1"), "push", id="tag"),
    pytest.param(push(SHAS, deleted=True), "push", id="branch-deleted"),
])
def test_other_events_repos_and_branches_are_204(fake: FakeAirflow, post: Any,
                                                 payload: dict[str, Any], event: str) -> None:
    res = post(payload, event=event)
    assert res.status_code == 204 and res.content == b""
    assert fake.runs == {}


def test_form_encoded_deliveries_work_too(fake: FakeAirflow, post: Any) -> None:
    assert post(push(SHAS[:1]), form=True).status_code == 202
    assert list(fake.runs) == [f"commit__{SHAS[0]}"]


def test_a_conf_the_dag_refuses_is_skipped_saying_why(fake: FakeAirflow, post: Any) -> None:
    fake.settings[SHAS[0]] = settings({"resolution": 48})
    body = post(push(SHAS[:1])).json()
    assert body["triggered"] == [] and "resolution" in body["skipped"][0]["reason"]


def test_github_down_is_502_and_nothing_is_lost(fake: FakeAirflow, post: Any) -> None:
    fake.fail_reads = True
    res = post(push(SHAS[:1]))
    assert res.status_code == 502 and "redeliver" in res.json()["detail"]
    fake.fail_reads = False
    assert post(push(SHAS[:1])).json()["triggered"]  # GitHub's redelivery succeeds


def test_no_secret_configured_refuses_everything(fake: FakeAirflow, post: Any) -> None:
    fake.secret_value = None
    res = post(push(SHAS), sign="")
    assert res.status_code == 503 and "stylegan_webhook_secret" in res.json()["detail"]
    assert fake.runs == {}


def test_unreadable_payloads_are_400_after_the_signature(post: Any) -> None:
    assert post(b"not json").status_code == 400
    assert post(b"not json", sign="wrong").status_code == 401


def test_repo_urls_match_for_the_git_backend(fake: FakeAirflow, post: Any) -> None:
    fake.cfg = WatchConfig(repo="https://github.com/cats/pipeline.git", backend="git")
    assert post(push(SHAS[:1])).status_code == 202


@pytest.mark.parametrize(("text", "reason"), [
    pytest.param(None, "no settings file", id="missing"),
    pytest.param("dag: [", "unreadable settings", id="bad-yaml"),
    pytest.param("conf: {}", "unreadable settings", id="no-dag"),
    pytest.param("dag: evil_dag", "not in allowed_dags", id="not-allowed"),
])
def test_plan_follows_the_watchers_rules(text: str | None, reason: str) -> None:
    run, why = plan_commit("f" * 40, text, ("stylegan2_prepare",))
    assert run is None and reason in why
