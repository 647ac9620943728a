"""Unzip: streaming extraction, zip-slip refused, atomic output, no-op rerun."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from stylegan_ops.data.unzip import UnzipConfig, run
from stylegan_ops.errors import StageError
from tests.conftest import cli


def make_zip(path: Path, entries: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def test_extracts_tree_and_rerun_is_a_no_op(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "cat.zip", {"cat/data.mdb": b"d" * 300000,
                                              "cat/lock.mdb": b"l"})
    result = run(UnzipConfig(archive, tmp_path / "out"))
    assert (tmp_path / "out/cat/data.mdb").read_bytes() == b"d" * 300000
    assert result.files == 2 and not result.reused
    assert run(UnzipConfig(archive, tmp_path / "out")).reused


@pytest.mark.parametrize("name", [
    pytest.param("../evil", id="parent"),
    pytest.param("cat/../../evil", id="nested-parent"),
    pytest.param("/etc/evil", id="absolute"),
    pytest.param("..\\evil", id="backslash"),
    pytest.param("C:/evil", id="drive"),
])
def test_zip_slip_is_refused(tmp_path: Path, name: str) -> None:
    archive = make_zip(tmp_path / "bad.zip", {"ok.txt": b"x", name: b"pwned"})
    res = cli("unzip", archive, "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert "escapes the output directory" in res.stderr
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil").exists()


def test_symlink_entries_are_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bad.zip", {"ok.txt": b"x"}, symlink="link")
    with pytest.raises(StageError, match="symbolic link"):
        run(UnzipConfig(archive, tmp_path / "out"))


def test_corrupt_member_leaves_nothing_behind(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "c.zip", {"a.bin": bytes(range(256)) * 4000})
    raw = bytearray(archive.read_bytes())
    raw[200] ^= 0xFF  # inside the compressed data of the only member
    archive.write_bytes(bytes(raw))
    with pytest.raises(StageError, match="cannot extract"):
        run(UnzipConfig(archive, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["c.zip"]


@pytest.mark.parametrize("content", [None, b"not a zip"], ids=["missing", "not-zip"])
def test_bad_archive_exits_2(tmp_path: Path, content: bytes | None) -> None:
    archive = tmp_path / "x.zip"
    if content is not None:
        archive.write_bytes(content)
    res = cli("unzip", archive, "--out", tmp_path / "out")
    assert res.exit_code == 2 and str(archive) in res.stderr


def test_existing_unrelated_output_is_not_touched(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"f": b"1"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out/mine").write_text("keep")
    res = cli("unzip", archive, "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert (tmp_path / "out/mine").read_text() == "keep"
