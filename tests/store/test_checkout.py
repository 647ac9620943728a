"""Checkout: what --replace may replace, and what a write through a checkout can do.

Reflink tests need a filesystem that clones (XFS with reflink, btrfs): the temp directory if
it is one, else ``$STYLEGAN_TEST_REFLINK_DIR`` (e.g. a loop-mounted ``mkfs.xfs -m reflink=1``
image); without either they are skipped, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stylegan_ops.errors import StageError
from stylegan_ops.store import checkout as checkout_module
from stylegan_ops.store.checkout import reflink
from stylegan_ops.store.local import Store
from tests.store.test_store import make_tree

FILES = {"a.bin": b"a" * 4000, "sub/b.txt": b"bee", "sub/deep/c": b"c" * 5}


def obj(store: Store, ref: str, path: str) -> Path:
    v = store.resolve(ref)
    return store.object_path(next(e.sha256 for e in store.manifest(v.id).entries
                                  if e.path == path))


def write_through(path: Path, restore_mtime: bool, append: bool = False) -> None:
    """What root can do to a read-only file: chmod it and write, maybe put mtime back."""
    st = path.stat()
    path.chmod(0o644)
    with path.open("ab" if append else "r+b") as f:
        f.write(b"x\n" if append else b"A")
    if restore_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def cli(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STYLEGAN_STORE"}
    return subprocess.run([sys.executable, "-m", "stylegan_ops.cli", *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, check=False)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store")
    s.snapshot(make_tree(tmp_path / "src", FILES), "cats")
    return s


# --- 1. --replace -----------------------------------------------------------------------

def test_replace_never_deletes_a_directory_holding_the_default_store(tmp_path: Path) -> None:
    """The reported data loss: the default store is ./.stylegan-store, and DIR was '.'."""
    make_tree(tmp_path / "data", FILES)
    assert cli(tmp_path, "store", "snapshot", "data", "--name", "cats").returncode == 0
    for target in (".", str(tmp_path)):
        res = cli(tmp_path, "store", "checkout", "cats", target, "--replace")
        assert res.returncode == 2, res.stderr
        assert res.stderr.count("stylegan-ops: error:") == 1
        assert "holds the version store" in res.stderr and target in res.stderr
    assert cli(tmp_path, "store", "verify").returncode == 0
    assert (tmp_path / "data/a.bin").is_file()


@pytest.mark.parametrize(("extra", "message"), [
    pytest.param({"notes.txt": b"mine"}, "first: notes.txt", id="extra-file"),
    pytest.param({"sub/deep/new": b"mine"}, "first: sub/deep/new", id="extra-nested"),
    pytest.param({"store/objects/x": b"x"}, "first: store/objects/x", id="a-store-inside"),
])
def test_replace_refuses_a_checkout_holding_other_files(store: Store, tmp_path: Path,
                                                       extra: dict[str, bytes],
                                                       message: str) -> None:
    store.checkout("cats", tmp_path / "co")
    make_tree(tmp_path / "co", extra)
    with pytest.raises(StageError, match=f"refusing to replace .*co.*{message}"):
        store.checkout("cats", tmp_path / "co", replace=True)
    for rel in extra:
        assert (tmp_path / "co" / rel).is_file()


@pytest.mark.parametrize("marker", [
    pytest.param(None, id="no-marker"), pytest.param(b"{", id="truncated"),
    pytest.param(b'{"files": ["a.bin"]}', id="not-ours"),
    pytest.param(b'{"stylegan_checkout": 1, "files": "a.bin"}', id="files-not-a-list"),
])
def test_replace_refuses_a_directory_that_is_not_a_checkout(store: Store, tmp_path: Path,
                                                           marker: bytes | None) -> None:
    make_tree(tmp_path / "mine", {"a.bin": b"my own"})
    if marker is not None:
        (tmp_path / "mine/.stylegan-checkout.json").write_bytes(marker)
    with pytest.raises(StageError, match=r"refusing to replace .*mine"):
        store.checkout("cats", tmp_path / "mine", replace=True)
    assert (tmp_path / "mine/a.bin").read_bytes() == b"my own"


def test_replace_swaps_a_previous_checkout_and_leaves_nothing_beside_it(
        store: Store, tmp_path: Path) -> None:
    store.checkout("cats", tmp_path / "co")
    (tmp_path / "src/a.bin").write_bytes(b"changed")
    store.snapshot(tmp_path / "src", "cats")
    store.checkout("cats:v2", tmp_path / "co", replace=True)
    assert (tmp_path / "co/a.bin").read_bytes() == b"changed"
    marker = json.loads((tmp_path / "co/.stylegan-checkout.json").read_text())
    assert marker["ref"] == "cats:v2" and sorted(marker["files"]) == sorted(FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["co", "src", "store"]


def test_replace_without_atomic_exchange_falls_back(store: Store, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    store.checkout("cats", tmp_path / "co")
    monkeypatch.setattr(checkout_module, "exchange", lambda a, b: False)
    store.checkout("cats", tmp_path / "co", replace=True)
    assert (tmp_path / "co/sub/deep/c").read_bytes() == b"c" * 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["co", "src", "store"]


def test_snapshot_of_a_checkout_is_the_same_version(store: Store, tmp_path: Path) -> None:
    store.checkout("cats", tmp_path / "co")
    again, created = store.snapshot(tmp_path / "co", "cats")
    assert not created and again.number == 1  # the marker is not content


def test_a_version_holding_a_file_named_like_the_marker_is_refused(tmp_path: Path) -> None:
    s = Store(tmp_path / "store")
    (tmp_path / "src").mkdir()
    (tmp_path / "src/sub").mkdir()
    (tmp_path / "src/sub/.stylegan-checkout.json").write_text("{}")  # not at the top: fine
    s.snapshot(tmp_path / "src", "ok")
    s.checkout("ok", tmp_path / "co")
    assert (tmp_path / "co/sub/.stylegan-checkout.json").read_text() == "{}"


def test_two_checkouts_into_one_directory_at_once_both_succeed(store: Store,
                                                              tmp_path: Path) -> None:
    """Two tries of one Airflow task: they take turns, the directory is always whole."""
    store.checkout("cats", tmp_path / "co")
    code = ("import sys; from pathlib import Path; from stylegan_ops.store.local import Store;"
            "[Store(Path(sys.argv[1])).checkout('cats', Path(sys.argv[2]), replace=True) "
            "for _ in range(5)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(store.root), str(tmp_path / "co")],
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read() if p.stderr else ""
    assert (tmp_path / "co/a.bin").read_bytes() == FILES["a.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["co", "src", "store"]


# --- 2. writes through a checkout --------------------------------------------------------

@pytest.mark.parametrize(("restore_mtime", "append"), [
    pytest.param(False, True, id="append"),
    pytest.param(False, False, id="overwrite-same-size"),
    pytest.param(True, False, id="overwrite-mtime-restored"),  # only ctime tells
])
def test_a_write_through_a_linked_checkout_is_found_on_next_use(
        store: Store, tmp_path: Path, restore_mtime: bool, append: bool) -> None:
    store.checkout("cats", tmp_path / "co", mode="link")
    assert (tmp_path / "co/a.bin").stat().st_ino == obj(store, "cats", "a.bin").stat().st_ino
    write_through(tmp_path / "co/a.bin", restore_mtime, append)
    with pytest.raises(StageError, match=r"cats:v1 is damaged .*a.bin.*verify --repair"):
        store.checkout("cats", tmp_path / "co2")
    assert not (tmp_path / "co2").exists()
    # flagged: every reader now says so without rehashing, and keeps saying it
    res = cli(tmp_path, "store", "--store", store.root, "show", "cats")
    assert res.returncode == 0 and "cats:v1 is damaged" in res.stderr
    assert json.loads(res.stdout)["damaged"][0]["path"] == "a.bin"
    listing = json.loads(cli(tmp_path, "store", "--store", store.root, "list", "cats").stdout)
    assert listing["versions"][0]["damaged"] is True
    with pytest.raises(StageError, match="damaged"):
        Store(store.root).checkout("cats", tmp_path / "co3")
    # repair: quarantine the altered object, re-snapshot the source, whole again
    res = cli(tmp_path, "store", "--store", store.root, "verify", "--repair")
    assert res.returncode == 2 and "(missing)" in res.stderr
    store.snapshot(tmp_path / "src", "cats")
    assert store.verify() == (1, [])
    store.checkout("cats", tmp_path / "co4")
    assert (tmp_path / "co4/a.bin").read_bytes() == FILES["a.bin"]
    assert (store.root / "quarantine").is_dir()


def test_bit_rot_under_an_unchanged_stat_is_caught_by_verify_only(store: Store,
                                                                 tmp_path: Path) -> None:
    """The documented limit: a change that leaves inode, size, mtime and ctime as the store
    recorded them (bit rot below the filesystem) passes a plain checkout; --verify rehashes."""
    path = obj(store, "cats", "a.bin")
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[7] ^= 1
    path.write_bytes(bytes(data))
    path.chmod(0o444)
    sha = path.parent.name + path.name
    store._remember_good({sha: checkout_module.stat_key(os.lstat(path))})  # as if unseen
    store.checkout("cats", tmp_path / "co")  # trusted: the stat is as recorded
    with pytest.raises(StageError, match="damaged"):
        store.checkout("cats", tmp_path / "co2", verify=True)
    assert store.verify()[1][0].problem == "hash"


def test_copy_mode_makes_independent_files(store: Store, tmp_path: Path) -> None:
    store.checkout("cats", tmp_path / "co", mode="copy")
    assert (tmp_path / "co/a.bin").stat().st_ino != obj(store, "cats", "a.bin").stat().st_ino
    write_through(tmp_path / "co/a.bin", restore_mtime=True)
    assert store.verify() == (1, [])
    assert json.loads((tmp_path / "co/.stylegan-checkout.json").read_text())["modes"] == {
        "copy": 3}


def test_auto_falls_back_to_links_where_the_filesystem_cannot_clone(store: Store,
                                                                   tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.write_bytes(b"x")
    try:
        reflink(probe, str(tmp_path / "probe2"))
        pytest.skip("this temp directory clones files; the fallback is not reachable here")
    except OSError:
        pass
    store.checkout("cats", tmp_path / "co")
    marker = json.loads((tmp_path / "co/.stylegan-checkout.json").read_text())
    assert marker["modes"] == {"link": 3}
    with pytest.raises(StageError, match=r"--mode reflink: the filesystem of .* cannot clone"):
        store.checkout("cats", tmp_path / "co2", mode="reflink")
    assert not (tmp_path / "co2").exists()


def test_linking_and_replacing_keep_objects_known_good(store: Store, tmp_path: Path) -> None:
    """Making and swapping out hard links changes the objects' ctime; the store records the
    new stat itself, so the next use does not rehash a 400 GB dataset."""
    store.checkout("cats", tmp_path / "co", mode="link")
    shas = [e.sha256 for e in store.manifest(store.resolve("cats").id).entries]
    sizes = {e.sha256: e.size for e in store.manifest(store.resolve("cats").id).entries}
    assert all(store.object_condition(s, sizes[s]) is None for s in shas)
    store.checkout("cats", tmp_path / "co", mode="link", replace=True)
    assert all(store.object_condition(s, sizes[s]) is None for s in shas)
    shutil.rmtree(tmp_path / "co")  # by hand: the store cannot know, so it rehashes next time
    assert {store.object_condition(s, sizes[s]) for s in shas} == {"unverified"}
    store.checkout("cats", tmp_path / "co")
    assert all(store.object_condition(s, sizes[s]) is None for s in shas)


def reflink_dir(tmp_path: Path) -> Path:
    for candidate in (tmp_path, os.environ.get("STYLEGAN_TEST_REFLINK_DIR")):
        if not candidate:
            continue
        base = Path(candidate) / f"reflink-{os.getpid()}-{tmp_path.name}"
        base.mkdir(parents=True, exist_ok=True)
        (base / "p").write_bytes(b"x")
        try:
            reflink(base / "p", str(base / "q"))
            return base
        except OSError:
            shutil.rmtree(base)
    pytest.skip("no filesystem that clones files (set STYLEGAN_TEST_REFLINK_DIR to one)")


def test_reflink_checkouts_cannot_reach_the_store(tmp_path: Path) -> None:
    base = reflink_dir(tmp_path)
    try:
        s = Store(base / "store")
        s.snapshot(make_tree(base / "src", FILES), "cats")
        s.checkout("cats", base / "co")
        marker = json.loads((base / "co/.stylegan-checkout.json").read_text())
        assert marker["modes"] == {"reflink": 3}
        assert (base / "co/a.bin").stat().st_ino != obj(s, "cats", "a.bin").stat().st_ino
        write_through(base / "co/a.bin", restore_mtime=True, append=True)
        assert s.verify() == (1, [])
        s.checkout("cats", base / "co2", mode="reflink")
        assert (base / "co2/a.bin").read_bytes() == FILES["a.bin"]
        assert s.object_condition(obj(s, "cats", "a.bin").parent.name +
                                  obj(s, "cats", "a.bin").name, 4000) is None
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_checkout_creates_missing_parents(store: Store, tmp_path: Path) -> None:
    store.checkout("cats", tmp_path / "run/1/dataset")  # as the train DAG does
    assert (tmp_path / "run/1/dataset/a.bin").is_file()
