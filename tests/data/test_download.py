"""Downloads against a misbehaving loopback server: resume, retry, restart, verify."""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Iterator
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
def server() -> Iterator[LoopbackServer]:
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


# --- bounded retries, validators, locks, disks (issue 13) -----------------------------------

def test_bytes_thrown_away_are_not_progress(server: LoopbackServer, tmp_path: Path) -> None:
    """A server that drops mid-body after ignoring Range sends bytes every time, yet the
    part never gets further: the retries run out after exactly retries + 1 attempts."""
    server.plan.rules["/cat.zip"] = "ignore-range+drop:100000"
    with pytest.raises(StageError, match=r"giving up .* after 3 failed attempts"):
        run(config(server, tmp_path / "cat.zip", md5=MD5, md5_url=None, retries=2))
    # the first attempt kept 100000 bytes (progress, the first failure of a new row); the
    # next two received as much again but kept no more
    assert len(server.plan.requests) == 3


def test_resume_sends_the_recorded_etag_as_if_range(server: LoopbackServer,
                                                    tmp_path: Path) -> None:
    server.plan.paths["/cat.zip"] = deque(["drop:100000"])
    run(config(server, tmp_path / "cat.zip", md5=MD5, md5_url=None))
    etag = server.plan.validators("/cat.zip", BODY)["ETag"]
    assert server.plan.requests == [("/cat.zip", None, None),
                                    ("/cat.zip", "bytes=100000-", etag)]


def test_last_modified_is_the_validator_when_the_etag_is_weak(tmp_path: Path) -> None:
    from stylegan_ops.data.partial import Origin as _Origin

    weak = _Origin("http://h/x", 'W/"abc"', "Tue, 15 Nov 1994 12:45:26 GMT", 10)
    assert weak.if_range() == "Tue, 15 Nov 1994 12:45:26 GMT"
    assert _Origin("http://h/x", '"abc"', None, 10).if_range() == '"abc"'
    assert _Origin("http://h/x").if_range() is None


@pytest.mark.parametrize(("sidecar", "checksum", "resumed"), [
    pytest.param({"url": "SELF"}, False, True, id="recorded-origin"),
    pytest.param({"url": "http://127.0.0.1:9/other.zip"}, True, False, id="other-url"),
    pytest.param({"url": "SELF", "total": 10}, True, False, id="part-longer-than-file"),
    pytest.param(None, False, False, id="unknown-origin-no-checksum"),
    pytest.param(None, True, True, id="unknown-origin-checksum-judges"),
    pytest.param("{broken", True, True, id="damaged-record-checksum-judges"),
])
def test_a_part_is_resumed_only_when_its_origin_allows(
        server: LoopbackServer, tmp_path: Path, sidecar: dict[str, object] | str | None,
        checksum: bool, resumed: bool) -> None:
    out = tmp_path / "cat.zip"
    (tmp_path / "cat.zip.part").write_bytes(BODY[:500000])
    if isinstance(sidecar, dict):
        record = {k: f"{server.url}/cat.zip" if v == "SELF" else v for k, v in sidecar.items()}
        (tmp_path / "cat.zip.part.json").write_text(json.dumps(record))
    elif sidecar is not None:
        (tmp_path / "cat.zip.part.json").write_text(sidecar)
    result = run(config(server, out, md5=MD5 if checksum else None, md5_url=None))
    assert out.read_bytes() == BODY
    assert server.plan.ranges == (["bytes=500000-"] if resumed else [None])
    assert result.resumed_from == (500000 if resumed else 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.zip"]


def test_killed_download_resumes_where_it_stopped(server: LoopbackServer,
                                                 tmp_path: Path) -> None:
    """SIGKILL mid-body: the rerun continues the part with If-Range, no byte twice."""
    import signal
    import subprocess
    import sys
    import time

    server.plan.rules["/cat.zip"] = "pace:65536:0.05"
    out = tmp_path / "cat.zip"
    argv = [sys.executable, "-m", "stylegan_ops.cli", "download", f"{server.url}/cat.zip",
            "--out", str(out), "--md5", MD5]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    part = tmp_path / "cat.zip.part"
    until = time.monotonic() + 20
    while not (part.exists() and part.stat().st_size >= 5 * 65536):
        assert time.monotonic() < until and proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = part.stat().st_size
    del server.plan.rules["/cat.zip"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == BODY
    assert json.loads(done.stdout.splitlines()[-1])["resumed_from"] == kept
    assert server.plan.requests[-1][1:] == (f"bytes={kept}-",
                                           server.plan.validators("/cat.zip", BODY)["ETag"])


def test_a_stale_lock_file_does_not_block(server: LoopbackServer, tmp_path: Path) -> None:
    """A lock file left by a killed run holds no flock: the next run proceeds and removes
    it."""
    (tmp_path / "cat.zip.lock").write_text("999999\n")
    run(config(server, tmp_path / "cat.zip", md5=MD5, md5_url=None, lock_wait=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.zip"]


def test_waiting_for_the_lock_counts_against_the_deadline(server: LoopbackServer,
                                                          tmp_path: Path) -> None:
    import fcntl
    import time

    fd = os.open(tmp_path / "cat.zip.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        started = time.monotonic()
        with pytest.raises(StageError, match="another download"):
            run(config(server, tmp_path / "cat.zip", md5=MD5, md5_url=None, deadline=0.3))
        assert time.monotonic() - started < 2
    finally:
        os.close(fd)


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"timeout": float("nan")}, "timeout must be a finite", id="timeout-nan"),
    pytest.param({"backoff": float("inf")}, "backoff must be a finite", id="backoff-inf"),
    pytest.param({"deadline": 0.0}, "deadline must be a finite number > 0", id="deadline-0"),
    pytest.param({"lock_wait": float("nan")}, "lock-wait must be", id="lock-wait-nan"),
    pytest.param({"max_bytes": 0}, "max-bytes must be >= 1", id="max-bytes-0"),
    pytest.param({"url": "http://127.0.0.1:x/y"}, "not a valid URL", id="bad-port"),
    pytest.param({"url": "http:///y"}, "with a host", id="no-host"),
])
def test_library_refuses_what_the_cli_would(kwargs: dict[str, object], message: str,
                                            tmp_path: Path) -> None:
    """Airflow tasks call the library directly: it validates on its own."""
    kwargs = {"url": "http://127.0.0.1:9/x"} | kwargs
    with pytest.raises(StageError, match=message):
        DownloadConfig(out=tmp_path / "x", **kwargs)  # type: ignore[arg-type]


def _mount(args: list[str]) -> None:
    import subprocess

    res = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:  # not privileged: the fault suite's RLIMIT_FSIZE case stands in
        pytest.skip(f"cannot mount here: {res.stderr.strip()}")


def _umount(path: Path) -> None:
    import subprocess

    subprocess.run(["umount", str(path)], check=False)


def test_a_really_full_disk_is_one_line_naming_the_file(server: LoopbackServer,
                                                        tmp_path: Path) -> None:
    """ENOSPC from a real filesystem: a 1 MiB tmpfs; the server does not declare the
    length, so the free-space check cannot refuse it up front."""
    disk = tmp_path / "disk"
    disk.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)])
    try:
        server.plan.rules["/cat.zip"] = "chunked"
        with pytest.raises(StageError, match=f"disk full writing {disk}/cat.zip.part"):
            run(config(server, disk / "cat.zip", md5=MD5, md5_url=None))
        assert not (disk / "cat.zip").exists() and not (disk / "cat.zip.lock").exists()
        # declared: refused before a byte is written
        del server.plan.rules["/cat.zip"]
        (disk / "cat.zip.part").unlink()
        with pytest.raises(StageError, match=f"needs {len(BODY)} more bytes"):
            run(config(server, disk / "cat.zip", md5=MD5, md5_url=None))
    finally:
        _umount(disk)


def test_an_out_on_a_read_only_mount_is_one_line(server: LoopbackServer,
                                                 tmp_path: Path) -> None:
    """Root ignores permission bits, not a read-only mount."""
    ro = tmp_path / "ro"
    ro.mkdir()
    _mount(["--bind", "-o", "ro", str(ro), str(ro)])
    try:
        with pytest.raises(StageError, match=f"cannot write {ro}/cat.zip.lock: Read-only"):
            run(config(server, ro / "cat.zip", md5=MD5, md5_url=None))
    finally:
        _umount(ro)
