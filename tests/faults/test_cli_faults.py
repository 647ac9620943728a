"""Every command's arguments, numbers, names and output paths: bad ones exit 2 with one line
naming the value, and nothing is left behind.

The table covers each command of ``stylegan-ops --help`` (and of its groups) with cheap
cases: values that click's types or a config refuse before any work, and output paths the
command cannot write (a file where a directory is needed, a directory where a file is
needed, a parent that is a file, a place nobody may write, names too long for the
filesystem). ``/sys`` stands in for "not writable": creating anything there fails even for
root, which the test containers run as.
"""

from __future__ import annotations

import io
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.faults.harness import Case, check_case, run

LONG = "x" * 300  # longer than any filesystem's NAME_MAX (255 bytes on Linux)
NEARLY = "y" * 250  # fits the filesystem, but not with the temp name an atomic write needs
NOWHERE = "/sys/stylegan-ops-fault-suite"  # exists on Linux; nobody may create files there


def files(d: Path) -> None:
    """``afile`` (a plain file), ``adir`` (a directory holding one), ``fifo``, ``cat.zip``."""
    (d / "afile").write_text("not a directory\n")
    (d / "adir").mkdir()
    (d / "adir" / "inside.txt").write_text("x\n")
    os.mkfifo(d / "fifo")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("cat/data.mdb", b"not an lmdb")
    (d / "cat.zip").write_bytes(buf.getvalue())
    (d / "nan.json").write_text('{"fid": NaN}')  # Python's json reads it; JSON has no NaN


def files_and_store(d: Path) -> None:
    """``files`` plus a store holding ``n:v1`` (``adir``), which every case must leave intact."""
    files(d)
    res = run(["store", "snapshot", str(d / "adir"), "--name", "n"], d)
    assert res.returncode == 0, res.stderr


def unchanged_fifo(d: Path, res: subprocess.CompletedProcess[str]) -> None:
    assert (d / "fifo").is_fifo(), "the command replaced a FIFO with a file"


def nothing_in(*names: str):  # type: ignore[no-untyped-def]
    def check(d: Path, res: subprocess.CompletedProcess[str]) -> None:
        for name in names:
            assert not (d / name).exists(), f"{name} was created"
    return check


NET = ("--network", "{d}/adir")
DATA = ("--data", "{d}/adir")
TRAIN = ("train", *DATA, "--out", "{d}/run", "--config", "small")
GEN = ("generate", *NET, "--seeds", "1", "--out", "{d}/gen")
MIX = ("style-mix", *NET, "--row-seeds", "1", "--col-seeds", "2", "--out", "{d}/mix")
DL = ("download", "http://127.0.0.1:9/x", "--retries", "0")  # port 9: nothing listens
EVAL = ("evaluate", *NET, *DATA, "--out", "{d}/eval")
PROJ = ("project", *NET, "--target", "{d}/adir/inside.txt", "--out", "{d}/proj")


def case(id: str, *argv: str, message: str | None = None, **kw: object) -> Case:
    return Case(id, tuple(argv), setup=files, message=message, **kw)  # type: ignore[arg-type]


def store_case(id: str, *argv: str, message: str | None = None, **kw: object) -> Case:
    return Case(id, ("store", *argv), setup=files_and_store, message=message,
                **kw)  # type: ignore[arg-type]


CASES = [
    # --- click's own usage errors: one line too, never click's "Usage:" block ---------------
    case("unknown-command", "no-such-command", message="no-such-command"),
    case("unknown-option", "info", "--bogus", message="--bogus"),
    case("missing-required", "generate", "--seeds", "1", message="--network"),
    case("unknown-subcommand", "store", "frobnicate", message="frobnicate"),
    case("prepare-no-source", "prepare", "lsun", message="LMDB_DIR"),
    case("bad-choice", *GEN, "--noise-mode", "loud", message="loud"),
    # --- non-finite numbers and zero divisors (the issue's own examples first) -----------
    case("psi-nan", *GEN, "--truncation-psi", "nan", message="'nan' is not a finite"),
    case("psi-inf", *GEN, "--truncation-psi", "inf", message="'inf' is not a finite"),
    case("psi-neg-inf", *GEN, "--truncation-psi", "-inf", message="'-inf' is not a finite"),
    case("psi-not-a-number", *GEN, "--truncation-psi", "half", message="'half' is not a number"),
    case("mix-psi-nan", *MIX, "--truncation-psi", "NaN", message="'NaN' is not a finite"),
    case("eval-psi-inf", *EVAL, "--truncation-psi", "Infinity",
         message="'Infinity' is not a finite"),
    case("total-kimg-nan", *TRAIN, "--total-kimg", "nan", message="--total-kimg"),
    case("total-kimg-inf", *TRAIN, "--total-kimg", "inf", message="--total-kimg"),
    case("total-kimg-zero", *TRAIN, "--total-kimg", "0", message="--total-kimg"),
    case("total-kimg-negative", *TRAIN, "--total-kimg", "-1", message="--total-kimg"),
    case("snapshot-ticks-zero", *TRAIN, "--snapshot-ticks", "0", message="--snapshot-ticks"),
    case("tick-kimg-zero", *TRAIN, "--tick-kimg", "0", message="--tick-kimg"),
    case("tick-kimg-nan", *TRAIN, "--tick-kimg", "nan", message="--tick-kimg"),
    case("gamma-nan", *TRAIN, "--gamma", "nan", message="--gamma"),
    case("gamma-negative", *TRAIN, "--gamma", "-1", message="--gamma"),
    case("batch-zero", *TRAIN, "--batch", "0", message="--batch"),
    case("batch-one", *TRAIN, "--batch", "1", message="--batch"),
    case("gpus-zero", *TRAIN, "--gpus", "0", message="--gpus"),
    case("train-seed-negative", *TRAIN, "--seed", "-1", message="--seed"),
    case("train-seed-huge", *TRAIN, "--seed", str(2**32), message="--seed"),
    case("devices-empty", *TRAIN, "--devices", ",", message="--devices"),
    case("devices-junk", *TRAIN, "--devices", "/tpu:x", message="/tpu:x"),
    case("eval-batch-zero", *EVAL, "--batch", "0", message="--batch"),
    case("project-steps-zero", *PROJ, "--steps", "0", message="--steps"),
    case("project-steps-huge", *PROJ, "--steps", "100001", message="--steps"),
    case("project-seed-negative", *PROJ, "--seed", "-1", message="--seed"),
    case("project-save-frames-past-steps", *PROJ, "--steps", "3", "--save-frames", "4",
         message="save-frames"),
    case("project-w-avg-one", *PROJ, "--w-avg-samples", "1", message="--w-avg-samples"),
    case("project-no-target", *PROJ[:3], "--target", "{d}/nope.png", *PROJ[5:],
         message="nope.png"),
    case("eval-num-images-one", *EVAL, "--num-images", "1", message="--num-images"),
    case("eval-seed-negative", *EVAL, "--seed", "-1", message="--seed"),
    case("eval-metrics-empty", *EVAL, "--metrics", "", message="metric"),
    case("seeds-huge", *GEN, "--seeds", str(2**32), message=str(2**32)),
    case("seeds-endless-range", *GEN, "--seeds", "0-999999999", message="0-999999999"),
    case("seeds-backwards", *GEN, "--seeds", "5-1", message="5-1"),
    case("seeds-junk", *GEN, "--seeds", "a,b", message="a,b"),
    case("col-styles-junk", *MIX, "--col-styles", "x", message="x"),
    case("download-timeout-nan", *DL, "--out", "{d}/f",
         "--timeout", "nan", message="--timeout"),
    case("download-backoff-inf", *DL, "--out", "{d}/f",
         "--backoff", "inf", message="--backoff"),
    case("download-retries-negative", *DL, "--out", "{d}/f",
         "--retries", "-1", message="--retries"),
    case("prepare-resolution-48", "prepare", "lsun", "{d}/adir", "--out", "{d}/ds",
         "--resolution", "48", message="48"),
    case("prepare-resolution-zero", "prepare", "images", "{d}/adir", "--out", "{d}/ds",
         "--resolution", "0", message="got 0"),
    case("prepare-max-images-zero", "prepare", "lsun", "{d}/adir", "--out", "{d}/ds",
         "--max-images", "0", message="--max-images"),
    case("prepare-workers-zero", "prepare", "images", "{d}/adir", "--out", "{d}/ds",
         "--workers", "0", message="--workers"),
    case("prepare-shard-junk", "prepare", "lsun", "{d}/adir", "--out", "{d}/ds",
         "--shard", "3/2", message="3/2"),
    case("sample-count-zero", "make-sample-lmdb", "--out", "{d}/s", "--count", "0",
         message="--count"),
    case("sample-bad-negative", "make-sample-lmdb", "--out", "{d}/s", "--bad", "-1",
         message="--bad"),
    case("sample-workers-zero", "make-sample-lmdb", "--out", "{d}/s", "--workers", "0",
         message="--workers"),
    case("sample-seed-negative", "make-sample-lmdb", "--out", "{d}/s", "--seed", "-1",
         message="--seed"),
    case("inspect-limit-zero", "inspect", "{d}/adir", "--limit", "0", message="--limit"),
    case("serve-port-huge", "store", "serve", "--port", "70000", message="70000"),
    case("gc-extra-argument", "store", "gc", "now", message="now"),
    store_case("fsck-unknown-option", "fsck", "--force", message="--force"),
    case("fsck-store-is-file", "store", "--store", "{d}/afile", "fsck", message="afile"),
    case("graph-format", "graph", "stylegan2_train", "--format", "png", message="png"),
    # --- names, tags and refs ------------------------------------------------------------
    store_case("snapshot-name-space", "snapshot", "{d}/adir", "--name", "bad name",
         message="'bad name'"),
    store_case("snapshot-name-dotdot", "snapshot", "{d}/adir", "--name", "../up",
         message="'../up'"),
    store_case("snapshot-name-lookalike", "snapshot", "{d}/adir", "--name", "lsun-c\u0430t",
         message="invalid version name"),
    store_case("snapshot-tag-latest", "snapshot", "{d}/adir", "--name", "n", "--tag",
         "latest", message="'latest'"),
    store_case("snapshot-tag-slash", "snapshot", "{d}/adir", "--name", "n", "--tag", "a/b",
         message="'a/b'"),
    store_case("show-ref-bad-id", "show", "n@zz", message="n@zz"),
    store_case("show-ref-newline", "show", "n\n:v1", message="invalid version name"),
    store_case("tag-bad-tag", "tag", "n:v1", "v2", message="'v2'"),
    store_case("untag-bad-name", "untag", "-n", "t", message="'-n'"),
    store_case("log-bad-name", "log", ".hidden", message="'.hidden'"),
    store_case("list-bad-name", "list", "a b", message="'a b'"),
    store_case("diff-bad-ref", "diff", "n:v1", "n::", message="n::"),
    store_case("pull-bad-ref", "pull", "http://127.0.0.1:9", "n@xyz", message="n@xyz"),
    store_case("verify-bad-ref", "verify", "/etc/passwd", message="/etc/passwd"),
    store_case("checkout-bad-ref", "checkout", "a b", "{d}/co", message="'a b'"),
    case("fetch-weights-unknown", "fetch-weights", "inceptoin", message="inceptoin"),
    case("fetch-weights-url-junk", "fetch-weights", "inception", "--url", "notaurl",
         message="'notaurl'"),
    case("fetch-weights-sha-junk", "fetch-weights", "inception", "--sha256", "xyz",
         message="'xyz'"),
    case("download-url-junk", "download", "notaurl", "--out", "{d}/f", message="'notaurl'"),
    case("download-url-bad-ipv6", "download", "http://[::1", "--out", "{d}/f",
         message="http://[::1"),
    case("graph-unknown-dag", "graph", "no_such_dag", "--dags", "{d}/adir",
         message="no_such_dag"),
    # --- output paths the command cannot write ----------------------------------------------
    case("download-out-is-dir", *DL, "--out", "{d}/adir",
         message="adir"),
    case("download-out-parent-file", *DL, "--out",
         "{d}/afile/x.zip", message="afile"),
    case("download-out-fifo", *DL, "--out", "{d}/fifo",
         message="fifo", check=unchanged_fifo),
    case("download-out-empty", *DL, "--out", "",
         message="''"),
    case("download-out-too-long", *DL, "--out",
         f"{{d}}/{LONG}", message="longer than"),
    case("unzip-out-is-file", "unzip", "{d}/cat.zip", "--out", "{d}/afile", message="afile"),
    case("unzip-out-parent-file", "unzip", "{d}/cat.zip", "--out", "{d}/afile/x",
         message="afile"),
    case("unzip-out-not-writable", "unzip", "{d}/cat.zip", "--out", NOWHERE,
         message="/sys"),
    case("prepare-out-is-file", "prepare", "lsun", "{d}/adir", "--out", "{d}/afile",
         message="afile"),
    case("prepare-out-parent-file", "prepare", "images", "{d}/adir", "--out",
         "{d}/afile/ds", message="afile"),
    case("merge-out-parent-file", "prepare", "merge", "{d}/adir", "--out", "{d}/afile/ds",
         message="afile"),
    case("sample-out-parent-file", "make-sample-lmdb", "--out", "{d}/afile/s", "--count", "2",
         message="afile", check=nothing_in("afile/s")),
    case("sample-out-not-writable", "make-sample-lmdb", "--out", NOWHERE, "--count", "2",
         "--workers", "1", message="/sys"),
    case("sample-out-too-long", "make-sample-lmdb", "--out", f"{{d}}/{LONG}", "--count", "2",
         message="longer than"),
    case("sample-out-nearly-too-long", "make-sample-lmdb", "--out", f"{{d}}/{NEARLY}",
         "--count", "2", message="too long"),
    case("train-out-is-file", *TRAIN[:-4], "--out", "{d}/afile", message="afile"),
    case("train-out-parent-file", *TRAIN[:-4], "--out", "{d}/afile/run", message="afile"),
    case("generate-out-is-file", *GEN[:-2], "--out", "{d}/afile", message="afile"),
    case("generate-out-parent-file", *GEN[:-2], "--out", "{d}/afile/g", message="afile"),
    case("generate-out-too-long", *GEN[:-2], "--out", f"{{d}}/adir/{LONG}/g",
         message="longer than"),
    case("mix-out-is-file", *MIX[:-2], "--out", "{d}/afile", message="afile"),
    case("eval-out-is-file", *EVAL[:-2], "--out", "{d}/afile", message="afile"),
    case("eval-out-parent-file", *EVAL[:-2], "--out", "{d}/afile/e", message="afile"),
    case("project-out-is-file", *PROJ[:-2], "--out", "{d}/afile", message="afile"),
    case("project-out-parent-file", *PROJ[:-2], "--out", "{d}/afile/p", message="afile"),
    case("import-out-is-file", "import-pkl", "{d}/afile", "--out", "{d}/afile",
         message="afile"),
    case("import-out-parent-file", "import-pkl", "{d}/afile", "--out", "{d}/afile/x",
         message="afile"),
    case("graph-out-is-dir", "graph", "stylegan2_train", "--out", "{d}/adir",
         message="adir"),
    case("graph-out-parent-file", "graph", "stylegan2_train", "--out", "{d}/afile/g.svg",
         message="afile"),
    case("graph-out-fifo", "graph", "stylegan2_train", "--out", "{d}/fifo", message="fifo",
         check=unchanged_fifo),
    case("fetch-weights-cache-not-writable", "fetch-weights", "inception", "--from",
         "{d}/afile", "--accept-unpinned", env={"STYLEGAN_CACHE": NOWHERE}, message="/sys"),
    case("fetch-weights-from-dir", "fetch-weights", "inception", "--from", "{d}/adir",
         "--accept-unpinned", env={"STYLEGAN_CACHE": "cache"}, message="adir"),
    case("snapshot-store-not-writable", "store", "--store", NOWHERE, "snapshot", "{d}/adir",
         "--name", "n", message="/sys"),
    case("snapshot-store-is-file", "store", "--store", "{d}/afile", "snapshot", "{d}/adir",
         "--name", "n", message="afile"),
    store_case("checkout-into-file", "checkout", "n:v1", "{d}/afile", message="afile"),
    # --- inputs of the wrong kind --------------------------------------------------------------
    case("unzip-archive-is-dir", "unzip", "{d}/adir", "--out", "{d}/x", message="adir",
         check=nothing_in("x")),
    case("inspect-a-file", "inspect", "{d}/afile", message="afile"),
    case("inspect-missing", "inspect", "{d}/nothing-here", message="nothing-here"),
    case("import-pkl-a-dir", "import-pkl", "{d}/adir", "--out", "{d}/x", message="adir",
         check=nothing_in("x")),
    store_case("snapshot-of-a-file", "snapshot", "{d}/afile", "--name", "n",
         message="afile"),
    store_case("lineage-json-a-dir", "snapshot", "{d}/adir", "--name", "n",
         "--lineage-json", "{d}/adir", message="adir"),
    store_case("meta-json-nan", "snapshot", "{d}/adir", "--name", "n", "--meta-json",
               "{d}/nan.json", message="NaN"),
    # --- and a command that works still works -------------------------------------------------
    case("info-ok", "info", expect="ok", message="stylegan_ops"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cli_fault(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)


def test_every_command_has_a_case() -> None:
    """A new command (or sub-command) cannot be added without a row in this table."""
    import click

    from stylegan_ops.cli import main

    def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
        found: set[tuple[str, ...]] = set()
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                found |= commands(cmd, (*prefix, name))
            else:
                found.add((*prefix, name))
        return found

    covered = set()
    for c in CASES:
        words = [a for a in c.argv if not a.startswith("-") and "{d}" not in a]
        argv = list(c.argv)
        if argv[:1] == ["store"] and "--store" in argv:  # the group's own option
            i = argv.index("--store")
            words = ["store", *[a for a in argv[i + 2:] if not a.startswith("-")]]
        covered |= {tuple(words[:n]) for n in (1, 2)}
    missing = sorted(" ".join(c) for c in commands(main) if c not in covered)
    assert not missing, f"commands without a fault case: {missing}"
