"""A fake GitHub REST API on 127.0.0.1, answering from a real local git repository.

Enough of the API for PyGithub's get_repo / get_branch / compare / get_contents, with
scripted faults: ``500`` (server error), ``429`` (Retry-After 1 s) and ``ratelimit`` (403,
remaining 0, reset in 1 s).
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout


class FakeGithub:
    def __init__(self, repo: Path, full_name: str = "cats/pipeline") -> None:
        self.repo, self.full_name = repo, full_name
        self.faults: deque[str] = deque()
        self.requests: list[str] = []
        self.auth: set[str] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                outer.auth.add(self.headers.get("Authorization", ""))
                if outer.faults:
                    fault = outer.faults.popleft()
                    if fault == "500":
                        return self._send(500, {"message": "boom"})
                    if fault == "429":
                        return self._send(429, {"message": "Too Many Requests"},
                                          {"Retry-After": "1"})
                    if fault == "ratelimit":
                        return self._send(403, {"message": "API rate limit exceeded"}, {
                            "X-RateLimit-Remaining": "0", "X-RateLimit-Limit": "60",
                            "X-RateLimit-Reset": str(int(time.time()) + 1)})
                status, body = outer.answer(self.path)
                self._send(status, body)

            def _send(self, status: int, body: object, headers: dict[str, str] | None = None
                      ) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def answer(self, path: str) -> tuple[int, object]:
        url = urlsplit(path)
        prefix = f"/repos/{self.full_name}"
        if not url.path.startswith(prefix):
            return 404, {"message": "Not Found"}
        rest = unquote(url.path[len(prefix):])
        if rest == "":
            return 200, {"full_name": self.full_name, "name": self.full_name.split("/")[1],
                         "url": f"{self.url}{prefix}", "default_branch": "main"}
        if rest.startswith("/branches/"):
            branch = rest[len("/branches/"):]
            try:
                sha = git(self.repo, "rev-parse", f"refs/heads/{branch}").strip()
            except subprocess.CalledProcessError:
                return 404, {"message": "Branch not found"}
            return 200, {"name": branch, "commit": {"sha": sha, "url": ""}}
        if rest.startswith("/compare/"):
            base, head = rest[len("/compare/"):].split("...")
            try:
                shas = git(self.repo, "rev-list", "--reverse", f"{base}..{head}").split()
            except subprocess.CalledProcessError:
                return 404, {"message": "Not Found"}
            return 200, {"status": "ahead", "ahead_by": len(shas), "total_commits": len(shas),
                         "commits": [{"sha": s, "url": ""} for s in shas]}
        if rest.startswith("/contents/"):
            file_path = rest[len("/contents/"):]
            ref = parse_qs(url.query).get("ref", ["HEAD"])[0]
            try:
                data = subprocess.run(["git", "show", f"{ref}:{file_path}"], cwd=self.repo,
                                      capture_output=True, check=True).stdout
            except subprocess.CalledProcessError:
                return 404, {"message": "Not Found"}
            return 200, {"type": "file", "encoding": "base64", "path": file_path,
                         "name": file_path.rsplit("/", 1)[-1], "sha": "0" * 40,
                         "size": len(data), "content": base64.b64encode(data).decode()}
        return 404, {"message": "Not Found"}

    def __enter__(self) -> FakeGithub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def make_origin(base: Path) -> tuple[Path, Path]:
    """A bare 'remote' repository with branch main and a working clone that pushes to it."""
    bare, work = base / "origin.git", base / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True,
                   capture_output=True)
    git(work, "config", "user.email", "ci@example.com")
    git(work, "config", "user.name", "CI")
    git(work, "checkout", "-q", "-b", "main")
    return bare, work
