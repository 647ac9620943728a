"""generate's config and seeds: what a library caller passes is checked as the CLI checks it;
--xla's images against the eager ones."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="module")
def small_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stylegan_ops.networks.generator import Generator
    from stylegan_ops.networks.presets import preset
    from stylegan_ops.networks.snapshot import Snapshot

    out = tmp_path_factory.mktemp("gen") / "net"
    arrays = {k: v.numpy() for k, v in Generator(preset("small"), seed=5).params.items()}
    arrays["dlatent_avg"] = np.full_like(arrays["dlatent_avg"], 0.1)  # ψ pulls somewhere
    Snapshot(preset("small"), arrays, {}, arrays, {"kimg": 0}, {}).save(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["const", "random", "none"])
def test_xla_generation_agrees_with_eager(small_snapshot: Path, tmp_path: Path,
                                          mode: str) -> None:
    """--xla gives the eager images to float rounding. The uint8 tolerance: the two
    float results differ by float32 rounding (measured below, < 1e-4 of the [-1, 1]
    range), and to_uint8 truncates x·127.5 + 128, so a value that close to a level
    boundary may land on either side: one level, in a small share of the pixels; more than
    one level anywhere would be a real disagreement."""
    from PIL import Image

    from tests.conftest import cli

    for name, extra in (("eager", []), ("xla", ["--xla"])):
        res = cli("generate", "--network", small_snapshot, "--seeds", "3,7",
                  "--noise-mode", mode, "--truncation-psi", "0.7", "--out", tmp_path / name,
                  *extra)
        assert res.exit_code == 0, res.stderr
    for seed in (3, 7):
        a, b = (np.asarray(Image.open(tmp_path / d / f"seed{seed:04d}.png"), np.int16)
                for d in ("eager", "xla"))
        assert a.shape == b.shape == (32, 32, 3)
        assert np.abs(a - b).max() <= 1, (seed, mode)
        assert np.mean(a != b) <= 0.01, (seed, mode)


@pytest.mark.slow
def test_compiled_sampler_matches_the_eager_floats(small_snapshot: Path) -> None:
    import tensorflow as tf

    from stylegan_ops.generate import compiled_sampler, load_generator, random_noise

    G = load_generator(small_snapshot)  # noqa: N806
    z = tf.constant(np.random.RandomState(1).randn(4, G.cfg.z_dim).astype(np.float32))
    tf.random.set_seed(11)
    eager = G.synthesis(G.map(z, psi=0.7), noise_mode="random").numpy()
    tf.random.set_seed(11)  # random_noise draws what synthesis drew: same seed, same order
    compiled = compiled_sampler(G, 0.7)(z, random_noise(G, 4)).numpy()
    assert np.abs(eager - compiled).max() < 1e-4
    assert np.abs(eager).max() > 0.01  # not trivially equal


def test_xla_defaults_off(tmp_path: Path) -> None:
    assert GenerateConfig(tmp_path, (1,), tmp_path / "g").xla is False
