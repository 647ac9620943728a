"""Airflow's own authentication for the page: the UI's ``_token`` cookie or a Bearer JWT.

A browser without a session is sent to Airflow's login page and comes back afterwards;
API clients get 401. Access is the same as for the Airflow UI itself (view WEBSITE).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(auto_error=False)


class LoginRequiredError(Exception):
    """No valid Airflow session: browsers are redirected to ``login_url``."""

    def __init__(self, login_url: str, detail: str) -> None:
        super().__init__(detail)
        self.login_url, self.detail = login_url, detail


def wants_html(request: Request) -> bool:
    """Whether a browser asks for a page (not an API client, an image or a POST)."""
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


async def require_user(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Any:
    """The logged-in Airflow user allowed to see the Airflow UI; else 401/403 or login."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import get_user

    try:
        user = await get_user(request, None, credentials)
    except HTTPException as exc:
        if exc.status_code in (401, 403) and wants_html(request):
            login = get_auth_manager().get_url_login(next_url=str(request.url))
            raise LoginRequiredError(login, str(exc.detail)) from exc
        raise
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(403, "this Airflow user may not view the Airflow UI")
    return user
