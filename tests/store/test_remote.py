"""Remote stores: what ``serve`` publishes, and ``pull`` racing gc and itself."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from stylegan_ops.errors import StageError
from stylegan_ops.fetch import Budget
from stylegan_ops.store.local import Store
from stylegan_ops.store.remote import pull, serve
from tests.httpserver import LoopbackServer, Plan


@pytest.fixture
def remote(tmp_path: Path) -> Store:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.bin").write_bytes(random.Random(1).randbytes(50_000))
    (tree / "c.bin").write_bytes(random.Random(2).randbytes(300_000))
    published = Store(tmp_path / "public")
    published.snapshot(tree, "cats", ("pub",))
    return published


@pytest.fixture
def scripted(remote: Store) -> Iterator[LoopbackServer]:
    files = {"/" + p.relative_to(remote.root).as_posix(): p.read_bytes()
             for p in remote.root.rglob("*") if p.is_file()}
    with LoopbackServer(Plan(files=files)) as srv:
        yield srv


def _object_path(remote: Store, name: str) -> str:
    version = remote.resolve("cats")
    sha = next(e.sha256 for e in remote.manifest(version.id).entries if e.path == name)
    return f"/objects/sha256/{sha[:2]}/{sha[2:]}"


@pytest.mark.parametrize(("path", "published"), [
    pytest.param("names/cats/index.json", True, id="index"),
    pytest.param("names/cats/versions/000001.json", True, id="record"),
    pytest.param("lock", False, id="lock"),
    pytest.param("tmp/in-flight", False, id="tmp"),
    pytest.param("state/objstat/x.json", False, id="state"),
    pytest.param("names/../lock", False, id="dot-dot"),
])
def test_serve_publishes_only_the_published_layout(remote: Store, path: str,
                                                   published: bool) -> None:
    for rel in ("lock", "tmp/in-flight", "state/objstat/x.json"):
        (remote.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (remote.root / rel).write_bytes(b"private")
    httpd = serve(remote, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert (status == 200) == published, status


@pytest.mark.parametrize("paced", ["a.bin", "c.bin"], ids=["first-object-in-flight",
                                                           "first-object-landed"])
def test_gc_waits_for_a_pull(remote: Store, scripted: LoopbackServer, tmp_path: Path,
                             paced: str) -> None:
    """gc deletes what no version references; a pull's objects are unreferenced until
    adopt. The pull holds the writer lock from its first object to its version, so gc
    waits instead of deleting them (or the temp file being written)."""
    scripted.plan.rules[_object_path(remote, paced)] = "pace:20000:0.05"
    local = tmp_path / "local"
    env = {**os.environ, "STYLEGAN_STORE": str(local)}
    cmd = [sys.executable, "-m", "stylegan_ops.cli", "store"]
    puller = subprocess.Popen([*cmd, "pull", scripted.url, "cats:pub"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    until = time.monotonic() + 20
    while not (local / "tmp").is_dir() or not any((local / "tmp").iterdir()):
        assert puller.poll() is None, puller.communicate()
        assert time.monotonic() < until
        time.sleep(0.005)
    gc = subprocess.run([*cmd, "gc"], env=env, capture_output=True, text=True, check=False,
                        timeout=30)
    assert (local / "names/cats/versions/000001.json").exists(), "gc ran before the pull ended"
    out, err = puller.communicate()
    assert puller.returncode == 0, err
    assert gc.returncode == 0, gc.stderr
    assert json.loads(gc.stdout.splitlines()[-1])["removed"]["objects"] == 0
    verify = subprocess.run([*cmd, "verify"], env=env, capture_output=True, text=True,
                            check=False)
    assert verify.returncode == 0, verify.stderr
    assert Store(local).resolve("cats").id == json.loads(out.splitlines()[-1])["id"]


def test_pull_counts_only_new_bytes_as_progress(remote: Store, scripted: LoopbackServer,
                                                tmp_path: Path) -> None:
    """An object whose every transfer drops at the same byte gives up after retries+1."""
    path = _object_path(remote, "c.bin")
    scripted.plan.rules[path] = "drop:1000"
    with pytest.raises(StageError, match=r"giving up .* after 3 failed attempts"):
        pull(Store(tmp_path / "local"), scripted.url, "cats:pub",
             Budget(retries=2, timeout=1.0, backoff=0.01))
    assert sum(1 for p, _, _ in scripted.plan.requests if p == path) == 3
    assert not any((tmp_path / "local" / "tmp").iterdir())
