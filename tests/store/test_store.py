"""The version store: versions and refs, checkout, verify, gc, pull, crashes and races."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from stylegan_ops.errors import StageError
from stylegan_ops.store.local import Store
from stylegan_ops.store.model import Lineage
from stylegan_ops.store.remote import pull, serve
from tests.conftest import cli


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "data", {"a.bin": b"a" * 1000, "sub/b.txt": b"bee",
                                         "sub/deep/c": b"c" * 5})


def objects(store: Store) -> list[Path]:
    return sorted((store.root / "objects").rglob("*/*/*"))


def test_snapshot_dedups_and_numbers(store: Store, tree: Path, tmp_path: Path) -> None:
    lineage = Lineage(dag_id="stylegan2_prepare", run_id="r1", task_id="commit", try_number=1,
                      git_commit="abc123", params={"resolution": 256}, inputs=("x@1234",))
    v1, created = store.snapshot(tree, "cats", ("demo",), lineage, {"fid": 3.5})
    assert created and v1.number == 1 and len(objects(store)) == 3
    again, created = store.snapshot(tree, "cats")
    assert not created and again == v1  # identical to latest: no new number
    (tree / "a.bin").write_bytes(b"changed")
    v2, _ = store.snapshot(tree, "cats")
    assert v2.number == 2 and v2.id != v1.id and len(objects(store)) == 4
    (tree / "a.bin").write_bytes(b"a" * 1000)
    v3, _ = store.snapshot(tree, "cats")
    assert v3.number == 3 and v3.id == v1.id and len(objects(store)) == 4
    assert store.resolve("cats:v1").lineage == lineage
    assert store.resolve("cats:demo").number == 1
    assert store.resolve("cats").number == store.resolve("cats:latest").number == 3
    assert store.resolve(f"cats@{v2.id[:8]}").number == 2


@pytest.mark.parametrize(("ref", "message"), [
    pytest.param("dogs", "unknown version name", id="unknown-name"),
    pytest.param("cats:v9", "unknown version", id="unknown-number"),
    pytest.param("cats:nope", "unknown tag", id="unknown-tag"),
    pytest.param("cats@ffffffff", "unknown version id", id="unknown-id"),
    pytest.param("Cats", "invalid version name", id="bad-name"),
])
def test_bad_refs_exit_2_naming_them(store: Store, tree: Path, ref: str, message: str) -> None:
    store.snapshot(tree, "cats")
    res = cli("store", "--store", store.root, "show", ref)
    assert res.exit_code == 2 and message in res.stderr and ref in res.stderr


def test_ambiguous_id_prefix_is_refused() -> None:
    from stylegan_ops.store.local import select
    from stylegan_ops.store.model import Ref, Version

    versions = [Version("n", 1, "abcd" + "0" * 60, ""), Version("n", 2, "abcd" + "1" * 60, "")]
    with pytest.raises(StageError, match="ambiguous version id prefix in ref 'n@abcd'"):
        select(Ref.parse("n@abcd"), "n@abcd", versions, {})
    assert select(Ref.parse("n@abcd1"), "n@abcd1", versions, {}).number == 2


def test_tags_move_and_latest_follows(store: Store, tree: Path) -> None:
    store.snapshot(tree, "cats", ("best",))
    (tree / "new").write_bytes(b"n")
    store.snapshot(tree, "cats")
    assert store.tag("cats:v2", "best").number == 2
    assert store.resolve("cats:best").number == 2
    store.untag("cats", "best")
    with pytest.raises(StageError):
        store.resolve("cats:best")
    for bad in ("latest", "v3", "a/b"):
        with pytest.raises(StageError, match="invalid tag"):
            store.tag("cats", bad)


def test_show_log_diff_list(store: Store, tree: Path) -> None:
    store.snapshot(tree, "cats")
    (tree / "a.bin").write_bytes(b"z")
    (tree / "sub/b.txt").unlink()
    (tree / "added").write_bytes(b"+")
    store.snapshot(tree, "cats")
    root = str(store.root)
    diff = json.loads(cli("store", "--store", root, "diff", "cats:v1", "cats:v2").stdout)
    assert diff == {"added": ["added"], "removed": ["sub/b.txt"], "changed": ["a.bin"]}
    show = json.loads(cli("store", "--store", root, "show", "cats:v1").stdout)
    assert [f["path"] for f in show["manifest"]["files"]] == ["a.bin", "sub/b.txt", "sub/deep/c"]
    log = json.loads(cli("store", "--store", root, "log", "cats").stdout)
    assert [v["number"] for v in log["log"]] == [2, 1]
    listing = json.loads(cli("store", "--store", root, "list").stdout)
    assert listing["names"] == [{"name": "cats", "versions": 2, "latest": 2}]


def test_checkout_is_read_only_hard_links_and_refuses_non_empty(store: Store, tree: Path,
                                                              tmp_path: Path) -> None:
    v, _ = store.snapshot(tree, "cats")
    out = tmp_path / "co"
    store.checkout("cats", out)
    assert (out / "sub/deep/c").read_bytes() == b"c" * 5
    assert not os.access(out / "a.bin", os.W_OK) or os.geteuid() == 0
    assert (out / "a.bin").stat().st_mode & 0o222 == 0
    assert (out / "a.bin").stat().st_ino == store.object_path(
        next(e.sha256 for e in store.manifest(v.id).entries if e.path == "a.bin")).stat().st_ino
    with pytest.raises(StageError, match="not an empty directory"):
        store.checkout("cats", out)
    (tree / "a.bin").write_bytes(b"changed")
    store.snapshot(tree, "cats")
    store.checkout("cats:latest", out, replace=True)  # a retried task re-checks-out in place
    assert (out / "a.bin").read_bytes() == b"changed"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".co")] == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_verify_finds_damage_and_checkout_refuses(store: Store, tree: Path, tmp_path: Path,
                                                  damage: str) -> None:
    v, _ = store.snapshot(tree, "cats")
    sha = next(e.sha256 for e in store.manifest(v.id).entries if e.path == "a.bin")
    obj = store.object_path(sha)
    obj.chmod(0o644)
    if damage == "flip":
        data = bytearray(obj.read_bytes())
        data[10] ^= 1
        obj.write_bytes(bytes(data))
    elif damage == "truncate":
        obj.write_bytes(obj.read_bytes()[:-1])
    else:
        obj.unlink()
    res = cli("store", "--store", store.root, "verify")
    assert res.exit_code == 2 and "a.bin" in res.stderr
    problems = json.loads(res.stdout.splitlines()[-1])["problems"]
    assert [p["path"] for p in problems] == ["a.bin"]
    with pytest.raises(StageError, match="damaged"):
        store.checkout("cats", tmp_path / "co")
    assert not (tmp_path / "co").exists()


def test_symlinks_escaping_the_tree_are_refused(store: Store, tree: Path,
                                                tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s")
    (tree / "inside").symlink_to(tree / "a.bin")
    v, _ = store.snapshot(tree, "ok")  # an internal link is stored as its content
    assert "inside" in [e.path for e in store.manifest(v.id).entries]
    (tree / "evil").symlink_to(tmp_path / "secret")
    with pytest.raises(StageError, match="escapes the tree"):
        store.snapshot(tree, "bad")


def test_gc_removes_only_unreferenced(store: Store, tree: Path, tmp_path: Path) -> None:
    store.snapshot(tree, "cats")
    orphan = store.object_path("0" * 64)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"orphan")
    (store.root / "tmp" / "leftover").write_bytes(b"x")
    dry = store.gc(dry_run=True)
    assert dry["removed"]["objects"] == 1 and orphan.exists()
    report = store.gc()
    assert report["removed"] == {"objects": 1, "bytes": 6, "manifests": 0, "tmp": 1,
                                 "leftovers": 0}
    assert not orphan.exists()
    assert store.verify() == (1, [])


SNAPSHOT = """
import sys
from pathlib import Path
from stylegan_ops.store.local import Store
v, _ = Store(Path(sys.argv[1])).snapshot(Path(sys.argv[2]), sys.argv[3])
print(v.number)
"""


def run_snapshot(store: Path, tree: Path, name: str,
                 failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if failpoint:
        env["STYLEGAN_STORE_FAILPOINT"] = failpoint
    return subprocess.run([sys.executable, "-c", SNAPSHOT, str(store), str(tree), name],
                          capture_output=True, text=True, env=env, check=False)


@pytest.mark.parametrize("point", ["after-object-tmp", "after-objects", "after-manifest",
                                   "before-version-link"])
def test_sigkill_at_any_point_leaves_no_visible_version(store: Store, tree: Path,
                                                         point: str) -> None:
    proc = run_snapshot(store.root, tree, "cats", point)
    assert proc.returncode == -9
    assert store.versions("cats") == []
    for obj in objects(store):  # whatever got stored is whole and correctly named
        import hashlib
        assert hashlib.sha256(obj.read_bytes()).hexdigest() == obj.parent.name + obj.name
    assert run_snapshot(store.root, tree, "cats").stdout.strip() == "1"
    assert store.verify("cats") == (1, [])
    assert store.gc()["removed"]["objects"] == 0


def test_concurrent_snapshots_get_distinct_numbers(store: Store, tmp_path: Path) -> None:
    trees = [make_tree(tmp_path / f"t{i}", {"f": os.urandom(2000), "shared": b"s" * 999})
             for i in range(6)]
    procs = [subprocess.Popen([sys.executable, "-c", SNAPSHOT, str(store.root), str(t), "cats"],
                              stdout=subprocess.PIPE, text=True) for t in trees]
    numbers = sorted(int(p.communicate()[0]) for p in procs)
    assert numbers == [1, 2, 3, 4, 5, 6]
    assert store.verify() == (6, [])


def test_gc_racing_snapshots_never_loses_an_object(store: Store, tmp_path: Path) -> None:
    shared = os.urandom(50000)
    trees = [make_tree(tmp_path / f"t{i}", {"shared": shared, "own": os.urandom(100)})
             for i in range(8)]
    store.snapshot(trees[0], "seed")
    # the shared object becomes unreferenced, so gc wants it while snapshots need it
    (store.root / "names" / "seed").rename(tmp_path / "gone")
    stop = threading.Event()

    def gc_loop() -> None:
        while not stop.is_set():
            Store(store.root).gc()

    thread = threading.Thread(target=gc_loop)
    thread.start()
    try:
        procs = [subprocess.Popen([sys.executable, "-c", SNAPSHOT, str(store.root), str(t),
                                   f"n{i}"]) for i, t in enumerate(trees[1:])]
        assert all(p.wait() == 0 for p in procs)
    finally:
        stop.set()
        thread.join()
    checked, problems = store.verify()
    assert checked == 7 and problems == []


def test_pull_from_a_served_store(store: Store, tree: Path, tmp_path: Path) -> None:
    remote = Store(tmp_path / "public")
    published, _ = remote.snapshot(tree, "lsun-cat-256", ("v1.0",))
    httpd = serve(remote, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        local, created = pull(store, url, "lsun-cat-256:v1.0")
        assert created and local.id == published.id and local.meta["pulled_from"] == url
        assert pull(store, url, "lsun-cat-256")[1] is False
        store.checkout("lsun-cat-256", tmp_path / "co")
        assert (tmp_path / "co/sub/b.txt").read_bytes() == b"bee"
        # a tampered object on the remote is refused, and nothing is written
        (tree / "a.bin").write_bytes(b"new content")
        v2, _ = remote.snapshot(tree, "lsun-cat-256")
        sha = next(e.sha256 for e in remote.manifest(v2.id).entries if e.path == "a.bin")
        remote.object_path(sha).chmod(0o644)
        remote.object_path(sha).write_bytes(b"evil")
        with pytest.raises(StageError, match="does not match its hash"):
            pull(store, url, "lsun-cat-256:v2")
        assert not store.object_path(sha).exists()
        # a manifest naming a path outside the checkout is refused
        evil = {"file_count": 1, "total_size": 1,
                "files": [{"path": "../escape", "size": 1, "sha256": sha}]}
        body = json.dumps(evil, sort_keys=True, separators=(",", ":")).encode()
        import hashlib
        evil_id = hashlib.sha256(body).hexdigest()
        (remote.root / "manifests" / f"{evil_id}.json").write_bytes(body)
        rec = json.loads((remote.root / "names/lsun-cat-256/versions/000002.json").read_text())
        rec["id"] = evil_id
        (remote.root / "names/lsun-cat-256/versions/000002.json").write_text(json.dumps(rec))
        index = json.loads((remote.root / "names/lsun-cat-256/index.json").read_text())
        index["versions"][1]["id"] = evil_id
        (remote.root / "names/lsun-cat-256/index.json").write_text(json.dumps(index))
        with pytest.raises(StageError, match="unsafe path"):
            pull(store, url, "lsun-cat-256:v2")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not (tmp_path / "escape").exists()


def test_cli_serve_and_pull_between_processes(tree: Path, tmp_path: Path) -> None:
    public = tmp_path / "public"
    res = cli("store", "--store", public, "snapshot", tree, "--name", "cats", "--tag", "pub")
    assert res.exit_code == 0, res.stderr
    published = json.loads(res.stdout.splitlines()[-1])
    assert (published["name"], published["number"]) == ("cats", 1)
    server = subprocess.Popen([sys.executable, "-m", "stylegan_ops.cli", "store", "--store",
                               str(public), "serve", "--port", "0"],
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()  # "serving PATH on http://127.0.0.1:PORT"
        url = line.split(" on ")[-1].strip()
        pulled = subprocess.run([sys.executable, "-m", "stylegan_ops.cli", "store", "--store",
                                 str(tmp_path / "mine"), "pull", url, "cats:pub"],
                                capture_output=True, text=True, check=False)
        assert pulled.returncode == 0, pulled.stderr
        assert json.loads(pulled.stdout.splitlines()[-1])["id"] == published["id"]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_read_commands_do_not_create_a_store(tmp_path: Path) -> None:
    res = cli("store", "--store", tmp_path / "typo", "list")
    assert res.exit_code == 2 and "no version store" in res.stderr
    assert not (tmp_path / "typo").exists()


def test_lineage_and_meta_files(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "lin.json").write_text(json.dumps({"dag_id": "d", "run_id": "r", "try_number": 2,
                                                   "inputs": ["lsun@abcd"]}))
    (tmp_path / "meta.json").write_text(json.dumps({"fid50k": 12.5}))
    root = tmp_path / "s"
    assert cli("store", "--store", root, "snapshot", tree, "--name", "m", "--lineage-json",
               tmp_path / "lin.json", "--meta-json", tmp_path / "meta.json").exit_code == 0
    show = json.loads(cli("store", "--store", root, "show", "m").stdout)
    assert show["lineage"]["try_number"] == 2 and show["lineage"]["inputs"] == ["lsun@abcd"]
    assert show["meta"] == {"fid50k": 12.5}
    (tmp_path / "bad.json").write_text(json.dumps({"dag": "typo"}))
    res = cli("store", "--store", root, "snapshot", tree, "--name", "m", "--lineage-json",
              tmp_path / "bad.json")
    assert res.exit_code == 2 and "unknown lineage fields: dag" in res.stderr
