"""Every command that writes the store takes its lock: writers share it, gc and fsck hold it
alone, so gc never runs beside a snapshot, a pull, a tag or a checkout's state updates.

Each test holds the lock here and runs the command as a real process: it must wait until
the lock is released, then succeed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stylegan_ops.store.local import Store
from tests.store.test_store import make_tree

ADOPT = """
import sys
from pathlib import Path
from stylegan_ops.store.local import Store
src, dst = Store(Path(sys.argv[1])), Store(Path(sys.argv[2]))
v = src.resolve("cats")
m = src.manifest(v.id)
for e in m.entries:  # what pull does before adopt: objects in place, then the version
    target = dst.object_path(e.sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(src.object_path(e.sha256).read_bytes())
print(dst.adopt(v, m, {"pulled_from": "test"})[0].ref)
"""


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store")
    s.snapshot(make_tree(tmp_path / "src", {"a": b"a" * 100}), "cats", ("best",))
    make_tree(tmp_path / "src2", {"b": b"b" * 100})
    return s


def command(what: str, root: Path, tmp: Path) -> list[str]:
    cli = [sys.executable, "-m", "stylegan_ops.cli", "store", "--store", str(root)]
    return {
        "snapshot": [*cli, "snapshot", str(tmp / "src2"), "--name", "cats"],
        "tag": [*cli, "tag", "cats:v1", "other"],
        "untag": [*cli, "untag", "cats", "best"],
        "checkout": [*cli, "checkout", "cats", str(tmp / "co")],
        "gc": [*cli, "gc"],
        "fsck": [*cli, "fsck"],
        "adopt": [sys.executable, "-c", ADOPT, str(root), str(tmp / "other")],
    }[what]


def blocks_until_released(store: Store, exclusive: bool, argv: list[str],
                          root: Path) -> subprocess.CompletedProcess[str]:
    holder = Store(root)
    with holder.locked(exclusive=exclusive):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        time.sleep(1.0)  # ample for the command to start and reach the lock
        waiting = proc.poll() is None
    out, err = proc.communicate(timeout=60)
    assert waiting, f"{argv[-3:]} did not wait for the store lock: {err}"
    assert proc.returncode == 0, err
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.mark.parametrize("what", ["snapshot", "tag", "untag", "checkout", "gc", "fsck"])
def test_writers_wait_while_gc_holds_the_lock(store: Store, tmp_path: Path,
                                              what: str) -> None:
    blocks_until_released(store, True, command(what, store.root, tmp_path), store.root)


def test_adopt_used_by_pull_waits_while_gc_holds_the_lock(store: Store, tmp_path: Path) -> None:
    other = Store(tmp_path / "other")
    res = blocks_until_released(other, True, command("adopt", store.root, tmp_path),
                                other.root)
    assert res.stdout.strip() == "cats:v1"
    assert other.verify() == (1, [])


@pytest.mark.parametrize("what", ["gc", "fsck"])
def test_gc_and_fsck_wait_while_a_writer_holds_the_lock(store: Store, tmp_path: Path,
                                                        what: str) -> None:
    blocks_until_released(store, False, command(what, store.root, tmp_path), store.root)


def test_writers_share_the_lock(store: Store, tmp_path: Path) -> None:
    with Store(store.root).locked():  # another writer: snapshots and tags go ahead
        for what in ("snapshot", "tag"):
            res = subprocess.run(command(what, store.root, tmp_path), capture_output=True,
                                 text=True, timeout=30, check=False)
            assert res.returncode == 0, res.stderr


def test_a_killed_holder_releases_the_lock(store: Store, tmp_path: Path) -> None:
    env = {**os.environ, "STYLEGAN_STORE_FAILPOINT": "after-manifest"}
    killed = subprocess.run(command("snapshot", store.root, tmp_path), env=env,
                            capture_output=True, text=True, check=False)
    assert killed.returncode == -9
    res = subprocess.run(command("gc", store.root, tmp_path), capture_output=True, text=True,
                         timeout=30, check=False)
    assert res.returncode == 0, res.stderr
