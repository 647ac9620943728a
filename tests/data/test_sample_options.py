"""The sample's palette and offset options: disjoint colours, disjoint images, and the
default output unchanged byte for byte (dataset versions and caches depend on it)."""

from __future__ import annotations

import hashlib
import io
import itertools
from pathlib import Path

import lmdb
import numpy as np
import pytest
from PIL import Image

from stylegan_ops.data import sample
from tests.conftest import cli

# Computed with the code before palettes and offsets existed (the commit that added them
# must not move these): sha256 of data.mdb, and of every (key, value) pair in key order,
# which stays put even if a newer liblmdb lays pages out differently.
BEFORE = {
    "count6": ("d349935394c34d4c19bcd113796feac632a97d881fda65de870bb8e68e60dc3b",
               "e1c06dc966a7435626674a8b71637d58289be8bdb314b81c08c4e58ec6c4e94f"),
    "seed3-bad3": ("e512c86fdaf2f47e1308e42f4f9439bb9d90c32663ed129966e3939945ad9817",
                   "f4ec3b02b975750db164b9525e4439d65b2d5c3a7ec6a99040dbd70388e7235f"),
}


def records(path: Path) -> list[tuple[bytes, bytes]]:
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    finally:
        env.close()


def pixels(value: bytes) -> bytes:
    return np.asarray(Image.open(io.BytesIO(value)).convert("RGB")).tobytes()


def make(out: Path, *options: str | int) -> list[tuple[bytes, bytes]]:
    res = cli("make-sample-lmdb", "--out", out, "--workers", 2, *options)
    assert res.exit_code == 0, res.stderr
    return records(out)


@pytest.mark.parametrize("options, expected", [
    pytest.param(("--count", 6), BEFORE["count6"], id="count6"),
    pytest.param(("--count", 6, "--palette", "default", "--offset", 0), BEFORE["count6"],
                 id="count6-explicit-defaults"),
    pytest.param(("--count", 10, "--bad", 3, "--seed", 3), BEFORE["seed3-bad3"],
                 id="seed3-bad3"),
])
def test_default_output_is_byte_identical_to_before(tmp_path: Path, options: tuple[str | int],
                                                    expected: tuple[str, str]) -> None:
    content = hashlib.sha256()
    for key, value in make(tmp_path / "s", *options):
        content.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
    file_digest = hashlib.sha256((tmp_path / "s" / "data.mdb").read_bytes()).hexdigest()
    assert (file_digest, content.hexdigest()) == expected


def test_palettes_share_no_fur_or_eye_colour() -> None:
    """Two jittered fur colours can only coincide if every channel is within 2 * jitter."""
    default, alt = sample.PALETTES["default"], sample.PALETTES["alt"]
    for a, b in itertools.product(default.fur, alt.fur):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) > 2 * sample.FUR_JITTER, (a, b)
    assert not set(default.eyes) & set(alt.eyes)


def in_fur(img: np.ndarray, palette: sample.Palette) -> np.ndarray:
    margin = sample.FUR_JITTER + 18  # + grain (sigma 6, 3 sigma) and WebP-free blur
    hit = np.zeros(img.shape[:2], bool)
    for colour in palette.fur:
        hit |= (np.abs(img - np.array(colour)) <= margin).all(-1)
    return hit


@pytest.mark.parametrize("index", [pytest.param(i, id=f"image{i}") for i in (0, 1, 2)])
def test_alt_palette_recolours_the_cat_only(index: int) -> None:
    """Same draws, so the same cat and background; the pixels that change between the two
    palettes are the fur, and there each image is in its own palette's colours only."""
    drawn = {name: np.asarray(sample.draw_cat(np.random.default_rng([0, index]), palette),
                              np.int16) for name, palette in sample.PALETTES.items()}
    default, alt = drawn["default"], drawn["alt"]
    assert default.shape == alt.shape
    changed = np.abs(default - alt).sum(-1) > 60
    assert 0.2 < changed.mean() < 0.9  # the cat, not the background
    for own, other in (("default", "alt"), ("alt", "default")):
        assert in_fur(drawn[own], sample.PALETTES[own])[changed].mean() > 0.85
        assert in_fur(drawn[own], sample.PALETTES[other])[changed].mean() < 0.05


def test_offsets_slice_one_stream_and_disjoint_ranges_share_no_image(tmp_path: Path) -> None:
    whole = make(tmp_path / "whole", "--count", 6, "--bad", 0)
    tail = make(tmp_path / "tail", "--count", 3, "--bad", 0, "--offset", 3)
    # the same keys and bytes as images 3..5 of the longer sample: one stream, sliced
    keys = {sample.lsun_key(0, i) for i in range(3, 6)}
    assert len(tail) == 3 and set(tail) == {r for r in whole if r[0] in keys}
    rest = make(tmp_path / "rest", "--count", 6, "--bad", 0, "--offset", 6)
    alt = make(tmp_path / "alt", "--count", 6, "--bad", 0, "--offset", 6, "--palette", "alt")
    images = [{pixels(v) for _, v in part} for part in (whole, rest, alt)]
    assert all(len(part) == 6 for part in images)  # no repeat inside a part either
    for a, b in itertools.combinations(images, 2):
        assert not a & b
    assert not {k for k, _ in whole} & {k for k, _ in rest}


@pytest.mark.parametrize("options, message", [
    pytest.param(("--palette", "blue"), "palette must be one of default, alt, got 'blue'",
                 id="unknown-palette"),
    pytest.param(("--offset", -1), "'--offset': -1 is not in the range", id="negative-offset"),
    pytest.param(("--offset", sample.MAX_COUNT), f"offset must be in 0..{sample.MAX_COUNT - 2} "
                 f"for count 2, got {sample.MAX_COUNT}", id="offset-past-max"),
    pytest.param(("--offset", "x"), "'x' is not a valid integer", id="offset-not-int"),
])
def test_bad_option_is_one_line_exit_2(tmp_path: Path, options: tuple[str | int],
                                       message: str) -> None:
    res = cli("make-sample-lmdb", "--out", tmp_path / "s", "--count", 2, *options)
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1 and not (tmp_path / "s").exists()
