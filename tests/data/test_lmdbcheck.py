"""The LMDB structure check: no false alarms on what liblmdb writes, and every header byte
flip is either refused or harmless to a real cursor walk (run in a child: a SIGBUS there
fails the test instead of killing pytest)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from stylegan_ops.data.lmdbcheck import check_lmdb
from stylegan_ops.errors import StageError
from tests.data.formats import P_BRANCH, P_LEAF, P_META, lmdb_pages


def write_lmdb(path: Path, transactions: int, per_txn: int, seed: int = 0,
               sizes: tuple[int, ...] = (0, 10, 300, 3000, 9000)) -> int:
    """Keys of random length, inline and overflow values, deletions between transactions:
    a tree with free pages, several levels and both meta pages in use."""
    rng = random.Random(seed)
    env = lmdb.open(str(path), map_size=1 << 30)
    for _ in range(transactions):
        with env.begin(write=True) as txn:
            for _ in range(per_txn):
                txn.put(rng.randbytes(rng.randint(1, 60)),
                        rng.randbytes(rng.choice(sizes)))
        with env.begin(write=True) as txn:
            cursor = txn.cursor()
            cursor.first()
            for _ in range(per_txn // 10):
                cursor.delete()
    entries = int(env.stat()["entries"])
    env.close()
    return entries


@pytest.mark.parametrize(("transactions", "per_txn"), [
    pytest.param(1, 1, id="one-record"),
    pytest.param(1, 200, id="one-leaf-level"),
    pytest.param(4, 3000, id="three-levels-with-free-pages"),
])
def test_accepts_what_liblmdb_writes(tmp_path: Path, transactions: int, per_txn: int) -> None:
    entries = write_lmdb(tmp_path / "db", transactions, per_txn)
    assert check_lmdb(tmp_path / "db/data.mdb") == entries


def test_empty_database_has_no_entries(tmp_path: Path) -> None:
    lmdb.open(str(tmp_path / "db"), map_size=1 << 20).close()
    assert check_lmdb(tmp_path / "db/data.mdb") == 0


WALK = """
import lmdb, sys
for path in sys.argv[1:]:
    try:
        env = lmdb.open(path, readonly=True, lock=False)
        with env.begin() as txn:
            n = sum(1 for _ in txn.cursor())
        assert n == env.stat()["entries"], (path, n)
        env.close()
    except lmdb.Error:
        pass  # liblmdb noticed the damage itself: a StageError in LmdbSource
"""


def test_every_header_byte_flip_is_refused_or_harmless(tmp_path: Path) -> None:
    write_lmdb(tmp_path / "db", 2, 120, seed=1, sizes=(10, 300, 3000))
    data = tmp_path / "db/data.mdb"
    raw = data.read_bytes()
    psize = 4096
    pages = lmdb_pages(data)
    assert pages[P_BRANCH] and len(pages[P_LEAF]) > 1  # the walk crosses pages
    spots = [p * psize + o for kind in (P_META, P_BRANCH, P_LEAF) for p in pages[kind]
             for o in range(0, 48)]
    accepted = []
    for i, at in enumerate(spots):
        flipped = bytearray(raw)
        flipped[at] ^= 0xFF
        variant = tmp_path / f"v{i}"
        variant.mkdir()
        (variant / "data.mdb").write_bytes(flipped)
        try:
            check_lmdb(variant / "data.mdb")
        except StageError:
            (variant / "data.mdb").unlink()
            variant.rmdir()
            continue
        accepted.append(str(variant))
    assert len(accepted) < len(spots)  # most header bytes matter
    res = subprocess.run([sys.executable, "-c", WALK, *accepted], capture_output=True,
                         text=True, check=False, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
