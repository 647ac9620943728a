"""Fault table for ``download`` and ``store pull`` against a scripted loopback server.

Every server misbehaviour the issue lists, as one line each: drops, ignored or wrong
ranges, lying lengths, endless bodies, a file that changes between attempts, hostile
redirects, error storms, stalls and slow lorises, wrong checksums, full disks, bad
arguments, and a malicious remote store. The server lives on 127.0.0.1 for the whole
module; each case serves its own paths under ``/<case id>/`` so cases never share state.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pytest

from stylegan_ops.store.local import Store
from tests.faults.harness import Case, check_case
from tests.httpserver import HUGE, LoopbackServer, Plan

PLAN = Plan(stall_seconds=1.5, trickle_seconds=0.05, endless_seconds=5.0)
SERVER = LoopbackServer(PLAN).__enter__()  # a daemon thread for the module's lifetime
URL = SERVER.url

_rng = random.Random(13)
BODY = _rng.randbytes(300_000)
V2 = _rng.randbytes(300_000)  # what the server has after ``change``
MD5 = hashlib.md5(BODY).hexdigest()
FAST = ("--retries", "3", "--backoff", "0.01", "--timeout", "0.5")
STALL = ("--retries", "1", "--timeout", "0.3")  # appended: click keeps the last value
LEFT_BEHIND = (".lock", ".part.json")  # a finished or refused run removes its lock file


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --- downloads ---------------------------------------------------------------------------

def serve(cid: str, script: tuple[str, ...] = (), rule: str | None = None,
          files: dict[str, bytes] | None = None, rules: dict[str, str] | None = None
          ) -> Callable[[Path], None]:
    """A setup that publishes ``/<cid>/cat.zip`` (and ``files``) with its script and rules."""
    def setup(d: Path) -> None:
        path = f"/{cid}/cat.zip"
        PLAN.files[path] = BODY
        PLAN.changed[path] = V2
        for name, data in (files or {}).items():
            PLAN.files[f"/{cid}/{name}"] = data
        for name, standing in (rules or {}).items():
            PLAN.rules[f"/{cid}/{name}"] = standing
        PLAN.paths[path] = deque(script)
        if rule is not None:
            PLAN.rules[path] = rule
    return setup


def downloaded(want: bytes) -> Callable[[Path, subprocess.CompletedProcess[str]], None]:
    """The promoted file is ``want`` and the reported digest is the digest of that file."""
    def check(d: Path, res: subprocess.CompletedProcess[str]) -> None:
        out = d / "cat.zip"
        assert out.read_bytes() == want
        result = json.loads(res.stdout.strip().splitlines()[-1])
        assert result["md5"] == md5(out.read_bytes()) and result["verified"]
        assert result["bytes"] == len(want)
        assert not [p.name for p in d.iterdir() if p.name != "cat.zip"], list(d.iterdir())
    return check


def refused(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    """Nothing was promoted and no lock file is left; a resumable part may stay."""
    assert not (d / "cat.zip").exists() or (d / "cat.zip").read_bytes() == b"not the file"
    assert not (d / "cat.zip.lock").exists()


def dl(cid: str, *flags: str, script: tuple[str, ...] = (), rule: str | None = None,
       want: bytes = BODY, expect: str = "usage", message: str | None = None,
       fsize_limit: int | None = None, files: dict[str, bytes] | None = None,
       checksum: tuple[str, ...] | None = None, setup: Callable[[Path], None] | None = None,
       rules: dict[str, str] | None = None,
       check: Callable[[Path, subprocess.CompletedProcess[str]], None] | None = None) -> Case:
    """One download case: ``--md5`` of ``want`` unless ``checksum`` says otherwise."""
    served = serve(cid, script, rule, files, rules)

    def both(d: Path) -> None:
        served(d)
        if setup is not None:
            setup(d)

    argv = ("download", f"{URL}/{cid}/cat.zip", "--out", "{d}/cat.zip",
            *(("--md5", md5(want)) if checksum is None else checksum), *FAST, *flags)
    return Case(cid, argv, setup=both, expect=expect, message=message,
                check=check or (downloaded(want) if expect == "ok" else refused),
                fsize_limit=fsize_limit, timeout=30.0)


def bad_arg(cid: str, argv: tuple[str, ...], message: str,
            setup: Callable[[Path], None] | None = None) -> Case:
    return Case(cid, argv, setup=setup, message=message, timeout=30.0)


HOLDERS: list[subprocess.Popen[str]] = []


def hold_lock(d: Path) -> None:
    """Another process holds the download's lock (a still-running earlier try)."""
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'4242'); print('held', flush=True); "
            "time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(d / "cat.zip.lock")],
                            stdout=subprocess.PIPE, text=True)
    HOLDERS.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"


def holder_untouched(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    """The waiting run gave up without touching the holder's lock, then the holder ends."""
    holder = HOLDERS.pop()
    assert holder.poll() is None and (d / "cat.zip.lock").read_bytes() == b"4242"
    assert not (d / "cat.zip").exists() and not (d / "cat.zip.part").exists()
    holder.kill()
    holder.wait()


def file_in_the_way(d: Path) -> None:
    (d / "cat.zip").write_bytes(b"not the file")


D = "{d}"
DOWNLOAD_CASES = [
    dl("clean", expect="ok"),
    dl("drop-once", script=("drop:100000",), expect="ok"),
    dl("stall-once", script=("stall:100000",), expect="ok"),
    dl("ignore-range-once", script=("drop:100000", "ignore-range"), expect="ok"),
    dl("wrong-total-once", script=("drop:100000", "bad-total"), expect="ok"),
    dl("wrong-start-once", script=("drop:100000", "bad-start"), expect="ok"),
    dl("overlong-range", script=("drop:100000", "overlong"), expect="ok"),
    dl("endless-after-length", rule="endless", expect="ok"),
    dl("chunked", rule="chunked", expect="ok"),
    dl("errors-then-ok", script=("500", "429", "503"), expect="ok"),
    dl("redirect-http", rule="redirect:/redirect-http/real.zip", files={"real.zip": BODY},
       expect="ok"),
    # drop mid-body after ignoring Range, or answer every resume with a wrong range:
    # bytes arrive each time but are thrown away, so the retries run out
    dl("drop-ignoring-range", rule="ignore-range+drop:100000", message="giving up"),
    dl("wrong-range-forever", rule="bad-start+drop:100000", message="giving up"),
    dl("wrong-total-forever", rule="bad-total+drop:100000", message="giving up"),
    dl("drop-every-time", rule="drop:100000", expect="ok"),  # each resume gets further
    # sizes
    dl("content-length-1e15", rule="huge-length", message=f"needs {HUGE} more bytes"),
    dl("endless-chunked-max-bytes", "--max-bytes", "400000", rule="chunked-endless",
       message="more than --max-bytes 400000"),
    dl("declared-over-max-bytes", "--max-bytes", "1000", message="more than --max-bytes 1000"),
    dl("disk-full", fsize_limit=150_000, message="disk full writing"),
    dl("disk-full-endless", rule="chunked-endless", checksum=(), fsize_limit=150_000,
       message="disk full writing"),
    dl("overlong-plain-body", rule="overlong", message="md5 mismatch"),
    # the file changed on the server between attempts: restarted, never spliced
    dl("etag-change", script=("drop:100000", "change"), want=V2, expect="ok"),
    dl("etag-change-if-range-ignored", script=("drop:100000", "change+ignore-if-range"),
       want=V2, expect="ok"),
    dl("change-without-validators", script=("drop:100000+no-validators",
                                            "change+no-validators"),
       want=V2, message="md5 mismatch"),  # nothing to tell: only the checksum can
    # redirects
    dl("redirect-to-file", rule="redirect:file:///etc/passwd", message="'file:///etc/passwd'"),
    dl("redirect-to-ftp", rule="redirect:ftp://127.0.0.1/cat.zip",
       message="only http(s) redirects"),
    dl("redirect-loop", rule="redirect:/redirect-loop/cat.zip", message="more than 5 redirects"),
    # storms and stalls
    dl("500-storm", rule="500", message="giving up"),
    dl("429-storm", rule="429", message="giving up"),
    dl("slow-loris", "--deadline", "1", rule="trickle", message="deadline of 1s passed"),
    dl("stall-forever", *STALL, rule="stall:0", message="giving up"),
    dl("stall-progressing", "--deadline", "1", *STALL, rule="stall:1000",
       message="deadline of 1s passed"),  # progress, too slowly: the deadline ends it
    dl("lock-held", "--lock-wait", "0.3", setup=hold_lock, check=holder_untouched,
       message="another download (pid 4242) holds"),
    # checksums
    dl("wrong-md5", rule="corrupt", message="md5 mismatch"),
    dl("wrong-sha256", checksum=("--sha256", "0" * 64), message="sha256 mismatch"),
    dl("md5-file-too-big", checksum=("--md5-url", f"{URL}/md5-file-too-big/cat.zip.md5"),
       files={"cat.zip.md5": b"0" * 70_000}, message="more than the 65536 expected"),
    dl("md5-file-endless", checksum=("--md5-url", f"{URL}/md5-file-endless/cat.zip.md5"),
       files={"cat.zip.md5": MD5.encode()}, rules={"cat.zip.md5": "chunked-endless"},
       message="larger than the 65536 bytes"),
    dl("existing-file-differs", setup=file_in_the_way, message="exists but its md5"),
    dl("md5-file-416", checksum=("--md5-url", f"{URL}/md5-file-416/cat.zip.md5"),
       files={"cat.zip.md5": MD5.encode()}, rules={"cat.zip.md5": "416"},
       message="HTTP 416"),
    dl("not-found", checksum=("--md5-url", f"{URL}/not-found/missing.md5"),
       message="HTTP 404"),
    # arguments and paths
    bad_arg("url-no-host", ("download", "http://", "--out", f"{D}/x"), "'http://'"),
    bad_arg("url-bad-port", ("download", "http://127.0.0.1:port/x", "--out", f"{D}/x"),
            "'http://127.0.0.1:port/x'"),
    bad_arg("url-space", ("download", "http://exa mple/x", "--out", f"{D}/x"),
            "'http://exa mple/x'"),
    bad_arg("url-ftp", ("download", "ftp://127.0.0.1/x", "--out", f"{D}/x"),
            "'ftp://127.0.0.1/x'"),
    bad_arg("url-relative", ("download", "cat.zip", "--out", f"{D}/x"), "'cat.zip'"),
    bad_arg("md5-url-bad", ("download", f"{URL}/x", "--out", f"{D}/x", "--md5-url", "x.md5"),
            "md5-url must be an http(s) URL"),
    bad_arg("out-is-directory", ("download", f"{URL}/x", "--out", D), "is a directory"),
    bad_arg("out-parent-is-file", ("download", f"{URL}/x", "--out", f"{D}/file/cat.zip"),
            "file/cat.zip", setup=lambda d: (d / "file").touch()),
    # root may write anywhere but /proc: no file can be created there
    bad_arg("out-not-writable", ("download", f"{URL}/x", "--out", "/proc/stylegan-cat.zip"),
            "cannot write /proc/stylegan-cat.zip.lock"),
    bad_arg("timeout-nan", ("download", f"{URL}/x", "--out", f"{D}/x", "--timeout", "nan"),
            "'nan'"),
    bad_arg("deadline-inf", ("download", f"{URL}/x", "--out", f"{D}/x", "--deadline", "inf"),
            "'inf'"),
]


@pytest.mark.parametrize("case", DOWNLOAD_CASES, ids=lambda c: c.id)
def test_download_faults(case: Case, tmp_path: Path) -> None:
    started = time.monotonic()
    check_case(case, tmp_path)
    assert time.monotonic() - started < 15, f"{case.id} is not bounded tightly enough"


# --- store pull from a hostile remote ----------------------------------------------------

def _published() -> tuple[Path, str]:
    """A small remote store, built once: cats:v1 with three files."""
    root = Path(tempfile.mkdtemp(prefix="remote-store-"))
    tree = root / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.bin").write_bytes(random.Random(5).randbytes(120_000))
    (tree / "sub" / "b.txt").write_bytes(b"bee")
    (tree / "c.bin").write_bytes(random.Random(6).randbytes(40_000))
    version, _ = Store(root / "store").snapshot(tree, "cats", ("pub",))
    return root / "store", version.id


REMOTE, VID = _published()
MANIFEST = json.loads((REMOTE / "manifests" / f"{VID}.json").read_text())
A_SHA = next(f["sha256"] for f in MANIFEST["files"] if f["path"] == "a.bin")
A_PATH = f"objects/sha256/{A_SHA[:2]}/{A_SHA[2:]}"
INDEX = "names/cats/index.json"
RECORD = "names/cats/versions/000001.json"
Edit = Callable[[dict[str, bytes]], None]  # changes the remote's files before serving


def canonical(manifest: dict[str, object]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def republish(files: dict[str, bytes], manifest: dict[str, object]) -> None:
    """Point cats:v1 at a rewritten manifest, consistently (index, record, id)."""
    body = canonical(manifest)
    new_id = hashlib.sha256(body).hexdigest()
    files[f"manifests/{new_id}.json"] = body
    record = json.loads(files[RECORD])
    record["id"] = new_id
    record["total_size"] = manifest["total_size"]
    files[RECORD] = json.dumps(record).encode()
    index = json.loads(files[INDEX])
    index["versions"][0]["id"] = new_id
    files[INDEX] = json.dumps(index).encode()


def escaping(files: dict[str, bytes]) -> None:
    manifest = json.loads(json.dumps(MANIFEST))
    manifest["files"][0]["path"] = "../escape"
    republish(files, manifest)


def huge_entry(files: dict[str, bytes]) -> None:
    manifest = json.loads(json.dumps(MANIFEST))
    entry = next(f for f in manifest["files"] if f["path"] == "a.bin")
    entry["size"] = HUGE
    manifest["total_size"] = sum(int(f["size"]) for f in manifest["files"])
    republish(files, manifest)


def setter(path: str, data: bytes) -> Edit:
    def edit(files: dict[str, bytes]) -> None:
        files[path] = data
    return edit


def record_field(key: str, value: object) -> Edit:
    def edit(files: dict[str, bytes]) -> None:
        record = json.loads(files[RECORD])
        record[key] = value
        files[RECORD] = json.dumps(record).encode()
    return edit


def local_store(d: Path) -> None:
    """The local store already holds a version, which every case must leave intact."""
    (d / "mine").mkdir()
    (d / "mine" / "kept.txt").write_bytes(b"kept")
    Store(d / "store").snapshot(d / "mine", "mine")


def pulled(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    assert json.loads(res.stdout.strip().splitlines()[-1])["id"] == VID
    assert not list((d / "store" / "tmp").iterdir())


def not_pulled(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    listing = subprocess.run([sys.executable, "-m", "stylegan_ops.cli", "store", "--store",
                              str(d / "store"), "list"], capture_output=True, text=True,
                             check=True)
    assert "cats" not in listing.stdout
    assert not list((d / "store" / "tmp").iterdir())
    assert not (d / "escape").exists()


def pl(cid: str, *flags: str, edit: Edit | None = None, paths: dict[str, tuple[str, ...]] |
       None = None, rules: dict[str, str] | None = None, expect: str = "usage",
       message: str | None = None, fsize_limit: int | None = None) -> Case:
    """One pull case: the remote is served under ``/<cid>/``, edited, then scripted."""
    def setup(d: Path) -> None:
        files = {p.relative_to(REMOTE).as_posix(): p.read_bytes()
                 for p in REMOTE.rglob("*") if p.is_file()}
        if edit is not None:
            edit(files)
        for rel, data in files.items():
            PLAN.files[f"/{cid}/{rel}"] = data
        for rel, script in (paths or {}).items():
            PLAN.paths[f"/{cid}/{rel}"] = deque(script)
        for rel, rule in (rules or {}).items():
            PLAN.rules[f"/{cid}/{rel}"] = rule
        local_store(d)

    argv = ("store", "pull", f"{URL}/{cid}", "cats:pub", "--retries", "2", "--backoff",
            "0.01", "--timeout", "0.5", *flags)
    return Case(f"pull-{cid}", argv, setup=setup, expect=expect, message=message,
                check=pulled if expect == "ok" else not_pulled, fsize_limit=fsize_limit,
                timeout=30.0)


PULL_CASES = [
    pl("ok", expect="ok"),
    pl("drop-once", paths={A_PATH: ("drop:5000",)}, expect="ok"),
    pl("errors-then-ok", paths={INDEX: ("500", "429")}, expect="ok"),
    pl("object-bigger", edit=setter(A_PATH, b"x" * 120_100),
       message="the server sends 120100 bytes, its manifest says 120000"),
    pl("object-endless", rules={A_PATH: "chunked-endless"},
       message="bigger than its manifest size 120000"),
    pl("object-1e15", rules={A_PATH: "huge-length"}, message=f"server sends {HUGE} bytes"),
    pl("object-wrong-digest", edit=setter(A_PATH, b"y" * 120_000),
       message="a.bin does not match its hash"),
    pl("manifest-escapes", edit=escaping, message="unsafe path in manifest: '../escape'"),
    pl("manifest-wrong-id", edit=setter(f"manifests/{VID}.json", canonical({"files": []})),
       message="does not match its id"),
    pl("manifest-size-1e15", edit=huge_entry, message="pulling cats:v1 needs"),
    pl("manifest-deep-nesting", edit=setter(f"manifests/{VID}.json", b"[" * 100_000),
       message="corrupt manifest"),
    pl("index-malformed", edit=setter(INDEX, b'{"versions": [{"num": 1}]}'),
       message="malformed remote index"),
    pl("index-not-json", edit=setter(INDEX, b"<html>"), message="not JSON"),
    pl("index-deep-nesting", edit=setter(INDEX, b"[" * 100_000), message="not JSON"),
    pl("index-1e15", rules={INDEX: "huge-length"}, message="more than the"),
    pl("index-bad-id", edit=setter(INDEX, b'{"versions": [{"number": 1, "id": "../x"}]}'),
       message="malformed remote index"),
    pl("record-not-object", edit=setter(RECORD, b"[1]"), message="not a JSON object"),
    pl("record-other-id", edit=record_field("id", "0" * 64),
       message="does not match its index"),
    pl("record-size-lies", edit=record_field("total_size", 7),
       message="does not match its manifest"),
    pl("index-416", rules={INDEX: "416"}, message="HTTP 416"),
    pl("500-storm", rules={INDEX: "500"}, message="giving up"),
    pl("429-storm", rules={A_PATH: "429"}, message="giving up"),
    pl("drop-forever", rules={A_PATH: "drop:5000"}, message="giving up"),
    pl("redirect-to-file", rules={INDEX: "redirect:file:///etc/passwd"},
       message="only http(s) redirects"),
    pl("redirect-loop", rules={INDEX: f"redirect:/redirect-loop/{INDEX}"},
       message="more than 5 redirects"),
    pl("slow-loris", "--deadline", "1", rules={A_PATH: "trickle"},
       message="deadline of 1s passed"),
    pl("stall", *STALL, rules={A_PATH: "stall:100"}, message="giving up"),
    pl("disk-full", fsize_limit=60_000, message="disk full writing"),
    Case("pull-bad-url", ("store", "pull", "ftp://127.0.0.1/x", "cats"), setup=local_store,
         message="remote store URL must be an http(s) URL"),
]


@pytest.mark.parametrize("case", PULL_CASES, ids=lambda c: c.id)
def test_pull_faults(case: Case, tmp_path: Path) -> None:
    started = time.monotonic()
    check_case(case, tmp_path)
    assert time.monotonic() - started < 15, f"{case.id} is not bounded tightly enough"


# --- concurrent writers --------------------------------------------------------------------

def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "stylegan_ops.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_part(part: Path, first: subprocess.Popen[str]) -> None:
    until = time.monotonic() + 10
    while not part.exists():  # created when the body starts: the first holds the lock
        assert first.poll() is None, "the first download ended before the second started"
        assert time.monotonic() < until
        time.sleep(0.01)


@pytest.mark.parametrize(("lock_wait", "second_rc"), [
    pytest.param("60", 0, id="second-waits-and-reuses"),
    pytest.param("0.2", 2, id="second-gives-up-naming-the-holder"),
])
def test_two_downloads_to_one_out(tmp_path: Path, lock_wait: str, second_rc: int) -> None:
    """An Airflow retry overlapping a still-running try: exactly one writer of the part,
    and every digest reported is the digest of the file promoted."""
    path = f"/concurrent-{second_rc}/cat.zip"
    PLAN.files[path] = BODY
    PLAN.rules[path] = "pace:20000:0.1"  # ~1.5 s: the second starts while it runs
    out = tmp_path / "cat.zip"
    argv = ("download", f"{URL}{path}", "--out", str(out), "--md5", MD5, *FAST)
    first = _start(*argv)
    _wait_for_part(tmp_path / "cat.zip.part", first)
    second = _start(*argv, "--lock-wait", lock_wait)
    results = [p.communicate(timeout=30) for p in (first, second)]
    assert first.returncode == 0, results[0][1]
    assert second.returncode == second_rc, results[1][1]
    assert out.read_bytes() == BODY
    first_json = json.loads(results[0][0].splitlines()[-1])
    assert first_json["md5"] == MD5 and not first_json["reused"]
    if second_rc == 0:
        second_json = json.loads(results[1][0].splitlines()[-1])
        assert second_json["md5"] == MD5 and second_json["reused"]
    else:
        assert "another download (pid " in results[1][1].splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.zip"]


def test_two_pulls_of_one_version_at_once(tmp_path: Path) -> None:
    """Both succeed with the same version; the store stays verifiable."""
    pl("concurrent", expect="ok").setup(tmp_path)  # type: ignore[misc]
    for rel in (A_PATH,):
        PLAN.rules[f"/concurrent/{rel}"] = "pace:20000:0.05"
    env = {**os.environ, "STYLEGAN_STORE": str(tmp_path / "store")}
    procs = [subprocess.Popen([sys.executable, "-m", "stylegan_ops.cli", "store", "pull",
                               f"{URL}/concurrent", "cats:pub"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=30) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ids = {json.loads(o.splitlines()[-1])["id"] for o, _ in outs}
    assert ids == {VID}
    check = subprocess.run([sys.executable, "-m", "stylegan_ops.cli", "store", "verify"],
                           env=env, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
