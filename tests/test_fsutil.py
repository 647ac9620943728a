"""fsutil: strict JSON both ways, and failures of atomic writes name the target."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from stylegan_ops.errors import StageError
from stylegan_ops.fsutil import atomic_dir, check_output, dump_json, read_json, write_atomic


@pytest.mark.parametrize(("obj", "field"), [
    pytest.param({"a": math.nan}, "a", id="nan"),
    pytest.param({"a": {"b": [0.0, math.inf]}}, "a.b.1", id="nested-inf"),
    pytest.param([-math.inf], "0", id="top-list"),
    pytest.param(math.nan, "(top level)", id="bare"),
])
def test_dump_json_refuses_non_finite_numbers(obj: object, field: str) -> None:
    with pytest.raises(StageError, match=re.escape(f"field {field} is not a finite number")):
        dump_json(obj)


@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": Infinity}', "[-Infinity]"])
def test_read_json_refuses_what_json_does_not_have(tmp_path: Path, text: str) -> None:
    (tmp_path / "f.json").write_text(text)
    with pytest.raises(StageError, match=r"not valid JSON: .*f\.json"):
        read_json(tmp_path / "f.json")


def test_read_json_of_a_directory_names_it(tmp_path: Path) -> None:
    with pytest.raises(StageError, match=f"cannot read: {tmp_path}"):
        read_json(tmp_path)


def test_write_atomic_failures_name_the_target(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StageError, match=f"cannot write {tmp_path}/afile/out: Not a directory"):
        write_atomic(tmp_path / "afile" / "out", b"data")
    (tmp_path / "adir").mkdir()
    with pytest.raises(StageError, match=f"cannot write {tmp_path}/adir: Is a directory"):
        write_atomic(tmp_path / "adir", b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]  # no temp left


def test_atomic_dir_under_a_file_names_the_output(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StageError, match=f"cannot create {tmp_path}/afile/out"), \
            atomic_dir(tmp_path / "afile" / "out"):
        pass


def test_check_output_for_library_callers(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    assert check_output(tmp_path / "new", "dir") == tmp_path / "new"
    with pytest.raises(StageError, match="is a file; a directory is needed"):
        check_output(tmp_path / "afile", "dir")
