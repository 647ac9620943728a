"""Damaged and half-written records: readers skip and report them, gc never collects what
they might reference, fsck quarantines them, numbers are never given twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stylegan_ops.errors import StageError
from stylegan_ops.store.local import Store
from tests.store.test_store import make_tree


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store")
    s.snapshot(make_tree(tmp_path / "s1", {"a": b"one"}), "cats", ("best",))
    s.snapshot(make_tree(tmp_path / "s2", {"a": b"one", "b": b"only v2"}), "cats")
    return s


V2 = "names/cats/versions/000002.json"


def test_a_damaged_record_is_skipped_and_reported_not_fatal(store: Store) -> None:
    (store.root / V2).write_text('{"name": "ca')
    reader = Store(store.root, create=False)
    assert [v.number for v in reader.versions("cats")] == [1]
    assert reader.names() == ["cats"]
    assert "not valid JSON" in reader.record_problems[V2]
    with pytest.raises(StageError, match="unknown version 'cats:v2' .*damaged records under "
                                         "names/cats, first: " + V2):
        reader.resolve("cats:v2")
    checked, problems = reader.verify()
    assert checked == 1 and [p.path for p in problems] == [V2]


def test_gc_collects_nothing_a_damaged_record_might_reference(store: Store) -> None:
    only_v2 = store.object_path(next(e.sha256 for e in store.manifest(
        store.resolve("cats:v2").id).entries if e.path == "b"))
    (store.root / V2).write_text("{")
    report = store.gc()
    assert report["collected"] is False and V2 in report["not_collected_because"][0]
    assert only_v2.is_file()
    # fsck moves the record aside; its id still keeps manifest and objects alive
    fsck = store.fsck()
    assert [q["path"] for q in fsck["quarantined"]] == [V2]
    assert (store.root / "quarantine" / V2).read_text() == "{"
    report = store.gc()  # the record names no id: any unreferenced manifest may be its
    assert report["collected"] is False and "names no version id" in str(report)
    assert only_v2.is_file()


def test_gc_keeps_objects_of_a_quarantined_record_until_quarantine_is_emptied(
        store: Store) -> None:
    vid = store.resolve("cats:v2").id
    record = (store.root / V2).read_text()
    (store.root / V2).write_text(record[:-40])  # cut after the id: still names it
    store.fsck()
    store.gc()
    assert (store.root / "manifests" / f"{vid}.json").is_file()
    # a hand repair: put the record back, and the version is whole
    (store.root / V2).write_text(record)
    assert store.verify() == (2, [])
    (store.root / V2).unlink()
    import shutil
    shutil.rmtree(store.root / "quarantine")
    assert store.gc()["removed"]["manifests"] == 1


def test_a_number_is_never_given_twice(store: Store, tmp_path: Path) -> None:
    (store.root / V2).write_text("garbage")
    v, _ = store.snapshot(make_tree(tmp_path / "s3", {"c": b"three"}), "cats")
    assert v.number == 3  # 2 is taken, if unreadable
    store.fsck()
    v, _ = store.snapshot(make_tree(tmp_path / "s4", {"d": b"four"}), "cats")
    assert v.number == 4  # and stays taken once quarantined


def test_a_killed_snapshot_leaves_an_empty_versions_dir_that_gc_removes(store: Store) -> None:
    (store.root / "names/ghost/versions").mkdir(parents=True)
    (store.root / "names/ghost/.lock").touch()
    assert Store(store.root, create=False).names() == ["cats"]
    assert store.leftovers() == ["names/ghost"]
    assert store.gc()["removed"]["leftovers"] == 1
    assert not (store.root / "names/ghost").exists()


def test_fsck_rebuilds_indexes_and_drops_broken_caches(store: Store, tmp_path: Path) -> None:
    (store.root / "names/cats/index.json").write_text("nope")
    shard = next((store.root / "state/stat").glob("*.json"))
    shard.write_text("[")
    (store.root / "state/objstat").mkdir()  # the per-manifest records of older versions
    report = store.fsck()
    index = json.loads((store.root / "names/cats/index.json").read_text())
    assert [v["number"] for v in index["versions"]] == [1, 2] and index["tags"] == {"best": 1}
    assert store.rel(shard) in report["removed"] and "state/objstat" in report["removed"]
    store.checkout("cats", tmp_path / "co")  # the cache rebuilds itself on use


def test_fsck_dry_run_changes_nothing(store: Store) -> None:
    (store.root / V2).write_text("{")
    report = store.fsck(dry_run=True)
    assert [q["path"] for q in report["quarantined"]] == [V2]
    assert (store.root / V2).read_text() == "{" and not (store.root / "quarantine").exists()


def test_a_read_only_store_is_read_without_writing(store: Store, tmp_path: Path) -> None:
    """Readers of a published (read-only) store: no lock, no cache writes, same answers."""
    reader = Store(store.root, create=False, readonly=True)
    before = sorted(p.relative_to(store.root) for p in store.root.rglob("*"))
    reader.checkout("cats", tmp_path / "co")
    assert reader.verify() == (2, [])
    assert sorted(p.relative_to(store.root) for p in store.root.rglob("*")) == before


def test_gc_never_takes_a_name_it_cannot_read_for_a_leftover(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import shutil

    import stylegan_ops.store.maintenance as maintenance

    vdir = store.root / "names/cats/versions"
    real = os.listdir

    def listdir(path: object) -> list[str]:
        if str(path) == str(vdir):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)  # type: ignore[arg-type]

    with monkeypatch.context() as mp:
        mp.setattr(maintenance.os, "listdir", listdir)
        assert "names/cats" not in store.leftovers()
    shutil.move(vdir, store.root.parent / "moved")
    vdir.write_text("x")  # a file where the versions directory should be
    assert "names/cats" not in store.leftovers()
    store.gc()
    assert vdir.read_text() == "x"
