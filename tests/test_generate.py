"""generate's config and seeds: what a library caller passes is checked as the CLI checks it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from stylegan_ops.errors import StageError
from stylegan_ops.generate import MAX_SEED, MAX_SEEDS, GenerateConfig, parse_seeds, style_mix


@pytest.mark.parametrize(("text", "seeds"), [
    pytest.param("6600-6602", (6600, 6601, 6602), id="range"),
    pytest.param("1,5-6, 9", (1, 5, 6, 9), id="mix"),
    pytest.param(str(MAX_SEED), (MAX_SEED,), id="largest"),
])
def test_parse_seeds(text: str, seeds: tuple[int, ...]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(("text", "message"), [
    pytest.param(str(MAX_SEED + 1), "above", id="too-big"),
    pytest.param(f"0-{MAX_SEEDS}", "more than", id="too-many"),
    pytest.param("0-99999999999999", "more than", id="endless"),
    pytest.param("\u00b2", "bad seeds", id="superscript-digit"),
    pytest.param("\u0663", "bad seeds", id="arabic-digit"),
    pytest.param("-1", "bad seeds", id="negative"),
    pytest.param("", "bad seeds", id="empty"),
])
def test_parse_seeds_refuses(text: str, message: str) -> None:
    with pytest.raises(StageError, match=message):
        parse_seeds(text)


@pytest.mark.parametrize(("change", "message"), [
    pytest.param({"truncation_psi": math.nan}, "truncation-psi must be a finite", id="psi-nan"),
    pytest.param({"truncation_psi": -math.inf}, "truncation-psi must be a finite",
                 id="psi-inf"),
    pytest.param({"seeds": ()}, "seeds must be", id="no-seeds"),
    pytest.param({"seeds": (-1,)}, "seeds must be", id="negative-seed"),
    pytest.param({"out": "afile"}, "is a file; a directory is needed", id="out-a-file"),
])
def test_config_refuses(tmp_path: Path, change: dict[str, object], message: str) -> None:
    (tmp_path / "afile").write_text("x")
    args: dict[str, object] = {"network": tmp_path, "seeds": (1,), "out": tmp_path / "g"}
    if change.get("out") == "afile":
        change = {"out": tmp_path / "afile"}
    with pytest.raises(StageError, match=message):
        GenerateConfig(**{**args, **change})  # type: ignore[arg-type]


def test_style_mix_refuses_nan_before_loading_anything(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="truncation-psi"):
        style_mix(tmp_path / "no-network", (1,), (2,), (0,), math.nan, tmp_path / "out")
