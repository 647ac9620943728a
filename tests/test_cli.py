"""The CLI's shared machinery: its validating types, and the one place where any failure
becomes one line (exit 2 for the user's input and paths, exit 1 for a bug)."""

from __future__ import annotations

import errno
import math
import os
import re
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from stylegan_ops import cli as cli_mod
from stylegan_ops.cli import DEBUG_ENV, DeviceList, FiniteFloat, OutPath, main
from stylegan_ops.data import sample
from stylegan_ops.errors import StageError


def convert(ptype: click.ParamType, value: str) -> Any:
    return ptype.convert(value, None, None)


@pytest.mark.parametrize(("ptype", "value", "want"), [
    pytest.param(FiniteFloat(), "0.5", 0.5, id="plain"),
    pytest.param(FiniteFloat(), "-3", -3.0, id="negative"),
    pytest.param(FiniteFloat(), "1e3", 1000.0, id="exponent"),
    pytest.param(FiniteFloat(min=0, min_open=True), "1e-9", 1e-9, id="just-above-open-min"),
    pytest.param(FiniteFloat(min=0), "0", 0.0, id="closed-min"),
    pytest.param(FiniteFloat(max=1), "1", 1.0, id="closed-max"),
])
def test_finite_float_takes(ptype: FiniteFloat, value: str, want: float) -> None:
    assert convert(ptype, value) == want


@pytest.mark.parametrize(("ptype", "value", "message"), [
    pytest.param(FiniteFloat(), "nan", "'nan' is not a finite number", id="nan"),
    pytest.param(FiniteFloat(), "NaN", "'NaN' is not a finite number", id="NaN"),
    pytest.param(FiniteFloat(), "inf", "'inf' is not a finite number", id="inf"),
    pytest.param(FiniteFloat(), "-Infinity", "not a finite number", id="-Infinity"),
    pytest.param(FiniteFloat(), "1e999", "not a finite number", id="overflow"),
    pytest.param(FiniteFloat(), "half", "'half' is not a number", id="word"),
    pytest.param(FiniteFloat(), "", "'' is not a number", id="empty"),
    pytest.param(FiniteFloat(min=0, min_open=True), "0", "must be > 0", id="open-min"),
    pytest.param(FiniteFloat(min=0, min_open=True), "-0.0", "must be > 0", id="negative-zero"),
    pytest.param(FiniteFloat(min=0), "-1", "must be >= 0", id="closed-min"),
    pytest.param(FiniteFloat(min=0, max=1, max_open=True), "1", "must be >= 0 and < 1",
                 id="open-max"),
])
def test_finite_float_refuses(ptype: FiniteFloat, value: str, message: str) -> None:
    with pytest.raises(click.BadParameter, match=re.escape(message)):
        convert(ptype, value)


def test_no_float_option_of_any_command_takes_nan() -> None:
    """Every float option of every command uses FiniteFloat: none can take NaN or inf."""
    def walk(group: click.Group) -> list[tuple[str, click.Parameter]]:
        found = []
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                found += [(f"{name} {n}", p) for n, p in walk(cmd)]
            else:
                found += [(name, p) for p in cmd.params]
        return found

    floats = [(cmd, p) for cmd, p in walk(main)
              if isinstance(p.type, click.types.FloatParamType | FiniteFloat)]
    assert floats, "the walk found no float options at all"
    for cmd, param in floats:
        for bad in ("nan", "inf", "-inf"):
            with pytest.raises(click.BadParameter):
                param.type.convert(bad, param, None)
            assert not isinstance(param.type, click.types.FloatParamType), (cmd, param.name)


@pytest.mark.parametrize(("value", "ok"), [
    pytest.param("/gpu:0,/gpu:1", True, id="gpus"),
    pytest.param("/cpu:0", True, id="cpu"),
    pytest.param("/job:worker/replica:0/task:1/device:GPU:0", True, id="full-name"),
    pytest.param(",", False, id="empty-items"),
    pytest.param("/gpu:0,/gpu:0", False, id="repeat"),
    pytest.param("gpu0", False, id="junk"),
    pytest.param("/tpu:0", False, id="tpu"),
])
def test_device_list(value: str, ok: bool) -> None:
    if ok:
        assert convert(DeviceList(), value) == tuple(value.split(","))
    else:
        with pytest.raises(click.BadParameter):
            convert(DeviceList(), value)


def test_out_path_refuses_what_root_could_otherwise_write(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """A directory nobody may write: refused up front (as root os.access says yes, so the
    fault suite reaches the same case through the OSError handler instead)."""
    (tmp_path / "ro").mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith("ro")
                        else real(p, mode))
    with pytest.raises(click.BadParameter, match="ro is not writable"):
        convert(OutPath("dir"), str(tmp_path / "ro" / "new"))
    with pytest.raises(click.BadParameter, match="ro is not writable"):
        convert(OutPath("dir"), str(tmp_path / "ro"))  # an existing output dir written in
    assert convert(OutPath("file"), str(tmp_path / "f")) == tmp_path / "f"


@pytest.mark.parametrize(("kind", "rel", "message"), [
    pytest.param("file", "adir", "is a directory; a file path is needed", id="file-is-dir"),
    pytest.param("dir", "afile", "is a file; a directory is needed", id="dir-is-file"),
    pytest.param("file", "afile/x", "afile is a file, so", id="parent-file"),
    pytest.param("dir", "afile/x/y", "afile is a file, so", id="grandparent-file"),
    pytest.param("file", "fifo", "not a regular file", id="fifo"),
    pytest.param("dir", "x" * 256, "longer than the filesystem's", id="name-too-long"),
    pytest.param("file", "y" * 240, "name too long for an output", id="no-room-for-temp"),
    pytest.param("dir", "adir/" + "z" * 300 + "/x", "longer than", id="middle-too-long"),
])
def test_out_path_refuses(tmp_path: Path, kind: str, rel: str, message: str) -> None:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(click.BadParameter, match=re.escape(message)):
        convert(OutPath(kind), str(tmp_path / rel))  # type: ignore[arg-type]


def test_out_path_takes_new_and_existing(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    assert convert(OutPath("dir"), str(tmp_path / "adir")) == tmp_path / "adir"
    assert convert(OutPath("dir"), str(tmp_path / "new" / "deeper")) == tmp_path / "new/deeper"
    assert convert(OutPath("file"), str(tmp_path / "afile")) == tmp_path / "afile"
    with pytest.raises(click.BadParameter, match="not a usable path"):
        convert(OutPath("file"), "")


# --- the one place failures end ----------------------------------------------------------

def run_sample(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fault: BaseException | None,
               result: Any = None, *options: str) -> Any:
    """``make-sample-lmdb`` with its stage replaced by one that raises ``fault``."""
    def fake(cfg: Any) -> Any:
        if fault is not None:
            raise fault
        return result

    monkeypatch.setattr(sample, "run", fake)
    return CliRunner().invoke(main, [*options, "make-sample-lmdb", "--out",
                                     str(tmp_path / "lmdb")], catch_exceptions=False)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "stylegan-ops:" in line]


@pytest.mark.parametrize(("fault", "message"), [
    pytest.param(OSError(errno.ENOSPC, "No space left on device"),
                 "make-sample-lmdb --out {out}: No space left on device (free space or use another "
                 "--out)", id="enospc-no-path"),
    pytest.param(PermissionError(errno.EACCES, "Permission denied", "/data/x"),
                 "/data/x: Permission denied", id="eacces"),
    pytest.param(OSError(errno.EROFS, "Read-only file system", "/ro/x"),
                 "/ro/x: Read-only file system", id="erofs"),
    pytest.param(IsADirectoryError(errno.EISDIR, "Is a directory", "/d"), "/d: Is a directory",
                 id="eisdir"),
    pytest.param(OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"),
                 "/a -> /b: Invalid cross-device link", id="two-paths"),
    pytest.param(OSError(errno.ENAMETOOLONG, "File name too long", "/x\ny"),
                 "/x\\ny: File name too long (shorten the path)", id="newline-in-path"),
    pytest.param(StageError("bad thing\nsecond line"), "bad thing second line",
                 id="stage-error-multiline"),
])
def test_user_errors_are_one_line_exit_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         fault: BaseException, message: str) -> None:
    res = run_sample(monkeypatch, tmp_path, fault)
    assert res.exit_code == 2
    assert error_lines(res.stderr) == [
        f"stylegan-ops: error: {message.format(out=tmp_path / 'lmdb')}"], res.stderr
    assert "Traceback" not in res.stderr


def test_internal_error_is_one_line_exit_1_with_a_crash_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR is read again
    res = run_sample(monkeypatch, tmp_path, KeyError("shard"))
    assert res.exit_code == 1
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert lines[0].startswith("stylegan-ops: internal error: KeyError: 'shard' at test_cli.py:")
    crash = Path(re.search(r"traceback in (\S+);", lines[0])[1])  # type: ignore[index]
    assert crash.parent == tmp_path and "Traceback" in crash.read_text()
    assert "KeyError: 'shard'" in crash.read_text()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_lets_the_traceback_through(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          how: str) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    if how == "env":
        monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(KeyError, match="shard"):
        run_sample(monkeypatch, tmp_path, KeyError("shard"), None,
                   *(["--debug"] if how == "flag" else []))


def test_a_stage_error_is_still_exit_2_under_debug(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    res = run_sample(monkeypatch, tmp_path, StageError("nope"), None, "--debug")
    assert res.exit_code == 2 and error_lines(res.stderr) == ["stylegan-ops: error: nope"]


class _Result:
    def __init__(self, data: Any) -> None:
        self.data = data

    def to_dict(self) -> Any:
        return self.data


@pytest.mark.parametrize(("data", "field"), [
    pytest.param({"fid": math.nan}, "fid", id="nan"),
    pytest.param({"results": {"swd": {"swd16": math.inf}}}, "results.swd.swd16", id="nested"),
    pytest.param({"rows": [1.0, -math.inf]}, "rows.1", id="in-a-list"),
])
def test_emit_never_prints_nan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: Any,
                               field: str) -> None:
    res = run_sample(monkeypatch, tmp_path, None, _Result(data))
    assert res.exit_code == 2 and res.stdout == ""
    assert error_lines(res.stderr) == [
        f"stylegan-ops: error: field {field} is not a finite number; refusing to write it "
        f"as JSON"]


def test_usage_errors_name_the_command_and_point_at_help() -> None:
    res = CliRunner().invoke(main, ["store", "checkout", "--frob"], catch_exceptions=False)
    assert res.exit_code == 2
    assert error_lines(res.stderr) == ["stylegan-ops: error: store checkout: No such option "
                                       "'--frob'. (see stylegan-ops store checkout --help)"]
    assert "Usage:" not in res.stderr


def test_help_and_version_still_exit_0() -> None:
    for args in (["--help"], ["--version"], ["store", "--help"], ["train", "--help"]):
        res = CliRunner().invoke(main, args, catch_exceptions=False)
        assert res.exit_code == 0 and res.stdout, args


def test_the_handler_is_the_one_the_module_uses() -> None:
    assert isinstance(main, cli_mod._Main)
