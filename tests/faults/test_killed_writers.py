"""SIGKILL in the middle of the data writers (unzip, prepare): nothing half-written appears
under the output's name, and running the same command again gives the same bytes as a run
that was never interrupted. (The store's writers are killed at every failpoint in
test_store_faults.py, downloads mid-body in tests/data/test_download.py.)"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.faults.harness import run


def _digests(root: Path) -> dict[str, str]:
    """Every output file's sha256; records that name the run's own directory (the source
    path in dataset.json, the unzip marker) are read with that directory taken out."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != ".unzip.json":  # its own stat record of the tree
            data = p.read_bytes()
            if p.suffix == ".json":
                data = data.replace(str(root.parent).encode(), b"<run>")
            out[p.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


def _zip(d: Path) -> list[str]:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(d / "cat.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(1500):
            zf.writestr(f"cat/{i:05d}.bin", rng.bytes(16 << 10))
    return ["unzip", "cat.zip", "--out", "lsun"]


def _images(d: Path) -> list[str]:
    rng = np.random.default_rng(1)
    (d / "imgs").mkdir()
    for i in range(400):
        Image.fromarray(rng.integers(0, 255, (96, 80, 3), np.uint8)).save(d / f"imgs/{i:04d}.png")
    return ["prepare", "images", "imgs", "--out", "data", "--resolution", "32", "--workers", "1"]


def _kill_once_writing(argv: list[str], d: Path, out: str) -> None:
    """Start the command, SIGKILL it as soon as its temporary output exists."""
    import os

    env = {**os.environ, "STYLEGAN_STORE": str(d / "store"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "stylegan_ops.cli", *argv], cwd=d, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith(f".{out}.tmp-") for p in d.iterdir()):
            time.sleep(0.05)  # let it write a little
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the command finished before it could be killed"
    proc.kill()
    assert proc.wait() == -9


@pytest.mark.parametrize(("make", "out"), [pytest.param(_zip, "lsun", id="unzip"),
                                           pytest.param(_images, "data", id="prepare")])
def test_a_killed_writer_leaves_nothing_visible_and_a_rerun_is_whole(
        tmp_path: Path, make: object, out: str) -> None:
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for d in (killed, clean):
        d.mkdir()
        argv = make(d)  # type: ignore[operator]
    _kill_once_writing(argv, killed, out)
    res = run(argv, clean)
    assert res.returncode == 0, res.stderr
    if (killed / out).exists():  # killed after its rename: then it must be whole already
        assert _digests(killed / out) == _digests(clean / out)
    res = run(argv, killed)
    assert res.returncode == 0, res.stderr
    assert _digests(killed / out) == _digests(clean / out)
