"""The page sits behind Airflow's own login; the webhook does not (its signature guards it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import HTML

pytestmark = pytest.mark.airflow


@pytest.fixture
def secured(airflow_db: Path, filled: tuple[Path, Any]) -> Iterator[tuple[Any, str]]:
    """The app with the real SimpleAuthManager, and a JWT it issued for the admin."""
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient
    from stylegan_airflow.ui import create_app

    manager = create_auth_manager()
    manager.init()
    token = manager.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    with TestClient(create_app(filled[0])) as client:
        yield client, token


@pytest.mark.parametrize("url", ["/", "/metrics", "/images", "/compare", "/graph",
                                 "/versions/lsun-cat-256", "/files/lsun-cat-256:v1/reals.png",
                                 "/thumbs/128/lsun-cat-256:v1/reals.png", "/api/versions"])
def test_everything_but_the_webhook_needs_an_airflow_login(secured: tuple[Any, str],
                                                           url: str) -> None:
    client, token = secured
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"Authorization": "Bearer not-a-jwt"}).status_code in (
        401, 403)
    assert client.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    client.cookies.set("_token", token)  # what the Airflow UI's session carries
    try:
        assert client.get(url).status_code == 200
    finally:
        client.cookies.clear()


def test_a_browser_without_a_session_is_sent_to_the_airflow_login(secured: tuple[Any, str]
                                                                  ) -> None:
    client, _ = secured
    res = client.get("/metrics", headers=HTML, follow_redirects=False)
    assert res.status_code == 303
    assert res.headers["location"].startswith("/auth/login?next=")
    assert "metrics" in res.headers["location"]


def test_the_webhook_and_static_files_need_no_login(secured: tuple[Any, str]) -> None:
    client, _ = secured
    assert client.get("/static/style.css").status_code == 200
    # no secret configured in this environment: refused, but not by the login
    res = client.post("/github/webhook", content=b"{}", headers={"X-GitHub-Event": "push"})
    assert res.status_code in (401, 503) and res.status_code != 303
