"""The embedded sample LMDB looks like LSUN's and is a pure function of its seed."""

from __future__ import annotations

import io
import re
from pathlib import Path

import lmdb
from PIL import Image

from stylegan_ops.data import sample
from tests.conftest import cli


def test_sample_is_lsun_like(sample_lmdb: Path) -> None:
    env = lmdb.open(str(sample_lmdb), readonly=True, lock=False)
    sizes, formats, bad = [], set(), 0
    with env.begin() as txn:
        for key, value in txn.cursor():
            assert re.fullmatch(rb"[0-9a-f]{40}", key)
            try:
                img = Image.open(io.BytesIO(value))
                img.load()
            except Exception:  # noqa: BLE001
                bad += 1
                continue
            formats.add(img.format)
            sizes.append(img.size)
    env.close()
    assert formats == {"WEBP"} and bad == 6 and len(sizes) == 60
    assert all(256 <= s <= 512 for size in sizes for s in size)
    assert len({w / h for w, h in sizes}) > 30  # varied aspect ratios


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = sample.encode_image(5, 17)
    assert a == sample.encode_image(5, 17) and a != sample.encode_image(6, 17)


def test_existing_output_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    res = cli("make-sample-lmdb", "--out", tmp_path / "x", "--count", 2)
    assert res.exit_code == 2 and "already exists" in res.stderr
    assert cli("make-sample-lmdb", "--out", tmp_path / "y", "--count", 0).exit_code == 2


def test_two_samples_are_the_same_files(tmp_path: Path) -> None:
    """Equal samples must be one version in the store: no lock file (its reader table
    differs run to run), the same data.mdb."""
    for name in ("a", "b"):
        res = cli("make-sample-lmdb", "--out", tmp_path / name, "--count", 6)
        assert res.exit_code == 0, res.stderr
    files = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    assert set(files) == {"data.mdb"}
    assert files == {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
