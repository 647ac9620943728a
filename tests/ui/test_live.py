"""The plugin inside a real Airflow (PostgreSQL, api-server, scheduler, dag-processor).

The GitHub webhook creates real DAG runs once per commit; a headless Chromium logs in
through Airflow's own login page and looks at the StyleGAN2 page, alone and inside the
Airflow UI. Screenshots land in ``build/test-artifacts/`` (or ``$STYLEGAN_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from stylegan_airflow.webhook import signature

from tests.airflow.stack import PASSWORD, AirflowStack, postgres_available
from tests.airflow.test_watch_repo import push
from tests.conftest import need
from tests.fakegithub import FakeGithub, git
from tests.ui.browser import (
    LOADED_IMAGES,
    OVERFLOW,
    RUN_ROWS,
    artifacts,
    tall_or_broken,
    wait_for,
)
from tests.ui.storefill import PREPARE_RUN, REUSE_RUN, TRAIN_RUN, fill

pytestmark = [pytest.mark.scheduler, pytest.mark.airflow]

SECRET = "webhook-secret-for-tests"
ROOT = Path(__file__).resolve().parents[2]
CONF = {"source_url": "sample", "sample_count": 10, "resolution": 8, "max_images": 8}


@dataclass
class Live:
    stack: AirflowStack
    work: Path  # a clone that pushes to the repository the fake GitHub serves


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    need(postgres_available(), "PostgreSQL server binaries (initdb, pg_ctl) not found")
    base = tmp_path_factory.mktemp("ui-stack")
    bare, work = base / "origin.git", base / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    for key, value in (("user.email", "ci@example.com"), ("user.name", "CI")):
        git(work, "config", key, value)
    git(work, "checkout", "-q", "-b", "main")
    fill(base / "store", base / "store-src")  # the stack's STYLEGAN_STORE
    with FakeGithub(bare) as api:
        stack = AirflowStack(base, extra_env={
            "AIRFLOW_VAR_STYLEGAN_WEBHOOK_SECRET": SECRET,
            "STYLEGAN_WATCH_REPO": "cats/pipeline",
            "STYLEGAN_WATCH_BACKEND": "github",
            "AIRFLOW_CONN_GITHUB_DEFAULT": json.dumps(
                {"conn_type": "github", "password": "gh-token-for-tests", "host": api.url}),
            # runs are created, not executed: the webhook is under test, not the pipeline
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "STYLEGAN_CACHE": str(base / "cache"),
        })
        try:
            stack.start()
            for dag_id in ("stylegan2_prepare", "stylegan2_train", "stylegan2_watch_repo"):
                stack.wait(lambda d=dag_id: stack.api("GET", f"/api/v2/dags/{d}") is not None,
                           240, f"{dag_id} to be parsed")
            yield Live(stack, work)
        except BaseException:
            print(stack.logs())
            raise
        finally:
            stack.stop()


def deliver(url: str, payload: dict[str, Any] | bytes, secret: str | None = SECRET,
            event: str = "push") -> tuple[int, Any]:
    """POST a webhook delivery as GitHub does; (status, parsed body or None)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event,
               "User-Agent": "GitHub-Hookshot/test"}
    if secret is not None:
        headers["X-Hub-Signature-256"] = signature(secret, body)
    req = urllib.request.Request(f"{url}/stylegan/github/webhook", data=body, method="POST",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            data = resp.read()
            return resp.status, json.loads(data) if data else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def runs(stack: AirflowStack) -> list[str]:
    """The commit runs of stylegan2_prepare."""
    found = stack.api("GET", "/api/v2/dags/stylegan2_prepare/dagRuns?limit=100")
    return sorted(r["dag_run_id"] for r in found["dag_runs"]
                  if r["dag_run_id"].startswith("commit__"))


def test_webhook_triggers_one_run_per_commit_and_refuses_bad_signatures(live: Live) -> None:
    stack = live.stack
    sha = push(live.work, CONF)
    payload = {"ref": "refs/heads/main", "before": "0" * 40, "after": sha,
               "repository": {"full_name": "cats/pipeline"},
               "commits": [{"id": sha, "message": "settings"}]}
    body = json.dumps(payload).encode()

    status, result = deliver(stack.url, body)
    assert status == 202, (result, stack.logs())
    assert result["triggered"] == [{"dag_id": "stylegan2_prepare", "run_id": f"commit__{sha}"}]
    run = stack.api("GET", f"/api/v2/dags/stylegan2_prepare/dagRuns/commit__{sha}")
    assert run["conf"] == {**CONF, "git_commit": sha}
    assert runs(stack) == [f"commit__{sha}"]

    status, result = deliver(stack.url, body)  # GitHub's redelivery: byte for byte
    assert status == 202 and result["triggered"] == []
    assert result["existing"] == [{"dag_id": "stylegan2_prepare", "run_id": f"commit__{sha}"}]

    other = push(live.work, {**CONF, "sample_count": 11})
    forged = json.dumps({**payload, "after": other, "commits": [{"id": other}]}).encode()
    assert deliver(stack.url, forged, secret="not the secret")[0] == 401
    assert deliver(stack.url, forged, secret=None)[0] == 401
    assert deliver(stack.url, {"zen": "hi"}, event="ping")[0] == 204
    assert runs(stack) == [f"commit__{sha}"]  # nothing but the one run


@pytest.mark.browser
def test_the_page_renders_in_chromium_after_the_airflow_login(live: Live, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    url = live.stack.url
    browser.get(f"{url}/stylegan/")  # no session yet: Airflow's login page, then back
    user = wait_for(lambda: browser.find_element(By.NAME, "username"), "the login form")
    user.send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: any(c["name"] == "_token" for c in browser.get_cookies()), "the session")

    browser.get(f"{url}/stylegan/")
    tables = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "table.versions"),
                      "the versions table")
    names = {t.get_attribute("data-name") for t in tables}
    assert {"lsun-cat-256", "stylegan2-trained-network", "stylegan2-generated-ours"} <= names
    assert wait_for(lambda: browser.execute_script(LOADED_IMAGES) >= 2, "thumbnails to load")
    browser.save_screenshot(str(artifacts() / "stylegan-versions.png"))

    browser.get(f"{url}/stylegan/images")
    wait_for(lambda: browser.execute_script(LOADED_IMAGES) >= 8, "the images page")
    browser.save_screenshot(str(artifacts() / "stylegan-images.png"))

    # the same page inside the Airflow UI, from the plugin's navigation entry
    browser.get(f"{url}/plugin/stylegan2")
    frame = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "iframe[title=StyleGAN2]"),
                     "the plugin's iframe in the Airflow UI")
    browser.switch_to.frame(frame)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "table.versions"),
             "the versions table inside the Airflow UI")
    assert wait_for(lambda: browser.execute_script(LOADED_IMAGES) >= 1, "an image in the UI")
    browser.switch_to.default_content()
    browser.save_screenshot(str(artifacts() / "stylegan-in-airflow-ui.png"))

    # the DAG run page gets a tab listing the versions that run committed
    created = live.stack.api("POST", "/api/v2/dags/stylegan2_prepare/dagRuns", {
        "dag_run_id": PREPARE_RUN, "logical_date": None, "conf": CONF})
    assert created is not None  # paused DAG: the run waits, its page exists
    browser.get(f"{url}/dags/stylegan2_prepare/runs/{quote(PREPARE_RUN, safe='')}"
                "/plugin/stylegan2-run-versions")
    frame = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "iframe"), "the run's tab")
    browser.switch_to.frame(frame)
    rows = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "table.versions tbody tr"),
                    "the run's versions")
    assert len(rows) == 2  # lsun-cat-256 v1 and v2 came from that run
    assert wait_for(lambda: browser.execute_script(LOADED_IMAGES) >= 2, "their previews")
    browser.switch_to.default_content()
    browser.save_screenshot(str(artifacts() / "stylegan-run-tab.png"))

    # the train run's tab, in the frame the Airflow UI gives it: eight outputs with their
    # inputs and metrics, each row about two lines high, nothing hidden to the right
    created = live.stack.api("POST", "/api/v2/dags/stylegan2_train/dagRuns", {
        "dag_run_id": TRAIN_RUN, "logical_date": None, "conf": {}})
    assert created is not None
    browser.get(f"{url}/dags/stylegan2_train/runs/{TRAIN_RUN}/plugin/stylegan2-run-versions")
    frame = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "iframe"), "the train tab")
    browser.switch_to.frame(frame)
    rows = wait_for(lambda: len(found := browser.execute_script(RUN_ROWS)) == 8 and found,
                    "the train run's versions")
    assert tall_or_broken(rows) == [], browser.execute_script("return innerWidth")
    assert browser.execute_script(OVERFLOW) <= 0
    browser.switch_to.default_content()
    browser.save_screenshot(str(artifacts() / "stylegan-run-tab-train.png"))

    # a seeds-only rerun's tab marks what it reused; "last computed by" opens the page of
    # the run that computed it in the same frame (Airflow's sandbox allows no other)
    created = live.stack.api("POST", "/api/v2/dags/stylegan2_train/dagRuns", {
        "dag_run_id": REUSE_RUN, "logical_date": None, "conf": {}})
    assert created is not None
    browser.get(f"{url}/dags/stylegan2_train/runs/{REUSE_RUN}/plugin/stylegan2-run-versions")
    frame = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "iframe"), "the rerun tab")
    browser.switch_to.frame(frame)
    links = wait_for(lambda: browser.find_elements(
        By.CSS_SELECTOR, 'tr[data-origin="reused"] td.task a.run'), "the reused rows")
    assert len(links) == 5 and len(browser.find_elements(
        By.CSS_SELECTOR, 'tr[data-origin="made"]')) == 1
    links[0].click()
    wait_for(lambda: len(browser.execute_script(RUN_ROWS)) == 8, "the computing run's rows")
    assert TRAIN_RUN in browser.find_element(By.CSS_SELECTOR, "h1.run-title").text
    browser.switch_to.default_content()
    assert browser.current_url.endswith(f"/runs/{REUSE_RUN}/plugin/stylegan2-run-versions")


def test_the_api_server_draws_graphs_from_the_serialized_dags(live: Live) -> None:
    stack = live.stack
    req = urllib.request.Request(f"{stack.url}/stylegan/graph/stylegan2_prepare/graph.dot",
                                 headers={"Authorization": f"Bearer {stack.token()}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        dot = resp.read().decode()
    assert '"task:commit"' in dot and 'class="fn_versioning"' in dot
    assert '"task:extract" [label="extract [ ]"' in dot  # mapped, as the DB knows it
    plugins = stack.api("GET", "/api/v2/plugins")["plugins"]
    ours = next(p for p in plugins if p["name"] == "stylegan")
    assert [v["url_route"] for v in ours["external_views"]] == [
        "stylegan2", "stylegan2-run-versions"]
