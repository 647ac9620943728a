"""project: a generated image is found again, outputs describe themselves and are
deterministic, bad targets and a missing LPIPS file are refused before anything is written."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from stylegan_ops import project as project_mod
from stylegan_ops.data.extract import decode_square
from stylegan_ops.errors import StageError
from stylegan_ops.generate import _png, load_generator, synthesize
from stylegan_ops.metrics import detectors
from stylegan_ops.networks.generator import Generator
from stylegan_ops.networks.presets import preset
from stylegan_ops.networks.snapshot import Snapshot
from tests.conftest import cli
from tests.netfiles import vgg_pickle

STEPS = 200


@pytest.fixture(scope="session")
def net(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small random network whose images mostly lie inside [-1, 1] (its ToRGB weights
    scaled down: at initialisation a third of the pixels would clip, and a clipped target
    has no exact w), two of its images, and a stand-in LPIPS file."""
    root = tmp_path_factory.mktemp("project")
    g = Generator(preset("small"))
    arrays = {k: v.numpy() * (0.3 if "ToRGB" in k and k.endswith("/weight") else 1.0)
              for k, v in g.params.items()}
    Snapshot(preset("small"), arrays, {}, arrays, {"kimg": 0}, {}).save(root / "net")
    G = load_generator(root / "net")  # noqa: N806
    targets = root / "targets"
    targets.mkdir()
    for seed in (7, 8):  # z from the seed, and so w = mapping(z): a known w
        (targets / f"seed{seed}.png").write_bytes(_png(synthesize(G, seed, 1.0, "const")))
    return {"net": root / "net", "targets": targets,
            "lpips": vgg_pickle(root / "vgg16_zhang_perceptual.pkl", "lpips")}


@pytest.fixture()
def lpips_installed(net: dict[str, Path], tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("STYLEGAN_CACHE", str(tmp_path / "cache"))
    res = cli("fetch-weights", "lpips", "--from", net["lpips"], "--accept-unpinned")
    assert res.exit_code == 0, res.stderr
    yield


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), np.float64)


def last_json(stdout: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(stdout.splitlines()[-1])
    return out


def test_a_generated_image_is_found_again(net: dict[str, Path], lpips_installed: None,
                                          tmp_path: Path) -> None:
    target = net["targets"] / "seed7.png"
    res = cli("project", "--network", net["net"], "--target", target, "--steps", STEPS,
              "--save-frames", 4, "--out", tmp_path / "p")
    assert res.exit_code == 0, res.stderr
    out = tmp_path / "p"
    assert sorted(p.name for p in out.iterdir()) == [
        "frames.png", "progress.jsonl", "proj.png", "projected_w.npz", "projection.json",
        "target.png"]
    lpips = detectors.load("lpips", net["lpips"])
    other = pixels(net["targets"] / "seed8.png")
    goal, proj = pixels(out / "target.png"), pixels(out / "proj.png")
    assert np.array_equal(goal, pixels(target))  # 32 px already: nothing cropped or resized
    found = float(lpips.distance(goal[None], proj[None])[0])
    apart = float(lpips.distance(goal[None], other[None])[0])
    rows = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    start = rows[0]["distance"]  # at the mean w with random noise maps
    assert found < 0.25 * start and found < 0.25 * apart, (found, start, apart)
    rmse = lambda a, b: math.sqrt(((a - b) ** 2).mean())  # noqa: E731
    assert rmse(goal, proj) < 0.6 * rmse(goal, other)
    # the record: what was found, from what, how far
    record = json.loads((out / "projection.json").read_text())
    assert record["targets"][0]["distance"] == pytest.approx(found, rel=1e-5)
    assert record["targets"][0]["dir"] == "." and record["lpips"]["standard"] is False
    assert last_json(res.stdout)["targets"][0]["distance"] == record["targets"][0]["distance"]
    assert [r["step"] for r in rows] == list(range(STEPS))
    assert rows[0]["lr"] == 0 and max(r["lr"] for r in rows) == pytest.approx(0.1)
    assert rows[-1]["lr"] < 1e-4 and rows[-1]["w_noise"] == 0 < rows[0]["w_noise"]
    with np.load(out / "projected_w.npz") as npz:
        w = npz["w"]
        assert w.shape == (preset("small").num_ws, 64) and np.all(w == w[0])
        assert [npz[f"noise{i}"].shape[2] for i in range(7)] == [4, 8, 8, 16, 16, 32, 32]
        for i in range(7):  # renormalised after every step
            n = npz[f"noise{i}"]
            assert abs(n.mean()) < 1e-4 and n.std() == pytest.approx(1, abs=1e-3)
    assert Image.open(out / "frames.png").size == (4 * 32, 32)


def test_the_npz_reproduces_proj_png(net: dict[str, Path], lpips_installed: None,
                                     tmp_path: Path) -> None:
    """A user can rebuild the image from projected_w.npz with the network alone."""
    import tensorflow as tf

    assert cli("project", "--network", net["net"], "--target", net["targets"] / "seed8.png",
               "--steps", 20, "--out", tmp_path / "p").exit_code == 0
    G = load_generator(net["net"])  # noqa: N806
    with np.load(tmp_path / "p" / "projected_w.npz") as npz:
        noise = [tf.constant(npz[f"noise{i}"]) for i in range(7)]
        img = G.synthesis(tf.constant(npz["w"][None]), noise=noise).numpy()[0]
    rebuilt = np.clip(img * 127.5 + 128, 0, 255).astype(np.uint8)
    assert np.array_equal(rebuilt, pixels(tmp_path / "p" / "proj.png"))


def test_a_folder_gives_each_target_the_bytes_it_gets_alone(
        net: dict[str, Path], lpips_installed: None, tmp_path: Path) -> None:
    args = ("--network", net["net"], "--steps", 15, "--seed", 3)
    assert cli("project", *args, "--target", net["targets"], "--out", tmp_path / "a"
               ).exit_code == 0
    assert cli("project", *args, "--target", net["targets"], "--out", tmp_path / "b"
               ).exit_code == 0
    assert cli("project", *args, "--target", net["targets"] / "seed8.png",
               "--out", tmp_path / "one").exit_code == 0
    a, b = tmp_path / "a", tmp_path / "b"
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert files == ["projection.json", *[f"seed{s}/{f}" for s in (7, 8) for f in (
        "progress.jsonl", "proj.png", "projected_w.npz", "target.png")]]
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    for name in ("proj.png", "projected_w.npz", "progress.jsonl"):
        assert (a / "seed8" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    other = tmp_path / "seed4"
    assert cli("project", *args[:-1], "4", "--target", net["targets"] / "seed8.png",
               "--out", other).exit_code == 0
    assert (other / "proj.png").read_bytes() != (tmp_path / "one" / "proj.png").read_bytes()


def test_targets_of_any_size_are_cropped_and_resized_as_the_dataset_tool(
        net: dict[str, Path], lpips_installed: None, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    wide = Image.fromarray(rng.integers(0, 256, (40, 70, 3), np.uint8))
    wide.save(src / "sub" / "wide.jpg", quality=95)
    Image.fromarray(rng.integers(0, 256, (90, 90), np.uint8)).save(src / "grey.png")
    (src / "notes.txt").write_text("not an image: not a target")
    assert cli("project", "--network", net["net"], "--target", src, "--steps", 2,
               "--out", tmp_path / "p").exit_code == 0
    for name, rel in (("sub-wide", "sub/wide.jpg"), ("grey", "grey.png")):
        expect = decode_square((src / rel).read_bytes(), 32)
        assert np.array_equal(pixels(tmp_path / "p" / name / "target.png"), expect)
    record = json.loads((tmp_path / "p" / "projection.json").read_text())
    assert [t["name"] for t in record["targets"]] == ["grey", "sub-wide"]


def _not_an_image(tmp: Path) -> Path:
    (tmp / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return tmp / "cat.png"


def _transparent(tmp: Path) -> Path:
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp / "ghost.png")
    return tmp / "ghost.png"


def _empty_folder(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    (tmp / "empty" / "readme.txt").write_text("x")
    return tmp / "empty"


def _clashing_names(tmp: Path) -> Path:
    (tmp / "two").mkdir()
    for suffix in ("png", "bmp"):
        Image.new("RGB", (8, 8)).save(tmp / "two" / f"cat.{suffix}")
    return tmp / "two"


def _bad_in_folder(tmp: Path) -> Path:
    (tmp / "mixed").mkdir()
    Image.new("RGB", (8, 8)).save(tmp / "mixed" / "a.png")
    (tmp / "mixed" / "b.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return tmp / "mixed"


def _text_file(tmp: Path) -> Path:
    (tmp / "cat.txt").write_text("x")
    return tmp / "cat.txt"


@pytest.mark.parametrize(("make", "message"), [
    pytest.param(_not_an_image, "target {t}: undecodable image", id="not-an-image"),
    pytest.param(_transparent, "target {t}: RGBA image has transparent pixels", id="alpha"),
    pytest.param(_empty_folder, "no image files", id="empty-folder"),
    pytest.param(_clashing_names, "would both be written as 'cat'", id="clash"),
    pytest.param(_bad_in_folder, "target {t}/b.jpg: undecodable image", id="one-bad"),
    pytest.param(_text_file, "is not an image file", id="text-file"),
    pytest.param(lambda tmp: tmp / "nowhere.png", "no such target image or folder",
                 id="missing"),
])
def test_bad_targets_exit_2_before_anything_is_written(
        net: dict[str, Path], lpips_installed: None, tmp_path: Path, make: Any,
        message: str) -> None:
    target = make(tmp_path)
    res = cli("project", "--network", net["net"], "--target", target, "--steps", 2,
              "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert message.format(t=target) in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_missing_lpips_file_is_the_usual_clear_error(
        net: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STYLEGAN_CACHE", str(tmp_path / "cache"))
    res = cli("project", "--network", net["net"], "--target", net["targets"],
              "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert "vgg16_zhang_perceptual.pkl is missing" in res.stderr
    assert "stylegan-ops fetch-weights lpips" in res.stderr
    assert not (tmp_path / "out").exists()


def test_a_failure_midway_leaves_no_output(net: dict[str, Path], lpips_installed: None,
                                           tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real = project_mod.project_one
    calls = []

    def second_fails(*args: Any) -> float:
        calls.append(1)
        if len(calls) == 2:
            raise StageError("disk full (simulated)")
        return real(*args)

    monkeypatch.setattr(project_mod, "project_one", second_fails)
    res = cli("project", "--network", net["net"], "--target", net["targets"], "--steps", 2,
              "--out", tmp_path / "out")
    assert res.exit_code == 2 and "disk full (simulated)" in res.stderr
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # no temp dir left either


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(("--steps", "0"), "--steps", id="no-steps"),
    pytest.param(("--steps", "5", "--save-frames", "6"), "save-frames must be", id="frames"),
    pytest.param(("--seed", "-1"), "--seed", id="seed"),
])
def test_bad_options_exit_2(net: dict[str, Path], tmp_path: Path, args: tuple[str, ...],
                            message: str) -> None:
    res = cli("project", "--network", net["net"], "--target", net["targets"], *args,
              "--out", tmp_path / "out")
    assert res.exit_code == 2 and message in res.stderr
    assert not (tmp_path / "out").exists()


def test_the_schedules_follow_the_paper(net: dict[str, Path], tmp_path: Path) -> None:
    cfg = project_mod.ProjectConfig(net["net"], net["targets"], tmp_path / "o", steps=1000)
    lr = [cfg.learning_rate(s) for s in range(1000)]
    assert lr[0] == 0 and lr[25] == pytest.approx(0.05) and lr[50] == pytest.approx(0.1)
    assert lr[50:750] == [pytest.approx(0.1)] * 700  # flat between the ramps
    assert lr[875] == pytest.approx(0.05) and lr[999] == pytest.approx(0.1 * math.sin(
        math.pi * 0.004 / 2) ** 2)  # ½ − ½cos(πx) = sin²(πx/2), x = (1 − 0.999)/0.25
    assert cfg.w_noise(0, 2.0) == pytest.approx(0.1)
    assert cfg.w_noise(375, 2.0) == pytest.approx(0.1 * 0.25)
    assert cfg.w_noise(750, 2.0) == 0 and cfg.w_noise(900, 2.0) == 0


def test_noise_regularisation_punishes_structure_not_white_noise() -> None:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    white = tf.constant(rng.standard_normal((1, 1, 64, 64)), tf.float32)
    smooth = np.cumsum(rng.standard_normal((64, 64)), axis=1)
    smooth = tf.constant(((smooth - smooth.mean()) / smooth.std())[None, None], tf.float32)
    # white noise: each level's mean product has variance 1/r², so E = Σ 2/r² ≈ 0.04
    assert float(project_mod.noise_regularisation([white])) < 0.1
    assert float(project_mod.noise_regularisation([smooth])) > 0.5
    # a map of 1, -1 stripes along x: lag-1 autocorrelation −1 along x, +1 along y, at 64 px
    # only (its 2×2 means are all 0 below that)
    stripes = tf.constant(np.tile([1.0, -1.0], 32)[None, None, None].repeat(64, 2), tf.float32)
    assert float(project_mod.noise_regularisation([stripes])) == pytest.approx(2.0)


def test_larger_images_are_box_averaged_to_256() -> None:
    import tensorflow as tf

    x = np.random.default_rng(0).random((2, 512, 512, 3)).astype(np.float32)
    expect = x.reshape(2, 256, 2, 256, 2, 3).mean(axis=(2, 4))
    got = project_mod.downsample(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-6)
    assert project_mod.downsample(tf.constant(x[:, :256, :256])).shape == (2, 256, 256, 3)
