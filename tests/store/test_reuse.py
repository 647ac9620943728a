"""Reuse by lineage without Airflow: cache keys, finding an earlier result, use records and
the registry of training runs that an interrupted run leaves behind."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from stylegan_ops.errors import StageError
from stylegan_ops.store.local import Store
from stylegan_ops.store.model import Lineage, Use, Version
from stylegan_ops.store.reuse import (
    CacheKey,
    closest,
    differences,
    find,
    finished_networks,
    left_snapshots,
    local_code,
    register_training,
    relocate,
)
from tests.store.test_store import make_tree

CODE = "stylegan-ops 0.1.0 src " + "c" * 64
BASE = CacheKey("train", ("--total-kimg", "0.2", "--seed", "1", "<run>/dataset"),
                ("ds@" + "a" * 64, "pkl@" + "b" * 64), CODE)
OTHER_ID = "d" * 64


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def commit(store: Store, tmp_path: Path, name: str, content: bytes, key: CacheKey | None = None,
           run_id: str = "r1", meta: dict[str, Any] | None = None,
           continue_flag: str | None = None) -> Version:
    """A version of ``name`` holding one file, committed as a stage task with ``key`` would."""
    src = make_tree(tmp_path / f"src-{name}-{content.hex()[:16]}-{run_id}", {"f": content})
    lineage = Lineage(dag_id="d", run_id=run_id, task_id="commit", try_number=1,
                      cache=key.record(continue_flag) if key else None)
    version, _ = store.snapshot(src, name, (), lineage, meta)
    return version


def use_of(version: Version, reason: str = "cache", key: str | None = None,
           run_id: str = "r2") -> Use:
    return Use(version.name, version.number, version.id, "2026-01-01T00:00:00Z", reason,
               "d", run_id, "commit", 1, key, version.lineage.dag_id, version.lineage.run_id)


# --- the key ------------------------------------------------------------------------------

def test_key_is_stable_and_pinned() -> None:
    again = CacheKey("train", tuple(BASE.args), tuple(reversed(BASE.inputs)), BASE.code)
    assert again.key == BASE.key  # inputs are a set: their order is how they were listed
    assert len(BASE.key) == 64 and int(BASE.key, 16) >= 0
    # pinned: a change to what a key hashes makes every store's results unreusable, so it
    # must come with a new FORMAT, on purpose
    assert BASE.key == "172cb6a1f33d51c8f44287351bdf4fc43c339c42f71a29a2649fe7b69af65beb"


@pytest.mark.parametrize("changed", [
    pytest.param(CacheKey("evaluate", BASE.args, BASE.inputs, BASE.code), id="stage"),
    pytest.param(CacheKey("train", ("--total-kimg", "0.4", *BASE.args[2:]), BASE.inputs,
                          BASE.code), id="an-arg"),
    pytest.param(CacheKey("train", ("--seed", "1", "--total-kimg", "0.2", BASE.args[4]),
                          BASE.inputs, BASE.code), id="arg-order"),
    pytest.param(CacheKey("train", BASE.args, ("ds@" + OTHER_ID, BASE.inputs[1]), BASE.code),
                 id="an-input"),
    pytest.param(CacheKey("train", BASE.args, BASE.inputs[:1], BASE.code), id="input-dropped"),
    pytest.param(CacheKey("train", BASE.args, BASE.inputs, CODE + "x"), id="code"),
    pytest.param(CacheKey("train", BASE.args, BASE.inputs, None), id="code-none"),
])
def test_every_part_changes_the_key(changed: CacheKey) -> None:
    assert changed.key != BASE.key
    assert differences(BASE, changed)  # and it can say what changed


def test_without_drops_one_flag_and_its_value() -> None:
    shorter = BASE.without("--total-kimg")
    assert shorter.args == ("--seed", "1", "<run>/dataset")
    assert (shorter.stage, shorter.inputs, shorter.code) == (BASE.stage, BASE.inputs, BASE.code)
    longer = CacheKey("train", ("--total-kimg", "0.4", *BASE.args[2:]), BASE.inputs, BASE.code)
    assert longer.without("--total-kimg").key == shorter.key != BASE.key
    assert BASE.without("--not-there") == BASE
    record = BASE.record("--total-kimg")
    assert record["key"] == BASE.key and record["continue_key"] == shorter.key
    assert record["parts"]["args"] == list(BASE.args)
    assert BASE.record()["continue_key"] is None
    assert CacheKey.from_parts(record["parts"]) == CacheKey(
        BASE.stage, BASE.args, tuple(sorted(BASE.inputs)), BASE.code)


def test_local_code_names_the_version_and_the_source_digest() -> None:
    from stylegan_ops import __version__

    code = local_code()
    assert code.startswith(f"stylegan-ops {__version__} src ")
    assert len(code.rsplit(" ", 1)[1]) == 64 and code == local_code()


@pytest.mark.parametrize(("value", "moved"), [
    pytest.param("/ws/r1/gen", "/ws/r2/gen-2", id="the-dir"),
    pytest.param("/ws/r1/gen/sub/a.png", "/ws/r2/gen-2/sub/a.png", id="under"),
    pytest.param("/ws/r1/generated", "/ws/r1/generated", id="prefix-not-under"),
    pytest.param("gen/a.png", "gen/a.png", id="relative"),
    pytest.param({"out": "/ws/r1/gen", "n": 2, "files": ["/ws/r1/gen/a", "/x/a", None]},
                 {"out": "/ws/r2/gen-2", "n": 2, "files": ["/ws/r2/gen-2/a", "/x/a", None]},
                 id="nested"),
])
def test_relocate_moves_paths_under_the_old_output_only(value: Any, moved: Any) -> None:
    assert relocate(value, "/ws/r1/gen", "/ws/r2/gen-2") == moved


def gen(*args: str, inputs: tuple[str, ...] = ("net@" + "a" * 64,),
        code: str | None = "image x sha256:" + "e" * 64) -> CacheKey:
    return CacheKey("generate", args, inputs, code)


@pytest.mark.parametrize(("old", "new", "says"), [
    pytest.param(gen("--seeds", "1-2"), gen("--seeds", "3-4"),
                 ["arguments --seeds 1-2 → 3-4"], id="flag-value"),
    pytest.param(gen("--seeds", "1"), gen("--seeds", "1", "--trunc", "0.5"),
                 ["arguments --trunc (none) → 0.5"], id="flag-added"),
    pytest.param(gen("--seeds", "1", "--trunc", "0.5"), gen("--seeds", "1"),
                 ["arguments --trunc 0.5 → (none)"], id="flag-removed"),
    pytest.param(gen("--seeds", "1"), gen("--seeds", "1", "--mirror"),
                 ["arguments --mirror (none) → (set)"], id="switch-added"),
    pytest.param(gen("a.pkl", "--seeds", "1"), gen("b.pkl", "--seeds", "1"),
                 ["arguments argument 1 a.pkl → b.pkl"], id="positional"),
    pytest.param(gen("--seeds", "1", "--trunc", "0.5"), gen("--trunc", "0.5", "--seeds", "1"),
                 ["argument order"], id="order-only"),
    pytest.param(gen("--seeds", "1"), gen("--seeds", "1", inputs=("net@" + "f" * 64,)),
                 [f"inputs net@{'a' * 64} → net@{'f' * 64}"], id="inputs"),
    pytest.param(gen("--seeds", "1"), gen("--seeds", "1", inputs=()),
                 [f"inputs net@{'a' * 64} → (none)"], id="input-gone"),
    pytest.param(gen("--seeds", "1"), gen("--seeds", "1", code="image x sha256:" + "1" * 64),
                 [f"code image x sha256:{'e' * 12} → image x sha256:{'1' * 12}"],
                 id="code-shortened"),
    pytest.param(gen("--seeds", "1"), gen("--seeds", "1", code=None),
                 [f"code image x sha256:{'e' * 12} → (not keyed)"], id="code-unkeyed"),
    pytest.param(gen("--seeds", "1"), CacheKey("evaluate", ("--seeds", "1"),
                                               ("net@" + "a" * 64,), gen().code),
                 ["stage generate → evaluate"], id="stage"),
    pytest.param(gen("--seeds", "1", "--trunc", "1"), gen("--seeds", "2", inputs=(), code=None),
                 ["arguments --seeds 1 → 2, --trunc 1 → (none)",
                  f"inputs net@{'a' * 64} → (none)",
                  f"code image x sha256:{'e' * 12} → (not keyed)"], id="several"),
    pytest.param(gen("--seeds", "1"), gen("--seeds", "1"), [], id="none"),
])
def test_differences_say_what_changed(old: CacheKey, new: CacheKey, says: list[str]) -> None:
    assert differences(old, new) == says


# --- finding an earlier result ------------------------------------------------------------

def test_find_by_lineage_key_newest_first(store: Store, tmp_path: Path) -> None:
    other = gen("--seeds", "9")
    v1 = commit(store, tmp_path, "gen", b"one", BASE)
    commit(store, tmp_path, "gen", b"two", other)
    v3 = commit(store, tmp_path, "gen", b"three", BASE, run_id="r3")
    commit(store, tmp_path, "gen", b"four")  # no key at all
    assert find(store, "gen", BASE.key) == (v3, None)
    assert find(store, "gen", gen("--seeds", "0").key) is None
    assert find(store, "nothing-yet", BASE.key) is None
    assert v1.number == 1


def test_find_by_a_same_content_use(store: Store, tmp_path: Path) -> None:
    v1 = commit(store, tmp_path, "gen", b"one", BASE)
    again = gen("--seeds", "1")  # another key whose task made the same bytes
    use = use_of(v1, "same-content", again.key)
    store.record_use(use)
    store.record_use(use_of(v1, "cache", gen("--seeds", "2").key))  # a cache use finds nothing
    assert find(store, "gen", again.key) == (v1, use)
    assert find(store, "gen", gen("--seeds", "2").key) is None


def test_find_ignores_a_use_whose_version_id_no_longer_matches(store: Store,
                                                               tmp_path: Path) -> None:
    v1 = commit(store, tmp_path, "gen", b"one", BASE)
    key = gen("--seeds", "1").key
    # a record of a use of a v1 that held other content (written by hand: record_use
    # refuses it); the v1 there now is not what that task used
    stale = {**use_of(v1, "same-content", key).to_dict(), "id": OTHER_ID}
    udir = store.root / "names/gen/uses"
    udir.mkdir(parents=True)
    (udir / f"{1:020d}-0000abcd.json").write_text(json.dumps(stale))
    gone = {**use_of(v1, "same-content", key).to_dict(), "number": 7}  # no v7 at all
    (udir / f"{2:020d}-0000abcd.json").write_text(json.dumps(gone))
    assert len(store.uses("gen")) == 2 and find(store, "gen", key) is None


def test_closest_picks_the_fewest_differences_then_the_newest(store: Store,
                                                              tmp_path: Path) -> None:
    want = gen("--seeds", "5-6", "--trunc", "0.5")
    commit(store, tmp_path, "gen", b"far", gen("--seeds", "1", "--trunc", "1", code=None))
    commit(store, tmp_path, "gen", b"near-old", gen("--seeds", "1-2", "--trunc", "0.5"))
    near = commit(store, tmp_path, "gen", b"near-new", gen("--seeds", "3-4", "--trunc", "0.5"))
    commit(store, tmp_path, "gen", b"other-stage",
           CacheKey("evaluate", want.args, want.inputs, want.code))  # same args, other stage
    commit(store, tmp_path, "gen", b"unkeyed")
    found = closest(store, "gen", want)
    assert found is not None
    version, diff = found
    assert version == near and diff == ["arguments --seeds 3-4 → 5-6"]
    assert closest(store, "gen", CacheKey("train", ())) is None


def test_closest_survives_hostile_key_parts(store: Store, tmp_path: Path) -> None:
    """A pulled or hand-made version's lineage may carry any JSON under ``parts``."""
    want = gen("--seeds", "1")
    good = commit(store, tmp_path, "gen", b"good", gen("--seeds", "2"))
    for i, parts in enumerate([{"stage": "generate", "args": 5},
                               {"stage": "generate", "args": [], "code": 7},
                               {"stage": "generate", "inputs": {"a": 1}},
                               "not an object"]):
        src = make_tree(tmp_path / f"hostile-{i}", {"f": str(i).encode()})
        store.snapshot(src, "gen", (), Lineage(cache={"key": "0" * 64, "parts": parts}))
    found = closest(store, "gen", want)
    assert found is not None and found[0] == good


# --- use records --------------------------------------------------------------------------

def test_record_use_refuses_a_version_that_does_not_exist(store: Store, tmp_path: Path) -> None:
    v1 = commit(store, tmp_path, "gen", b"one")
    with pytest.raises(StageError, match=r"cannot record a use of gen:v2: no such version"):
        store.record_use(Use("gen", 2, v1.id, "t", "cache"))
    with pytest.raises(StageError, match=r"cannot record a use of gen:v1: no such version"):
        store.record_use(Use("gen", 1, OTHER_ID, "t", "cache"))
    with pytest.raises(StageError, match=r"cannot record a use of nope:v1: no such version"):
        store.record_use(Use("nope", 1, v1.id, "t", "cache"))
    assert store.uses("gen") == [] and not (store.root / "names/nope").exists()


@pytest.mark.parametrize(("field", "value", "says"), [
    pytest.param("reason", "because", "unknown reason 'because'", id="reason"),
    pytest.param("id", "abc", "bad version id 'abc'", id="id"),
    pytest.param("key", "xyz", "bad cache key 'xyz'", id="key"),
    pytest.param("number", 0, "use number", id="number"),
    pytest.param("run_id", "a\nb", "run_id must be a one-line string", id="run-id"),
])
def test_a_use_with_a_bad_field_is_refused_naming_it(field: str, value: object,
                                                     says: str) -> None:
    good = use_of(Version("gen", 1, "a" * 64, "t"))
    with pytest.raises(StageError, match=says):
        Use.from_dict({**good.to_dict(), field: value})


def test_uses_are_listed_oldest_first(store: Store, tmp_path: Path) -> None:
    v1 = commit(store, tmp_path, "gen", b"one")
    v2 = commit(store, tmp_path, "gen", b"two")
    made = [use_of(v2, run_id="r2"), use_of(v1, run_id="r3"), use_of(v2, run_id="r4")]
    for use in made:
        store.record_use(use)
    assert store.uses("gen") == made
    assert store.uses("other") == [] and not store.record_problems


GOOD_USE = use_of(Version("gen", 1, "0" * 64, "t"))  # its id is fixed up to v1's in the test


@pytest.mark.parametrize(("file", "body", "says"), [
    pytest.param(f"{5:020d}-0000abcd.json", '{"name": "gen", "num', "not valid JSON",
                 id="truncated"),
    pytest.param(f"{5:020d}-0000abcd.json", "", "not valid JSON", id="empty"),
    pytest.param(f"{5:020d}-0000abcd.json", "[1, 2]", "use record must be a JSON object",
                 id="wrong-type"),
    pytest.param(f"{5:020d}-0000abcd.json", {"number": "1"}, "use number", id="number-text"),
    pytest.param(f"{5:020d}-0000abcd.json", {"extra": 1}, "unknown fields: extra",
                 id="unknown-field"),
    pytest.param(f"{5:020d}-0000abcd.json", {"name": "cats"}, "use of cats", id="wrong-name"),
    pytest.param(f"{5:020d}-0000abcd.json", "dir", "not a regular file", id="directory"),
    pytest.param(f"{5:020d}-0000abcd.json", "link", "not a regular file", id="symlink"),
    pytest.param("notes.txt", "hello", "unexpected file among use records", id="stray-file"),
    pytest.param(f"{5:020d}-0000abcd.json.tmp", "{}", "unexpected file among use records",
                 id="stray-tmp"),
])
def test_damaged_use_records_are_skipped_and_noted(store: Store, tmp_path: Path, file: str,
                                                   body: Any, says: str) -> None:
    v1 = commit(store, tmp_path, "gen", b"one")
    commit(store, tmp_path, "cats", b"cat")
    good = Use(**{**GOOD_USE.to_dict(), "id": v1.id})
    store.record_use(good)
    path = store.root / "names/gen/uses" / file
    if body == "dir":
        path.mkdir()
    elif body == "link":
        path.symlink_to(next((store.root / "names/gen/uses").iterdir()))
    elif isinstance(body, dict):
        path.write_text(json.dumps({**good.to_dict(), **body}))
    else:
        path.write_text(body)
    reader = Store(store.root, create=False)
    assert reader.uses("gen") == [good]
    rel = f"names/gen/uses/{file}"
    assert says in reader.record_problems[rel]
    assert [v.number for v in reader.versions("gen")] == [1]  # versions are unaffected


def test_fsck_quarantines_a_damaged_use_record_and_gc_keeps_working(store: Store,
                                                                    tmp_path: Path) -> None:
    v1 = commit(store, tmp_path, "gen", b"one")
    good = use_of(v1)
    store.record_use(good)
    bad = store.root / "names/gen/uses" / f"{9:020d}-0000abcd.json"
    bad.write_text("{")
    report = store.fsck()
    assert [q["path"] for q in report["quarantined"]] == [store.rel(bad)]
    assert (store.root / "quarantine" / store.rel(bad)).read_text() == "{"
    reader = Store(store.root, create=False)
    assert reader.uses("gen") == [good] and not reader.record_problems
    # use records hold no objects: gc collects around them and keeps them and the version
    orphan = commit(store, tmp_path, "scratch", b"only here")
    scratch_obj = store.object_path(store.manifest(orphan.id).entries[0].sha256)
    (store.root / "names/scratch").rename(tmp_path / "scratch-record")
    gc = store.gc()
    assert gc["collected"] is True and gc["removed"]["objects"] == 1
    assert not scratch_obj.exists()
    assert store.uses("gen") == [good] and store.resolve("gen").id == v1.id
    assert store.verify("gen")[1] == []


def test_a_name_holding_only_use_records_is_a_leftover(store: Store, tmp_path: Path) -> None:
    v1 = commit(store, tmp_path, "gen", b"one")
    store.record_use(use_of(v1))
    (store.root / "quarantine").mkdir()
    (store.root / "names/gen/versions").rename(store.root / "quarantine/versions")
    assert store.leftovers() == ["names/gen"]


@pytest.mark.parametrize(("cache", "says"), [
    pytest.param({"key": "abc"}, "lineage cache key must be 64 hex digits, got 'abc'",
                 id="short"),
    pytest.param({"key": "G" * 64}, "lineage cache key must be 64 hex digits", id="not-hex"),
    pytest.param({"parts": {}}, "lineage cache key must be 64 hex digits, got None",
                 id="missing"),
    pytest.param({"key": 5}, "lineage cache key must be 64 hex digits, got 5", id="number"),
    pytest.param("abc", "lineage cache must be a JSON object, got 'abc'", id="not-object"),
])
def test_lineage_with_a_bad_cache_key_is_refused(cache: Any, says: str) -> None:
    with pytest.raises(StageError, match=says) as info:
        Lineage(cache=cache)
    assert "\n" not in str(info.value)
    with pytest.raises(StageError, match=says):
        Lineage.from_dict({"cache": cache})


def test_a_version_record_with_a_bad_cache_key_is_skipped(store: Store, tmp_path: Path) -> None:
    v1 = commit(store, tmp_path, "gen", b"one", BASE)
    path = store.root / "names/gen/versions/000001.json"
    record = json.loads(path.read_text())
    record["lineage"]["cache"]["key"] = "nope"
    path.write_text(json.dumps(record))
    reader = Store(store.root, create=False)
    assert reader.versions("gen") == [] and find(reader, "gen", BASE.key) is None
    assert "lineage cache key" in reader.record_problems["names/gen/versions/000001.json"]
    assert v1.lineage.cache is not None


# --- training left behind -----------------------------------------------------------------

CKEY = BASE.without("--total-kimg").key


def snapshot_dir(out: Path, name: str, kimg: Any, files: tuple[str, ...] = ("G.npz", "D.npz"),
                 state: str | None = None) -> Path:
    """A snapshot directory as the training loop writes one (networks/snapshot.py): the
    weights as .npz files and the training state with its kimg."""
    snap = out / name
    snap.mkdir(parents=True)
    (snap / "state.json").write_text(state if state is not None else json.dumps({"kimg": kimg}))
    (snap / "config.json").write_text("{}")
    for f in files:
        (snap / f).write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: content unread
    return snap


def test_left_snapshots_are_those_a_registered_run_left_up_to_max_kimg(store: Store,
                                                                       tmp_path: Path) -> None:
    failed = tmp_path / "ws/failed/train-1"
    s0 = snapshot_dir(failed, "network-snapshot-000000", 0.1)
    s1 = snapshot_dir(failed, "network-snapshot-000000.200", 0.2)  # ours; the rest NVIDIA's
    snapshot_dir(failed, "network-snapshot-000002", 0.4)  # further than this run goes
    snapshot_dir(failed, "network-final", 0.2)  # a finished net is found as a version
    snapshot_dir(failed, "network-snapshot-12", 0.1)  # not a snapshot name
    snapshot_dir(failed, "network-snapshot-000000.5", 0.1)  # nor this (3 decimals)
    snapshot_dir(failed, "network-snapshot-000003", 0.1, files=("G.npz",))  # no D
    snapshot_dir(failed, "network-snapshot-000004", 0.1, files=("D.npz",))  # no G
    snapshot_dir(failed, "network-snapshot-000005", None, state="{")  # damaged state
    snapshot_dir(failed, "network-snapshot-000006", None, state='{"kimg": "x"}')
    snapshot_dir(failed, "network-snapshot-000007", None, state="[0.1]")
    snapshot_dir(failed, "network-snapshot-000008", None, state="{}")
    (failed / "stats.jsonl").write_text("")
    register_training(store, CKEY, "stylegan2_train", "failed-run", failed)
    found = left_snapshots(store, CKEY, tmp_path / "ws/new/train-1", 0.3)
    assert [(s.path, s.kimg) for s in found] == [(s0, 0.1), (s1, 0.2)]
    assert found[1].what == "run failed-run's network-snapshot-000000.200 (0.2 kimg)"
    assert found[1].version is None
    assert [s.kimg for s in left_snapshots(store, CKEY, tmp_path / "x", 1.0)] == [0.1, 0.2, 0.4]
    assert left_snapshots(store, "e" * 64, tmp_path / "x", 1.0) == []  # another key


def test_left_snapshots_skip_own_dir_deleted_dir_and_damaged_records(store: Store,
                                                                     tmp_path: Path) -> None:
    own = tmp_path / "ws/own"
    snapshot_dir(own, "network-snapshot-000000", 0.1)
    gone = tmp_path / "ws/gone"
    snapshot_dir(gone, "network-snapshot-000000", 0.1)
    kept = tmp_path / "ws/kept"
    snap = snapshot_dir(kept, "network-snapshot-000000", 0.2)
    a_file = tmp_path / "ws/a-file"
    a_file.write_text("")
    for run, out in (("own", own), ("gone", gone), ("kept", kept), ("file", a_file)):
        register_training(store, CKEY, "d", run, out)
    register_training(store, CKEY, "d", "own", own)  # a retry registers again: one record
    (gone / "network-snapshot-000000" / "G.npz").unlink()
    os.rename(gone, tmp_path / "ws/gone-elsewhere")
    tdir = store.root / "state/training" / CKEY
    assert len(list(tdir.glob("*.json"))) == 4
    for i, body in enumerate(['{"out": ', "[1]", '{"run_id": "x"}', '{"out": 5}']):
        (tdir / f"{'f' * 31}{i}.json").write_text(body)
    (tdir / "dir.json").mkdir()
    found = left_snapshots(store, CKEY, own, 1.0)
    assert [s.path for s in found] == [snap]


@pytest.mark.parametrize("key", [
    pytest.param("../../etc", id="traversal"),
    pytest.param("A" * 64, id="upper"),
    pytest.param("", id="empty"),
])
def test_a_bad_continuation_key_is_refused(store: Store, tmp_path: Path, key: str) -> None:
    with pytest.raises(StageError, match="bad continuation key"):
        register_training(store, key, "d", "r", tmp_path)
    with pytest.raises(StageError, match="bad continuation key"):
        left_snapshots(store, key, tmp_path, 1.0)


def test_finished_networks_by_continue_key_and_kimg(store: Store, tmp_path: Path) -> None:
    def net(content: bytes, kimg: Any, key: CacheKey, meta: Any = None) -> Version:
        if meta is None:
            meta = {"stage": {"task_id": "train", "result": {"kimg": kimg}}}
        return commit(store, tmp_path, "net", content, key, meta=meta,
                      continue_flag="--total-kimg")

    def train(kimg: str, seed: str = "1") -> CacheKey:
        return CacheKey("train", ("--total-kimg", kimg, "--seed", seed), BASE.inputs, BASE.code)

    short = net(b"short", 0.2, train("0.2"))
    mid = net(b"mid", 0.4, train("0.4"))
    net(b"long", 0.8, train("0.8"))
    net(b"other-seed", 0.2, train("0.2", seed="2"))
    net(b"bool", True, train("1"))
    net(b"text", "0.2", train("0.2x"))
    net(b"no-stage", 0.2, train("0.21"), meta={"kimg": 0.2})
    net(b"stage-text", 0.2, train("0.22"), meta={"stage": "train"})
    net(b"result-list", 0.2, train("0.23"), meta={"stage": {"result": [0.2]}})
    commit(store, tmp_path, "net", b"unkeyed", meta={"stage": {"result": {"kimg": 0.1}}})
    ckey = train("0.6").without("--total-kimg").key
    assert finished_networks(store, "net", ckey, 0.6) == [(short, 0.2), (mid, 0.4)]
    assert finished_networks(store, "net", ckey, 0.1) == []
    assert finished_networks(store, "net", "e" * 64, 9.0) == []
