"""The version store against hostile input and injected faults: every ``store`` command, a
store whose records are damaged in every way a disk, a person or a killed writer can damage
them, SIGKILL at each failpoint of every writer, hostile manifests, and writers racing gc.

Each case is one line; the tables at the bottom build them. ``base`` makes the store every
case starts from: ``cats:v1`` (tag ``best``) and ``cats:v2``, with their sources under
``{d}/src*``. Damage the setup plants on purpose is named in ``planted``. Cases about
names, tags and refs need no store: those are refused before a store is opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from stylegan_ops.store.checkout import reflink
from stylegan_ops.store.local import Store
from tests.faults.harness import Case, check_case, run

Setup = Callable[[Path], None]
Check = Callable[[Path, subprocess.CompletedProcess[str]], None]
Row = tuple[str, tuple[str, ...], str, str | None, Check | None]  # label, argv, expect, …
SOURCES = {
    "src1": {"a.bin": b"a" * 1000, "sub/b.txt": b"bee"},
    "src2": {"a.bin": b"a" * 1000, "sub/b.txt": b"bee", "c.bin": b"only in cats:v2 " * 64},
    "src4": {"new.txt": b"a fourth tree"},
}
V2 = "names/cats/versions/000002.json"
BEST = "names/cats/tags/best.json"
C_SHA = hashlib.sha256(SOURCES["src2"]["c.bin"]).hexdigest()  # an object only cats:v2 has
C_OBJ = f"objects/sha256/{C_SHA[:2]}/{C_SHA[2:]}"


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def base(d: Path) -> None:
    for name, files in SOURCES.items():
        make_tree(d / name, files)
    s = Store(d / "store")
    s.snapshot(d / "src1", "cats", ("best",))
    s.snapshot(d / "src2", "cats")


def v2_manifest(d: Path) -> str:
    return f"manifests/{Store(d / 'store', create=False).resolve('cats:v2').id}.json"


# --- damage -----------------------------------------------------------------------------

def _replace(path: Path, how: str) -> None:
    """Damage ``path`` (a store file) the way ``how`` says."""
    old = path.read_bytes() if path.is_file() else b"{}"
    if path.exists() or path.is_symlink():
        path.chmod(0o644)
        path.unlink()
    if how == "truncated":
        path.write_bytes(old[: len(old) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "binary":
        path.write_bytes(b"\xff\xfe\x00\x01 not json")
    elif how == "nested":
        path.write_bytes(b"[" * 200_000)
    elif how == "dir":
        path.mkdir()
    elif how == "dangling-symlink":
        path.symlink_to(path.parent / "nowhere")
    elif how == "wrong-types":
        data = json.loads(old)
        if "number" in data and "name" in data:  # a version record
            data.update(number="2", file_count=True, lineage={"params": [], "inputs": "x"})
        elif "number" in data:  # a tag
            data["number"] = "1"
        else:
            data = [data]
        path.write_text(json.dumps(data))
    elif how == "other-version":  # a whole, valid record that says it is another version
        path.write_bytes((path.parent / "000001.json").read_bytes())
    elif how == "other-manifest":  # valid manifest JSON whose content is not its id
        path.write_text(json.dumps({"files": [], "file_count": 0, "total_size": 0}))
    else:
        raise AssertionError(how)


def damaged(rel: str | Callable[[Path], str], how: str) -> Setup:
    def setup(d: Path) -> None:
        base(d)
        target = rel(d) if callable(rel) else rel
        _replace(d / "store" / target, how)
    return setup


def damaged_caches(how: str) -> Setup:
    def setup(d: Path) -> None:
        base(d)
        s = Store(d / "store")
        s.checkout("cats:v2", d / "warm")  # every cache file exists: stat, hashcache
        (d / "store/state/damaged").mkdir(parents=True, exist_ok=True)
        (d / f"store/state/damaged/{C_SHA}.json").write_text("{}")  # a flag saying nothing
        for path in sorted((d / "store/state").glob("*/*.json")):
            _replace(path, how)
    return setup


def object_damage(how: str) -> Setup:
    def setup(d: Path) -> None:
        base(d)
        obj = d / "store" / C_OBJ
        st = obj.stat()
        obj.chmod(0o644)
        if how == "flipped":  # same size, mtime put back: bit rot or a careful writer
            data = bytearray(obj.read_bytes())
            data[5] ^= 1
            obj.write_bytes(bytes(data))
            obj.chmod(0o444)
            os.utime(obj, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif how == "appended":
            with obj.open("ab") as f:
                f.write(b"x\n")
        elif how == "missing":
            obj.unlink()
        else:
            _replace(obj, how)
    return setup


def hostile_manifest(paths: list[str]) -> Setup:
    """A version ``evil:v1`` whose (self-consistent) manifest names ``paths``."""
    def setup(d: Path) -> None:
        base(d)
        s = Store(d / "store")
        sha = hashlib.sha256(b"x").hexdigest()
        make_tree(d / "x", {"x": b"x"})
        s.snapshot(d / "x", "xsrc")  # the object exists
        files = [{"path": p, "size": 1, "sha256": sha} for p in sorted(paths)]
        body = json.dumps({"file_count": len(files), "files": files, "total_size": len(files)},
                          sort_keys=True, separators=(",", ":")).encode()
        vid = hashlib.sha256(body).hexdigest()
        (d / f"store/manifests/{vid}.json").write_bytes(body)
        record = {"name": "evil", "number": 1, "id": vid, "created": "2026-01-01T00:00:00Z",
                  "lineage": {}, "meta": {}, "file_count": len(files), "total_size": len(files)}
        (d / "store/names/evil/versions").mkdir(parents=True)
        (d / "store/names/evil/versions/000001.json").write_text(json.dumps(record))
    return setup


def with_dirs(*dirs: str, files: dict[str, bytes] | None = None) -> Setup:
    def setup(d: Path) -> None:
        base(d)
        for rel in dirs:
            (d / rel).mkdir(parents=True, exist_ok=True)
        make_tree(d, files or {})
    return setup


def checked_out(*extra: str, mode: str = "auto") -> Setup:
    """``base`` plus a checkout of cats:v1 at {d}/co, plus ``extra`` files in it."""
    def setup(d: Path) -> None:
        base(d)
        Store(d / "store").checkout("cats:v1", d / "co", mode=mode)
        for rel in extra:
            (d / "co" / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / "co" / rel).write_text("mine\n")
    return setup


def lineage_file(body: object) -> Setup:
    def setup(d: Path) -> None:
        sources(d)
        (d / "lin.json").write_text(json.dumps(body))
    return setup


def sources(d: Path) -> None:
    """The source trees only, no store."""
    for name, files in SOURCES.items():
        make_tree(d / name, files)


# --- checks -----------------------------------------------------------------------------

def last_json(res: subprocess.CompletedProcess[str]) -> dict[str, object]:
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def ok_run(d: Path, *argv: str) -> dict[str, object]:
    res = run(list(argv), d)
    assert res.returncode == 0, (argv, res.stderr)
    return last_json(res)


def stderr_has(text: str) -> Check:
    def check(d: Path, res: subprocess.CompletedProcess[str]) -> None:
        assert text in res.stderr, res.stderr
    return check


def quarantined(rel: str) -> Check:
    def check(d: Path, res: subprocess.CompletedProcess[str]) -> None:
        assert (d / "store/quarantine" / rel).exists() or (d / "store/quarantine" / rel
                                                            ).is_symlink(), rel
        assert not os.path.lexists(d / "store" / rel)
    return check


def intact_store(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    """The store is whole again without help: nothing in tmp/, no half-made name."""
    assert not list((d / "store/tmp").iterdir())
    assert not [p for p in (d / "store/names").glob("*/versions") if not any(p.iterdir())]


def recovers(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    """After a killed writer: gc cleans what it left, the same snapshot then works."""
    report = ok_run(d, "store", "gc")
    assert report["collected"] is True
    intact_store(d, res)
    again = ok_run(d, "store", "snapshot", str(d / "src4"), "--name", "birds")
    assert again["number"] == 1
    assert ok_run(d, "store", "list", "birds")["versions"]


def fsck_then_consistent(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    """After a killed tag writer: fsck leaves every index equal to the records."""
    ok_run(d, "store", "fsck")
    index = json.loads((d / "store/names/cats/index.json").read_text())
    listing = ok_run(d, "store", "list", "cats")
    assert [v["number"] for v in index["versions"]] == [1, 2]
    tags = {t: int(v["ref"].rsplit("v", 1)[1]) for v in listing["versions"]  # type: ignore
            for t in v["tags"]}
    assert index["tags"] == tags


def checkout_again(*argv: str) -> Check:
    """After a killed checkout: the same checkout again cleans what it left and works."""
    def check(d: Path, res: subprocess.CompletedProcess[str]) -> None:
        ok_run(d, "store", "checkout", *argv)
        assert (d / "co/a.bin").read_bytes() == SOURCES["src1"]["a.bin"]
        assert (d / "co/.stylegan-checkout.json").is_file()
    return check


def resnapshot_repairs(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    """Re-snapshotting the source restores a damaged object: verify is clean again."""
    ok_run(d, "store", "snapshot", str(d / "src2"), "--name", "cats")
    assert ok_run(d, "store", "verify")["problems"] == []


def no_store(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    assert not (d / "store").exists(), "a refused command created a store"


def nothing_outside(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    assert not (d / "escape").exists() and not (d.parent / "escape").exists()
    assert not (d / "co").exists()


def number_is(n: int) -> Check:
    def check(d: Path, res: subprocess.CompletedProcess[str]) -> None:
        assert last_json(res)["number"] == n
    return check


def co_kept(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    assert (d / "co/mine.txt").read_text() == "mine\n"


def co_replaced(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    assert (d / "co/c.bin").is_file() and not [
        p for p in d.iterdir() if p.name.startswith(".co.")]


# --- writers racing gc (background processes started by the setup) -----------------------

_BACKGROUND: dict[Path, list[subprocess.Popen[str]]] = {}
LOOP = """
import sys
from pathlib import Path
from stylegan_ops.store.local import Store
s = Store(Path(sys.argv[1]))
for i in range(int(sys.argv[3])):
    if sys.argv[2] == "gc":
        s.gc()
    elif sys.argv[2] == "tag":
        s.tag("cats:v" + str(1 + i % 2), "moving")
        s.untag("cats", "moving")
    else:
        src = Path(sys.argv[4]) / str(i)
        src.mkdir(parents=True)
        (src / "shared").write_bytes(b"s" * 5000)  # an object gc would like to delete
        (src / "own").write_bytes(str(i).encode() * 99)
        s.snapshot(src, sys.argv[2])
"""


def racing(*loops: tuple[str, int]) -> Setup:
    def setup(d: Path) -> None:
        base(d)
        Store(d / "store").snapshot(make_tree(d / "gone", {"shared": b"s" * 5000}), "gone")
        # unreferenced now, so gc wants to delete the object the writers also store
        (d / "store/names/gone").rename(d / "gone-record")
        _BACKGROUND[d] = [subprocess.Popen(
            [sys.executable, "-c", LOOP, str(d / "store"), what, str(n), str(d / f"w-{what}")],
            stderr=subprocess.PIPE, text=True) for what, n in loops]
    return setup


def writers_succeeded(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    for p in _BACKGROUND.pop(d):
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    assert ok_run(d, "store", "verify")["problems"] == []


# --- the table ----------------------------------------------------------------------------

def _reflink_here() -> bool:
    import tempfile

    with tempfile.TemporaryDirectory() as t:
        (Path(t) / "a").write_bytes(b"x")
        try:
            reflink(Path(t) / "a", str(Path(t) / "b"))
        except OSError:
            return False
    return True


REFLINK = _reflink_here()
RECORD_KINDS = ("truncated", "empty", "binary", "nested", "wrong-types", "dir",
                "dangling-symlink", "other-version")
# (argv, expect, message in the error line or stdout, check) for a damaged cats:v2 record
ON_DAMAGED_RECORD: list[Row] = [
    ("list", ("store", "list"), "ok", V2, stderr_has(f"skipped damaged {V2}")),
    ("list-cats", ("store", "list", "cats"), "ok", '"ref": "cats:v1"', None),
    ("show-catsv1", ("store", "show", "cats:v1"), "ok", None, None),
    ("show-catsv2", ("store", "show", "cats:v2"), "usage", "damaged records under names/cats",
     None),
    ("log-cats", ("store", "log", "cats"), "ok", None, None),
    ("checkout-catsv1", ("store", "checkout", "cats:v1", "{d}/co"), "ok", None, None),
    ("verify", ("store", "verify"), "usage", "record", None),
    ("gc", ("store", "gc"), "ok", '"collected": false', None),
    ("fsck", ("store", "fsck"), "ok", "quarantined", quarantined(V2)),
    ("snapshot", ("store", "snapshot", "{d}/src4", "--name", "cats"), "ok", None,
     number_is(3)),
    ("tag-catsv1", ("store", "tag", "cats:v1", "x"), "ok", None, None),
]
TAG_KINDS = ("truncated", "empty", "wrong-types", "dir", "dangling-symlink")
ON_DAMAGED_TAG: list[Row] = [
    ("list-cats", ("store", "list", "cats"), "ok", BEST, None),
    ("show-catsbest", ("store", "show", "cats:best"), "usage", "unknown tag", None),
    ("verify", ("store", "verify"), "usage", "record", None),
    ("gc", ("store", "gc"), "ok", '"collected": true', None),
    ("fsck", ("store", "fsck"), "ok", "quarantined", quarantined(BEST)),
    ("untag-cats", ("store", "untag", "cats", "best"), "ok", None, None),
]
MANIFEST_KINDS = ("truncated", "empty", "dir", "dangling-symlink", "other-manifest")
ON_DAMAGED_MANIFEST: list[Row] = [
    ("show-catsv2", ("store", "show", "cats:v2"), "usage", "manifest", None),
    ("checkout-catsv2", ("store", "checkout", "cats:v2", "{d}/co"), "usage", "manifest",
     nothing_outside),
    ("checkout-catsv1", ("store", "checkout", "cats:v1", "{d}/co"), "ok", None, None),
    ("verify", ("store", "verify"), "usage", "manifest", None),
    ("gc", ("store", "gc"), "ok", '"collected": false', None),
    ("fsck", ("store", "fsck"), "ok", "quarantined", None),
]
OBJECT_KINDS = ("flipped", "appended", "missing", "dir", "dangling-symlink")
ON_DAMAGED_OBJECT: list[Row] = [
    ("checkout-catsv2", ("store", "checkout", "cats:v2", "{d}/co"), "usage",
     "cats:v2 is damaged", nothing_outside),
    ("checkout-catsv1", ("store", "checkout", "cats:v1", "{d}/co"), "ok", None, None),
    ("verify", ("store", "verify"), "usage", "cats:v2 c.bin", None),
    ("verify-repair", ("store", "verify", "--repair"), "usage", "cats:v2 c.bin",
     resnapshot_repairs),
    ("gc", ("store", "gc"), "ok", '"collected": true', None),
]
CACHE_KINDS = ("truncated", "binary", "nested", "wrong-types", "dir")
# The first kind of each damage meets every command; the others the commands where the
# kind of damage could matter (how a reader lists, checks out, collects, repairs).
EVERY_KIND = {"record": ("list", "checkout-catsv1", "gc", "fsck"),
              "tag": ("list-cats", "fsck"), "manifest": ("checkout-catsv2", "gc"),
              "object": ("checkout-catsv2", "verify-repair")}

SNAPSHOT_POINTS = ("after-object-tmp", "after-objects", "after-manifest", "before-version-link")
NEW_SNAPSHOT = ("store", "snapshot", "{d}/src4", "--name", "birds")
BAD_NAMES = [("newline", "cats\n"), ("cyrillic-a", "c\u0430ts"), ("fullwidth", "\uff43ats"),
             ("arabic-digit", "cats\u0663"), ("leading-dot", ".cats"), ("upper", "Cats"),
             ("slash", "a/b"), ("dotdot", ".."), ("empty", ""), ("long", "c" * 129),
             ("space", "ca ts"), ("nul", "ca\x00ts")]
BAD_TAGS = [("latest", "latest"), ("Latest", "Latest"), ("v3", "v3"), ("V3", "V3"),
            ("slash", "a/b"), ("dotdot", ".."), ("leading-dash", "-x"), ("unicode", "b\u00e9st"),
            ("newline", "best\n"), ("long", "t" * 129)]
BAD_REFS = [("arabic-digit-number", "cats:v\u0663"), ("v0", "cats:v0"), ("v01", "cats:v01"),
            ("empty-selector", "cats:"), ("hex-short", "cats@abc"), ("hex-upper", "cats@ABCD"),
            ("hex-nonhex", "cats@xyz1"), ("path", "../etc"), ("tag-slash", "cats:a/b"),
            ("huge-number", "cats:v" + "9" * 40), ("newline", "cats:v1\n")]
BAD_LINEAGE = [("inputs-string", {"inputs": "cats@abcd"}, "inputs must be a list"),
               ("inputs-not-ref", {"inputs": ["../x"]}, "not a version ref"),
               ("params-list", {"params": [1]}, "params must be a JSON object"),
               ("try-string", {"try_number": "2"}, "try_number must be an integer"),
               ("try-bool", {"try_number": True}, "try_number must be an integer"),
               ("dag-newline", {"dag_id": "a\nb"}, "one-line string"),
               ("not-object", [1, 2], "must hold a JSON object"),
               ("unknown-field", {"dag": "x"}, "unknown lineage fields")]
HOSTILE_MANIFESTS = [("dotdot", ["../escape"]), ("deep-dotdot", ["a/../../escape"]),
                     ("absolute", ["/tmp/escape"]), ("backslash", ["..\\escape"]),
                     ("nul", ["a\x00b"]), ("file-and-dir", ["a", "a/b"]),
                     ("long-part", ["p" * 300]), ("marker", [".stylegan-checkout.json"]),
                     ("empty-part", ["a//b"])]

CASES = [
    # --- 1. checkout --replace never replaces what is not a previous checkout ---------
    Case("replace-dir-holding-the-store", ("store", "checkout", "cats", "{d}", "--replace"),
         base, "usage", "holds the version store"),
    Case("replace-cwd-holding-the-store", ("store", "checkout", "cats", ".", "--replace"),
         base, "usage", "holds the version store"),
    Case("checkout-into-the-store", ("store", "checkout", "cats", "{d}/store/names/x"),
         base, "usage", "inside the version store"),
    Case("replace-dir-with-other-files", ("store", "checkout", "cats", "{d}/mine", "--replace"),
         with_dirs(files={"mine/thesis.tex": b"years of work"}), "usage", "not a checkout",
         lambda d, r: (d / "mine/thesis.tex").is_file() or pytest.fail("deleted")),
    Case("replace-checkout-with-extra-file", ("store", "checkout", "cats:v2", "{d}/co",
                                               "--replace"),
         checked_out("mine.txt"), "usage", "not part of its checkout (first: mine.txt)",
         co_kept),
    Case("replace-checkout-with-extra-nested", ("store", "checkout", "cats:v2", "{d}/co",
                                                 "--replace"),
         checked_out("sub/deep/mine.txt"), "usage", "sub/deep/mine.txt"),
    Case("replace-previous-checkout", ("store", "checkout", "cats:v2", "{d}/co", "--replace"),
         checked_out(), "ok", "cats:v2", co_replaced),
    Case("checkout-non-empty-without-replace", ("store", "checkout", "cats", "{d}/co"),
         checked_out(), "usage", "not an empty directory"),
    Case("checkout-target-is-a-file", ("store", "checkout", "cats", "{d}/src1/a.bin"),
         base, "usage", "is a file"),
    Case("checkout-target-is-a-symlink", ("store", "checkout", "cats", "{d}/link"),
         lambda d: (base(d), (d / "link").symlink_to(d / "src1")), "usage", "symbolic link"),
    Case("checkout-bad-mode", ("store", "checkout", "cats", "{d}/co", "--mode", "hard"),
         base, "usage", None),  # click's choice check
    Case("checkout-mode-copy", ("store", "checkout", "cats", "{d}/co", "--mode", "copy"),
         base, "ok", None,
         lambda d, r: json.loads((d / "co/.stylegan-checkout.json").read_text())["modes"]
         == {"copy": 3} or pytest.fail("not copied")),
    Case("checkout-mode-reflink", ("store", "checkout", "cats", "{d}/co", "--mode", "reflink"),
         base, "ok" if REFLINK else "usage", None if REFLINK else "cannot clone"),
    # --- 2. a write through a checkout is found on next use, never served as good -------
    Case("write-through-link-found-by-checkout",
         ("store", "checkout", "cats:v1", "{d}/co2"),
         lambda d: (checked_out(mode="link")(d), _write_through(d / "co/a.bin")), "usage",
         "cats:v1 is damaged", planted=("cats:v1", "cats:v2")),
    Case("write-through-link-found-by-verify", ("store", "verify", "--repair"),
         lambda d: (checked_out(mode="link")(d), _write_through(d / "co/a.bin")), "usage", "a.bin",
         lambda d, r: (ok_run(d, "store", "snapshot", str(d / "src1"), "--name", "cats"),
                       ok_run(d, "store", "verify"))),
    # --- 5. a killed snapshot leaves an empty versions/; any record may be damaged -------
    Case("empty-versions-dir-list", ("store", "list"), with_dirs("store/names/ghost/versions"),
         "ok", '"name": "cats"'),
    Case("empty-versions-dir-list-name", ("store", "list", "ghost"),
         with_dirs("store/names/ghost/versions"), "usage", "unknown version name 'ghost'"),
    Case("empty-versions-dir-gc", ("store", "gc"), with_dirs("store/names/ghost/versions"),
         "ok", '"leftovers": 1', lambda d, r: not (d / "store/names/ghost").exists()
         or pytest.fail("left")),
    Case("empty-versions-dir-fsck", ("store", "fsck"), with_dirs("store/names/ghost/versions"),
         "ok", "names/ghost", intact_store),
    Case("empty-versions-dir-snapshot", ("store", "snapshot", "{d}/src4", "--name", "ghost"),
         with_dirs("store/names/ghost/versions"), "ok", None, number_is(1)),
    Case("name-dir-invalid-name", ("store", "list"),
         with_dirs("store/names/Bad Name/versions"), "ok", "names/Bad Name",
         planted=("names/Bad Name",)),
    Case("name-dir-is-a-file", ("store", "fsck"),
         with_dirs(files={"store/names/afile": b"x"}), "ok", "quarantined",
         quarantined("names/afile")),
    Case("stray-file-among-versions", ("store", "list", "cats"),
         with_dirs(files={"store/names/cats/versions/notes.txt": b"x"}), "ok", "cats:v2",
         planted=("names/cats/versions/notes.txt",)),
    Case("index-damaged-fsck-rebuilds", ("store", "fsck"), damaged("names/cats/index.json",
                                                                   "binary"),
         "ok", "names/cats/index.json", fsck_then_consistent),
    *[Case(f"record-{kind}-{label}", argv, damaged(V2, kind), expect, message, check,
           planted=(V2,))
      for kind in RECORD_KINDS for label, argv, expect, message, check in ON_DAMAGED_RECORD
      if kind == RECORD_KINDS[0] or label in EVERY_KIND["record"]],
    *[Case(f"tag-{kind}-{label}", argv, damaged(BEST, kind), expect, message, check,
           planted=(BEST,))
      for kind in TAG_KINDS for label, argv, expect, message, check in ON_DAMAGED_TAG
      if kind == TAG_KINDS[0] or label in EVERY_KIND["tag"]],
    Case("tag-pointing-nowhere-fsck", ("store", "fsck"),
         with_dirs(files={"store/names/cats/tags/gone.json": b'{"number": 9}'}), "ok",
         "points to v9", quarantined("names/cats/tags/gone.json")),
    Case("tag-over-damaged-tag", ("store", "tag", "cats:v2", "best"), damaged(BEST, "binary"),
         "ok", None, lambda d, r: ok_run(d, "store", "show", "cats:best")),
    *[Case(f"manifest-{kind}-{label}", argv, damaged(v2_manifest, kind), expect, message,
           check, planted=("cats:v2",))
      for kind in MANIFEST_KINDS for label, argv, expect, message, check in ON_DAMAGED_MANIFEST
      if kind == MANIFEST_KINDS[0] or label in EVERY_KIND["manifest"]],
    *[Case(f"object-{kind}-{label}", argv, object_damage(kind), expect, message, check,
           planted=("cats:v2",))
      for kind in OBJECT_KINDS for label, argv, expect, message, check in ON_DAMAGED_OBJECT
      if kind == OBJECT_KINDS[0] or label in EVERY_KIND["object"]],
    # caches are caches: broken ones are rebuilt, never fatal
    *[Case(f"cache-{kind}-{cmd[1]}", cmd, damaged_caches(kind), "ok", None)
      for kind in CACHE_KINDS
      for cmd in (("store", "checkout", "cats:v2", "{d}/co"),
                  ("store", "snapshot", "{d}/src2", "--name", "cats"), ("store", "verify"),
                  ("store", "fsck"))
      if kind == CACHE_KINDS[0] or cmd[1] in ("checkout", "snapshot")],
    # --- SIGKILL at each failpoint of every writer ---------------------------------------
    *[Case(f"kill-snapshot-{point}", NEW_SNAPSHOT, base, "ok",
           env={"STYLEGAN_STORE_FAILPOINT": point}, kill_ok=True, check=recovers)
      for point in SNAPSHOT_POINTS],
    Case("kill-snapshot-before-index", NEW_SNAPSHOT, base, "ok",
         env={"STYLEGAN_STORE_FAILPOINT": "before-index"}, kill_ok=True,
         check=lambda d, r: (ok_run(d, "store", "fsck"), ok_run(d, "store", "show", "birds"))),
    *[Case(f"kill-tag-{point}", ("store", "tag", "cats:v2", "best"), base, "ok",
           env={"STYLEGAN_STORE_FAILPOINT": point}, kill_ok=True, check=fsck_then_consistent)
      for point in ("tag-before-write", "tag-after-write", "before-index")],
    *[Case(f"kill-untag-{point}", ("store", "untag", "cats", "best"), base, "ok",
           env={"STYLEGAN_STORE_FAILPOINT": point}, kill_ok=True, check=fsck_then_consistent)
      for point in ("untag-before-unlink", "untag-after-unlink")],
    *[Case(f"kill-gc-{point}", ("store", "gc"), racing(), "ok",
           env={"STYLEGAN_STORE_FAILPOINT": point}, kill_ok=True,
           check=lambda d, r: (writers_succeeded(d, r), ok_run(d, "store", "gc")))
      for point in ("gc-after-first-object", "gc-before-manifests")],
    *[Case(f"kill-checkout-{point}", ("store", "checkout", "cats:v1", "{d}/co", "--replace"),
           checked_out(), "ok", env={"STYLEGAN_STORE_FAILPOINT": point}, kill_ok=True,
           check=checkout_again("cats:v1", "co", "--replace"))
      for point in ("checkout-after-first-file", "checkout-before-swap",
                    "checkout-after-swap")],
    Case("kill-fsck-mid", ("store", "fsck"), damaged(V2, "binary"), "ok",
         env={"STYLEGAN_STORE_FAILPOINT": "fsck-after-first-move"}, kill_ok=True,
         check=lambda d, r: (ok_run(d, "store", "fsck"), quarantined(V2)(d, r))),
    # --- writers racing gc: nothing any of them stored is lost -------------------------
    Case("gc-racing-snapshots-and-tags", ("store", "gc"),
         racing(("birds", 6), ("fish", 6), ("tag", 6), ("gc", 6)), "ok", None,
         writers_succeeded),
    Case("snapshot-racing-gc", NEW_SNAPSHOT, racing(("gc", 15), ("tag", 4)), "ok", None,
         writers_succeeded),
    # --- names, tags, refs, lineage: validated where they enter -------------------------
    *[Case(f"name-{i}", ("store", "snapshot", "{d}/src4", "--name", name), sources, "usage",
           "invalid version name", no_store) for i, name in BAD_NAMES if "\x00" not in name],
    *[Case(f"name-{i}-list", ("store", "list", name), None, "usage", "invalid version name")
      for i, name in BAD_NAMES[:5]],
    # "--": a leading dash must reach the validator, not click's option parser
    *[Case(f"tag-name-{i}", ("store", "tag", "cats:v1", "--", tag), None, "usage",
           "invalid tag") for i, tag in BAD_TAGS],
    *[Case(f"snapshot-tag-{i}", ("store", "snapshot", "{d}/src4", "--name", "x", "--tag", tag),
           sources, "usage", "invalid tag", no_store) for i, tag in BAD_TAGS[:4]],
    *[Case(f"untag-{i}", ("store", "untag", "cats", "--", tag), None, "usage", "invalid tag")
      for i, tag in BAD_TAGS[4:7]],
    *[Case(f"ref-{i}", ("store", "show", ref), None, "usage", None) for i, ref in BAD_REFS],
    *[Case(f"checkout-ref-{i}", ("store", "checkout", ref, "{d}/co"), None, "usage", None,
           nothing_outside) for i, ref in BAD_REFS[:4]],
    *[Case(f"store-api-{i}", ("store", "show", ref), base, "usage", None)
      for i, ref in BAD_REFS[:2]],  # with a store too, the same refusal
    Case("untag-unknown", ("store", "untag", "cats", "nope"), base, "usage", "no tag 'nope'"),
    Case("tag-unknown-name", ("store", "tag", "birds:v1", "x"), base, "usage",
         "unknown version name",
         lambda d, r: not (d / "store/names/birds").exists() or pytest.fail("made a name")),
    *[Case(f"lineage-{i}", ("store", "snapshot", "{d}/src4", "--name", "x", "--lineage-json",
                            "{d}/lin.json"), lineage_file(body), "usage", message, no_store)
      for i, body, message in BAD_LINEAGE],
    Case("snapshot-source-missing", ("store", "snapshot", "{d}/nope", "--name", "x"), base,
         "usage", "not a directory"),
    Case("store-path-is-a-file", ("store", "--store", "{d}/src1/a.bin", "snapshot", "{d}/src4",
                                  "--name", "x"), base, "usage", "cannot create"),
    Case("store-path-missing-read", ("store", "--store", "{d}/nostore", "list"), base, "usage",
         "no version store"),
    # --- manifest paths that escape, or cannot be checked out ---------------------------
    *[Case(f"manifest-path-{i}", ("store", "checkout", "evil", "{d}/co"), hostile_manifest(p),
           "usage", None, nothing_outside, planted=("evil:v1",))
      for i, p in HOSTILE_MANIFESTS],
]


def _write_through(path: Path) -> None:
    """What root can do to a read-only hard-linked checkout: same size, mtime put back."""
    st = path.stat()
    path.chmod(0o644)
    with path.open("r+b") as f:
        f.write(b"A")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_store_fault(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)
