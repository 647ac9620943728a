"""Downloads against a misbehaving loopback server: resume, retry, restart, verify."""

from __future__ import annotations

import hashlib
import os
from collections import deque
from pathlib import Path

import pytest

from stylegan_ops.data.download import DownloadConfig, run
from stylegan_ops.errors import StageError
from tests.conftest import cli_subprocess
from tests.httpserver import LoopbackServer, Plan

BODY = os.urandom(3 * 2**20 + 12345)
MD5 = hashlib.md5(BODY).hexdigest()
SHA256 = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def server() -> LoopbackServer:
    plan = Plan(files={"/cat.zip": BODY, "/cat.zip.md5": f"{MD5}  cat.zip\n".encode(),
                       "/bare.md5": MD5.encode()}, stall_seconds=2.0)
    with LoopbackServer(plan) as srv:
        yield srv


def config(server: LoopbackServer, out: Path, **kw: object) -> DownloadConfig:
    kw.setdefault("md5_url", f"{server.url}/cat.zip.md5")
    return DownloadConfig(f"{server.url}/cat.zip", out, timeout=0.5, backoff=0.01,
                          **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("script", [
    pytest.param([], id="clean"),
    pytest.param(["ok", "drop:100000"], id="drop-once"),
    pytest.param(["ok", "drop:1000", "drop:500000", "drop:7"], id="drop-repeatedly"),
    pytest.param(["ok", "stall:200000"], id="stall"),
    pytest.param(["ok", "500", "500", "429"], id="server-errors"),
    pytest.param(["ok", "drop:300000", "ignore-range"], id="ignores-range"),
    pytest.param(["ok", "drop:300000", "bad-start"], id="wrong-resume-offset"),
])
def test_recoverable_failures_end_in_a_correct_file(server: LoopbackServer, tmp_path: Path,
                                                    script: list[str]) -> None:
    server.plan.script = deque(script)
    out = tmp_path / "cat.zip"
    result = run(config(server, out))
    assert out.read_bytes() == BODY
    assert result.md5 == MD5 and result.verified
    assert result.sha256 is None  # only what is checked gets computed
    assert not (tmp_path / "cat.zip.part").exists()


def test_resume_continues_from_the_part_file_offset(server: LoopbackServer,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "cat.zip"
    (tmp_path / "cat.zip.part").write_bytes(BODY[:777777])
    result = run(config(server, out, md5=MD5, md5_url=None, sha256=SHA256))
    assert out.read_bytes() == BODY
    assert result.resumed_from == 777777
    assert (result.md5, result.sha256) == (MD5, SHA256)
    assert server.plan.ranges == ["bytes=777777-"]


def test_complete_part_file_gets_416_and_is_accepted(server: LoopbackServer,
                                                     tmp_path: Path) -> None:
    (tmp_path / "cat.zip.part").write_bytes(BODY)
    run(config(server, tmp_path / "cat.zip", md5_url=f"{server.url}/bare.md5"))
    assert (tmp_path / "cat.zip").read_bytes() == BODY


def test_existing_complete_file_is_a_no_op(server: LoopbackServer, tmp_path: Path) -> None:
    out = tmp_path / "cat.zip"
    out.write_bytes(BODY)
    result = run(config(server, out))
    assert result.reused and result.verified
    assert server.plan.ranges == [None]  # only the .md5 file was fetched


def test_existing_file_with_wrong_checksum_is_left_alone(server: LoopbackServer,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "cat.zip"
    out.write_bytes(b"something else")
    with pytest.raises(StageError, match="exists but its md5"):
        run(config(server, out))
    assert out.read_bytes() == b"something else"


@pytest.mark.parametrize(("script", "path", "message"), [
    pytest.param(["ok", "corrupt"], "/cat.zip", "md5 mismatch", id="corrupted-bytes"),
    pytest.param(["ok"] + ["500"] * 5, "/cat.zip", "giving up", id="persistent-500"),
    pytest.param([], "/missing.zip", "HTTP 404", id="not-found"),
])
def test_unrecoverable_failures_exit_2_and_leave_no_file(server: LoopbackServer,
                                                         tmp_path: Path, script: list[str],
                                                         path: str, message: str) -> None:
    server.plan.script = deque(script)
    out = tmp_path / "cat.zip"
    proc = cli_subprocess("download", f"{server.url}{path}", "--out", out, "--md5-url",
                          f"{server.url}/cat.zip.md5", "--retries", "3", "--backoff", "0.01",
                          "--timeout", "1")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr.splitlines()[-1]
    assert not out.exists()
    assert not (tmp_path / "cat.zip.part").exists() or message != "md5 mismatch"


def test_sha256_mismatch_is_refused(server: LoopbackServer, tmp_path: Path) -> None:
    with pytest.raises(StageError, match="sha256 mismatch"):
        run(config(server, tmp_path / "cat.zip", sha256="0" * 64))
    assert not (tmp_path / "cat.zip").exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"md5": "xyz"}, "md5 must be 32 hex digits", id="bad-md5"),
    pytest.param({"sha256": "ab"}, "sha256 must be 64 hex digits", id="bad-sha256"),
    pytest.param({"url": "ftp://host/x"}, "url must be an http", id="bad-scheme"),
    pytest.param({"md5": "0" * 32, "md5_url": "http://x/y"}, "not both", id="both-md5"),
])
def test_bad_arguments_are_named(kwargs: dict[str, str], message: str, tmp_path: Path) -> None:
    kwargs = {"url": "http://127.0.0.1:9/x"} | kwargs
    with pytest.raises(StageError, match=message):
        DownloadConfig(out=tmp_path / "x", **kwargs)  # type: ignore[arg-type]


def test_success_prints_json_as_last_stdout_line(server: LoopbackServer, tmp_path: Path) -> None:
    import json

    proc = cli_subprocess("download", f"{server.url}/cat.zip", "--out", tmp_path / "cat.zip",
                          "--md5", MD5)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["md5"] == MD5
