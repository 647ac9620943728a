"""ADA's augmentations, one transform at a time on controlled images, and its p rule.

Most checks run the pipeline op by op (``xla=False``): the same maths without paying a
compile per image shape and pipe; one test checks the compiled path gives the same
images and gradients. Every draw is seeded, so the statistical checks are
deterministic; their tolerances are four standard errors of the quantity checked."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import scipy.fft
import tensorflow as tf

from stylegan_ops.errors import StageError
from stylegan_ops.training.augment import AUGPIPES, TRANSFORMS, AdaController, apply, augment, pipe

SEED = [7, 11]


def run(x: np.ndarray, transforms: dict[str, float], p: float = 1.0,
        seed: list[int] = SEED) -> np.ndarray:
    return np.asarray(apply(tf.constant(x), p, transforms, seed=seed, xla=False))


def noise_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, [n, size, size, 3]).astype(np.float32)


def close_to(value: float, expected: float, standard_error: float) -> None:
    assert abs(value - expected) <= 4 * standard_error, (value, expected, standard_error)


def log2_std_ok(values: np.ndarray, std: float) -> None:
    """``values`` look like 2^N(0, std²): the sample std of their log2, to 4 SE."""
    logs = np.log2(values)
    close_to(float(logs.std()), std, std / math.sqrt(2 * len(logs)))


# -- blit: exact pixel moves ---------------------------------------------------------
def moved_copies(x: np.ndarray, kind: str) -> list[np.ndarray]:
    """Every image the blit transform ``kind`` may turn ``x`` (HWC) into."""
    if kind == "xflip":
        return [x, x[:, ::-1]]
    if kind == "rotate90":
        return [np.rot90(x, k) for k in range(4)]
    reach = round(0.125 * x.shape[0])
    padded = np.pad(x, [(reach, reach), (reach, reach), (0, 0)], mode="symmetric")
    h, w = x.shape[:2]
    return [padded[reach + dy:reach + dy + h, reach + dx:reach + dx + w]
            for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)]


@pytest.mark.parametrize(("kind", "variants"), [
    pytest.param("xflip", 2, id="xflip-mirrors-or-keeps"),
    pytest.param("rotate90", 4, id="rotate90-quarter-turns"),
    pytest.param("xint", 25, id="xint-shifts-up-to-an-eighth"),
])
def test_blit_moves_pixels_exactly(kind: str, variants: int) -> None:
    x = noise_images(64, 16)
    out = run(x, {kind: 1.0})
    seen = set()
    for src, dst in zip(x, out, strict=True):
        matches = [i for i, c in enumerate(moved_copies(src, kind)) if np.array_equal(c, dst)]
        assert len(matches) == 1, "not an exact flip/quarter turn/integer shift of the input"
        seen.add(matches[0])
    assert len(seen) >= min(variants, 4) if kind == "xint" else len(seen) == variants


# -- geometric: read each sample's matrix back from coordinate ramps -----------------
def ramps(n: int, size: int) -> np.ndarray:
    """Channel 0 holds each pixel's x, channel 1 its y (pixel units about the centre):
    bilinear resampling reproduces linear functions exactly, so an output pixel
    holds the input coordinates it was sampled from."""
    c = np.arange(size, dtype=np.float32) - (size - 1) / 2
    xs, ys = np.meshgrid(c, c)
    return np.broadcast_to(np.stack([xs, ys, np.zeros_like(xs)], -1),
                           [n, size, size, 3]).copy()


def matrices(out: np.ndarray, k: int = 8) -> np.ndarray:
    """[n, 2, 3] output → input matrices fitted on the central k x k pixels."""
    size = out.shape[1]
    lo = (size - k) // 2
    c = np.arange(size, dtype=np.float64)[lo:lo + k] - (size - 1) / 2
    xs, ys = np.meshgrid(c, c)
    design = np.stack([xs.ravel(), ys.ravel(), np.ones(k * k)], 1)
    found = []
    for sample in out[:, lo:lo + k, lo:lo + k, :2].astype(np.float64):
        coef, *_ = np.linalg.lstsq(design, sample.reshape(-1, 2), rcond=None)
        assert np.allclose(design @ coef, sample.reshape(-1, 2), atol=1e-3), "not affine"
        found.append(coef.T)
    return np.array(found)


def check_scale(m: np.ndarray) -> None:
    np.testing.assert_allclose(m[:, 0, 1:], 0, atol=1e-4)
    np.testing.assert_allclose(m[:, 1, [0, 2]], 0, atol=1e-4)
    np.testing.assert_allclose(m[:, 0, 0], m[:, 1, 1], rtol=1e-4)
    log2_std_ok(m[:, 0, 0], 0.2)


def check_rotate(m: np.ndarray) -> None:
    lin = m[:, :, :2]
    np.testing.assert_allclose(lin @ lin.transpose(0, 2, 1), np.eye(2)[None].repeat(len(m), 0),
                               atol=1e-4)
    np.testing.assert_allclose(np.linalg.det(lin), 1, atol=1e-4)
    np.testing.assert_allclose(m[:, :, 2], 0, atol=1e-3)
    # at p=1 both rotations happen; their sum is uniform on the circle: |θ| > π/2 half the time
    far = np.mean(np.abs(np.arctan2(lin[:, 1, 0], lin[:, 0, 0])) > math.pi / 2)
    close_to(float(far), 0.5, math.sqrt(0.25 / len(m)))


def check_aniso(m: np.ndarray) -> None:
    np.testing.assert_allclose(m[:, 0, 1:], 0, atol=1e-4)
    np.testing.assert_allclose(m[:, 1, [0, 2]], 0, atol=1e-4)
    np.testing.assert_allclose(m[:, 0, 0] * m[:, 1, 1], 1, rtol=1e-4)
    log2_std_ok(m[:, 0, 0], 0.2)


def check_xfrac(m: np.ndarray) -> None:
    np.testing.assert_allclose(m[:, :, :2], np.eye(2)[None].repeat(len(m), 0), atol=1e-4)
    shifts = m[:, :, 2].ravel() / 64  # in image sizes
    close_to(float(shifts.std()), 0.125, 0.125 / math.sqrt(2 * len(shifts)))
    assert np.all(np.abs(shifts) > 0)


@pytest.mark.parametrize(("kind", "size", "check"), [
    pytest.param("scale", 32, check_scale, id="scale-isotropic-lognormal"),
    pytest.param("rotate", 32, check_rotate, id="rotate-uniform-angle"),
    pytest.param("aniso", 32, check_aniso, id="aniso-area-preserving"),
    pytest.param("xfrac", 64, check_xfrac, id="xfrac-normal-shift"),
])
def test_geometric_transform_has_its_distribution(
        kind: str, size: int, check: Callable[[np.ndarray], None]) -> None:
    check(matrices(run(ramps(256, size), {kind: 1.0}), k=8 if kind != "xfrac" else 4))


# -- colour: luma along (1, 1, 1), chroma in the plane across it ----------------------
def luma(x: np.ndarray) -> np.ndarray:
    return x.mean(-1, keepdims=True)


def chroma(x: np.ndarray) -> np.ndarray:
    """Chroma as complex numbers in an orthonormal basis of the plane across the luma axis."""
    c = x - luma(x)
    return (c @ np.array([1, -1, 0]) / math.sqrt(2)
            + 1j * (c @ np.array([1, 1, -2]) / math.sqrt(6)))


def per_sample(values: np.ndarray) -> np.ndarray:
    return values.reshape(len(values), -1)


def check_brightness(x: np.ndarray, out: np.ndarray) -> None:
    shift = per_sample(out - x)
    one_offset = np.broadcast_to(shift[:, :1], shift.shape)
    np.testing.assert_allclose(shift, one_offset, atol=1e-5)
    close_to(float(shift[:, 0].std()), 0.2, 0.2 / math.sqrt(2 * len(x)))


def check_contrast(x: np.ndarray, out: np.ndarray) -> None:
    gain = (per_sample(out) * per_sample(x)).sum(1) / (per_sample(x) ** 2).sum(1)
    np.testing.assert_allclose(out, x * gain[:, None, None, None], atol=1e-5)  # about 0
    log2_std_ok(gain, 0.5)


def check_lumaflip(x: np.ndarray, out: np.ndarray) -> None:
    np.testing.assert_allclose(chroma(out), chroma(x), atol=1e-5)
    flipped = np.isclose(luma(out), -luma(x), atol=1e-5).all((1, 2, 3))
    kept = np.isclose(luma(out), luma(x), atol=1e-5).all((1, 2, 3))
    assert np.all(flipped | kept)
    close_to(float(flipped.mean()), 0.5, math.sqrt(0.25 / len(x)))


def check_hue(x: np.ndarray, out: np.ndarray) -> None:
    np.testing.assert_allclose(luma(out), luma(x), atol=1e-5)
    turn = per_sample(chroma(out) / chroma(x))
    one_turn = np.broadcast_to(turn[:, :1], turn.shape)
    np.testing.assert_allclose(turn, one_turn, atol=1e-3)
    np.testing.assert_allclose(np.abs(turn), 1, atol=1e-3)
    far = np.mean(np.abs(np.angle(turn[:, 0])) > math.pi / 2)  # uniform angle in [-π, π]
    close_to(float(far), 0.5, math.sqrt(0.25 / len(x)))


def check_saturation(x: np.ndarray, out: np.ndarray) -> None:
    np.testing.assert_allclose(luma(out), luma(x), atol=1e-5)
    gain = per_sample(chroma(out) / chroma(x))
    np.testing.assert_allclose(gain, np.broadcast_to(gain[:, :1], gain.shape), rtol=1e-3)
    np.testing.assert_allclose(gain.imag, 0, atol=1e-3)
    log2_std_ok(gain[:, 0].real, 1.0)


def check_noise(x: np.ndarray, out: np.ndarray) -> None:
    variance = per_sample(out - x).var(1)
    assert np.all(variance > 0)
    # std |N(0, 0.1²)| per image: the mean variance is 0.01, that of 0.01 χ²₁ over n images
    close_to(float(variance.mean()), 0.01, 0.01 * math.sqrt(2 / len(x)))


@pytest.mark.parametrize(("kind", "check"), [
    pytest.param("brightness", check_brightness, id="brightness-adds-one-offset"),
    pytest.param("contrast", check_contrast, id="contrast-scales-about-mid-grey"),
    pytest.param("lumaflip", check_lumaflip, id="lumaflip-negates-luma-keeps-chroma"),
    pytest.param("hue", check_hue, id="hue-turns-chroma-keeps-luma"),
    pytest.param("saturation", check_saturation, id="saturation-scales-chroma-keeps-luma"),
    pytest.param("noise", check_noise, id="noise-std-about-0.1"),
])
def test_colour_and_noise_transform_has_its_effect(
        kind: str, check: Callable[[np.ndarray, np.ndarray], None]) -> None:
    x = noise_images(512, 8)
    check(x, run(x, {kind: 1.0}))


def test_cutout_zeroes_a_square_of_half_the_size() -> None:
    n, size = 512, 32
    x = np.full([n, size, size, 3], 0.5, np.float32)
    out = run(x, {"cutout": 1.0})
    hole = (out == 0).all(-1)
    assert np.array_equal(out[~hole], x[~hole])  # the rest is untouched
    for h in hole:
        rows, cols = np.flatnonzero(h.any(1)), np.flatnonzero(h.any(0))
        assert 0 < len(rows) <= size // 2 and 0 < len(cols) <= size // 2
        assert h[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # an axis-aligned box
        assert h.sum() == len(rows) * len(cols)
    # a quarter of the image when centred, clipped at the borders: per axis the mean share
    # of pixel centres within 1/4 of a uniform centre, squared
    centres = (np.arange(size) + 0.5) / size
    share = np.mean(np.minimum(centres + 0.25, 1) - np.maximum(centres - 0.25, 0))
    fraction = hole.mean((1, 2))
    close_to(float(fraction.mean()), share**2, float(fraction.std()) / math.sqrt(n))


def test_imgfilter_keeps_mean_and_energy_and_reweights_bands() -> None:
    n, size = 64, 32
    rng = np.random.default_rng(1)
    # DCT coefficients of magnitude 1/f with random signs: the spectrum the gains'
    # normalisation assumes, so the filtered energy must equal the input's
    fy, fx = np.meshgrid(np.arange(size) / size, np.arange(size) / size, indexing="ij")
    r = np.hypot(fy, fx)
    amplitude = np.where(r > 0, 1 / np.where(r > 0, r, 1), 0)[None, :, :, None]
    coeffs = amplitude * rng.choice([-1.0, 1.0], [n, size, size, 3])
    coeffs[:, 0, 0] = rng.uniform(-1, 1, [n, 3])  # some mean per channel
    x = scipy.fft.idctn(coeffs, axes=(1, 2), norm="ortho").astype(np.float32)
    x /= np.abs(x).max()
    out = run(x, {"imgfilter": 1.0})
    np.testing.assert_allclose(out.mean((1, 2)), x.mean((1, 2)), atol=1e-5)
    def ac_energy(v: np.ndarray) -> np.ndarray:
        return ((v - v.mean((1, 2), keepdims=True)) ** 2).sum((1, 2, 3))

    np.testing.assert_allclose(ac_energy(out), ac_energy(x), rtol=1e-3)
    # band gains differ per image: high frequencies gain relative to low ones in some, lose
    # in others
    spec_in = scipy.fft.dctn(x, axes=(1, 2), norm="ortho") ** 2
    spec_out = scipy.fft.dctn(out, axes=(1, 2), norm="ortho") ** 2
    low, high = (r > 0) & (r < 0.1), r > 0.7
    tilt = (spec_out[:, high].sum((1, 2)) / spec_in[:, high].sum((1, 2))
            / (spec_out[:, low].sum((1, 2)) / spec_in[:, low].sum((1, 2))))
    assert np.mean(tilt > 1.05) > 0.2 and np.mean(tilt < 1 / 1.05) > 0.2


# -- every transform: p decides how often ---------------------------------------------
def changed_share(kind: str, p: float, size: int) -> float:
    """The share of samples a transform applied with probability p visibly changes."""
    if kind in ("xflip", "lumaflip"):
        return p / 2  # half of them draw the identity
    if kind == "rotate90":
        return p * 3 / 4
    if kind == "xint":
        still = min(1.0, 0.5 / (0.125 * size))  # chance a shift rounds to 0 on one axis
        return p * (1 - still**2)
    return p


@pytest.mark.parametrize(("kind", "p", "mult"), [
    *[pytest.param(kind, 0.3, 1.0, id=f"{kind}-p0.3") for kind in TRANSFORMS],
    pytest.param("brightness", 0.3, 2.0, id="multiplier-doubles-p"),
    pytest.param("hue", 0.6, 2.0, id="multiplier-clamps-at-1"),
])
def test_share_of_samples_changed_follows_p(kind: str, p: float, mult: float) -> None:
    n, size = 2000, 16
    x = noise_images(n, size, seed=2)
    out = run(x, {kind: mult}, p=p)
    changed = float(np.mean(np.abs(out - x).max((1, 2, 3)) > 1e-6))
    expected = changed_share(kind, min(1.0, p * mult), size)
    close_to(changed, expected, math.sqrt(max(expected * (1 - expected), 1e-4) / n))


@pytest.mark.parametrize("name", [pytest.param(name, id=name) for name in AUGPIPES])
def test_p0_is_the_identity(name: str) -> None:
    x = noise_images(16, 16)
    assert np.array_equal(run(x, AUGPIPES[name], p=0.0), x)


@pytest.mark.parametrize("name", [pytest.param(name, id=name) for name in AUGPIPES])
def test_gradient_flows_through_every_preset(name: str) -> None:
    """The pipeline is affine in the images for fixed draws, so a central difference
    with a large step is exact up to rounding: the autodiff gradient must match it."""
    x = tf.constant(noise_images(8, 16))
    weights = tf.constant(noise_images(8, 16, seed=3))
    direction = tf.constant(noise_images(8, 16, seed=4))

    def loss(images: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(apply(images, 0.8, AUGPIPES[name], seed=SEED, xla=False) * weights)

    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(x)
    grad = tape.gradient(value, x).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0
    central = float(loss(x + direction) - loss(x - direction)) / 2
    assert float(np.sum(grad * direction.numpy())) == pytest.approx(central, rel=1e-3, abs=1e-2)


def test_compiled_pipeline_matches_op_by_op_and_keeps_dtype() -> None:
    """Images, their gradient and R1's gradient of that gradient (training takes R1 on
    the reals through their augmentation) agree between the compiled path and op by op."""
    x = tf.constant(noise_images(8, 16))
    d = tf.Variable(noise_images(1, 16, seed=5)[0])  # a stand-in D: sum(tanh(d · image))
    p = tf.Variable(0.7)  # as the training step passes AdaController.p

    def r1(xla: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                inner.watch(x)
                images = apply(x, p, AUGPIPES["bgcfnc"], seed=SEED, xla=xla)
                logits = tf.reduce_sum(tf.tanh(images * d))
            grad = inner.gradient(logits, x)
            penalty = tf.reduce_sum(grad**2)
        return images, grad, outer.gradient(penalty, d)

    found = {False: r1(False), True: tf.function(r1)(True)}  # compiled inside a traced step
    for compiled, op_by_op in zip(found[True], found[False], strict=True):
        assert np.all(np.isfinite(compiled)) and np.abs(compiled).sum() > 0
        np.testing.assert_allclose(compiled, op_by_op, rtol=1e-4, atol=1e-4)
    half = apply(tf.cast(x, tf.float16), 0.7, AUGPIPES["bgcfnc"], seed=SEED, xla=True)
    assert half.dtype == tf.float16 and half.shape == x.shape
    np.testing.assert_allclose(np.asarray(half, np.float32), found[True][0], atol=2e-2)


def test_each_call_of_a_traced_function_draws_anew() -> None:
    step = tf.function(lambda im: apply(im, 1.0, AUGPIPES["color"], xla=False))
    x = tf.constant(noise_images(4, 8))
    assert not np.array_equal(step(x), step(x))


@pytest.mark.parametrize("call", [
    pytest.param(lambda: pipe("bgcx"), id="pipe"),
    pytest.param(lambda: augment(tf.zeros([1, 8, 8, 3]), 0.5, "bgcx"), id="augment"),
    pytest.param(lambda: apply(tf.zeros([1, 8, 8, 3]), 0.5, {"bgcx": 1.0}), id="transform"),
])
def test_unknown_pipe_or_transform_is_refused_in_one_line(call: Callable[[], object]) -> None:
    with pytest.raises(StageError) as err:
        call()
    message = str(err.value)
    assert "'bgcx'" in message and "\n" not in message
    assert ("bgcfnc" in message) or ("cutout" in message)  # names the known ones


# -- the controller -------------------------------------------------------------------
@pytest.mark.parametrize(("start", "batches", "expected"), [
    # speed 0.256 kimg, batch 8, interval 4: one update moves p by 32 / 256 = 0.125
    pytest.param(0.0, [[1, 1, 1, 1, 1, -1]] * 4 * 3, [0.125, 0.25, 0.375],
                 id="overfitting-raises-p"),
    pytest.param(0.5, [[-1, 1, -1]] * 4 * 2, [0.375, 0.25], id="underfitting-lowers-p"),
    pytest.param(0.25, [[1] * 16 + [-1] * 4] * 4, [0.25], id="exactly-on-target-holds"),
    pytest.param(0.0, [[-1, 1, -1]] * 4 * 2, [0.0, 0.0], id="clamped-at-0"),
    pytest.param(0.0, [[3.0, 0.5]] * 4 * 10, [0.125 * k for k in range(1, 9)] + [1.0, 1.0],
                 id="clamped-at-1"),
    # r_t = 3/5 = target: zero logits count in the mean (without them r_t would be 1)
    pytest.param(0.25, [[1, 1, 1, 0, 0]] * 4, [0.25], id="zero-logits-count"),
    # 3 batches all over target, 1 all under: the mean over the interval (0.5) decides
    pytest.param(0.25, [[1, 1, 1, 1]] * 3 + [[-1, -1, -1, -1]] + [[1]] * 4, [0.125, 0.25],
                 id="mean-over-the-interval"),
])
def test_ada_controller_follows_the_sign_rule(start: float, batches: list[list[float]],
                                              expected: list[float]) -> None:
    ada = AdaController(target=0.6, interval=4, speed_kimg=0.256, p=start)
    accumulate = tf.function(ada.accumulate)  # as the training step calls it
    seen = []
    for i, logits in enumerate(batches, 1):
        accumulate(tf.constant(logits, tf.float32))
        if i % ada.interval == 0:
            signs = np.concatenate([np.sign(b) for b in batches[i - ada.interval:i]])
            assert ada.update(batch=8) == pytest.approx(signs.mean())  # returns r_t
            seen.append(float(ada.p.numpy()))
    assert seen == expected
    assert ada.update(batch=8) == 0.0 and float(ada.p.numpy()) == expected[-1]  # no votes
