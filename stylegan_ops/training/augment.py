"""Adaptive discriminator augmentation (Karras et al. 2020, "Training Generative
Adversarial Networks with Limited Data", appendix B): every image D sees, real or fake,
goes through a pipeline of transforms, each applied per sample with probability
p · multiplier; p follows the sign of D's outputs on reals toward a target.

Every op is differentiable w.r.t. the images (exactly: the resampling's gradient is
its true adjoint), so G's gradients flow through the augmentations of its fakes. All
randomness comes from a seed drawn with tf.random per call, so one traced step serves
every call, under tf.function and tf.distribute alike; the maths is compiled with XLA.
Pipeline order: blit → geometric (one combined matrix, one resampling) → colour (one
combined 4x4 matrix) → image-space filtering → additive noise → cutout."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

from stylegan_ops.errors import StageError
from stylegan_ops.networks.ops import state_variable

_BLIT = {"xflip": 1.0, "rotate90": 1.0, "xint": 1.0}
_GEOM = {"scale": 1.0, "rotate": 1.0, "aniso": 1.0, "xfrac": 1.0}
_COLOR = {"brightness": 1.0, "contrast": 1.0, "lumaflip": 1.0, "hue": 1.0, "saturation": 1.0}
_BGC = {**_BLIT, **_GEOM, **_COLOR}

# preset → {transform: probability multiplier}, as ADA's --augpipe
AUGPIPES: dict[str, dict[str, float]] = {
    "blit": _BLIT,
    "geom": _GEOM,
    "color": _COLOR,
    "filter": {"imgfilter": 1.0},
    "noise": {"noise": 1.0},
    "cutout": {"cutout": 1.0},
    "bgc": _BGC,
    "bgcf": {**_BGC, "imgfilter": 1.0},
    "bgcfn": {**_BGC, "imgfilter": 1.0, "noise": 1.0},
    "bgcfnc": {**_BGC, "imgfilter": 1.0, "noise": 1.0, "cutout": 1.0},
}

_LUMA = np.full(3, 1 / math.sqrt(3), np.float32)  # the luma axis of ADA's colour transforms


def pipe(name: str) -> dict[str, float]:
    """The transforms and multipliers of preset ``name``; StageError if there is none."""
    if name not in AUGPIPES:
        raise StageError(f"unknown augment pipe {name!r}; known: {', '.join(AUGPIPES)}")
    return AUGPIPES[name]


_lookup = pipe  # augment's argument of that name shadows the function


# -- random draws ------------------------------------------------------------------
class _Draws:
    """The random numbers of one call, drawn up front by ordinary TF kernels and handed
    out column by column: random ops inside the XLA-compiled pipeline would multiply its
    compile time and run slower than TF's own kernels."""

    UNIFORM, NORMAL = 32, 16  # columns per sample; the largest pipe (bgcfnc) needs 26 and 12

    def __init__(self, uniform: tf.Tensor, normal: tf.Tensor, field: tf.Tensor) -> None:
        self._u, self._z, self.field = uniform, normal, field  # field: N(0, 1) per pixel
        self._iu = self._iz = 0

    def uniform(self, lo: float = 0.0, hi: float = 1.0) -> tf.Tensor:
        """[n] uniform in [lo, hi)."""
        assert self._iu < self.UNIFORM, "raise _Draws.UNIFORM"
        self._iu += 1
        return lo + (hi - lo) * self._u[:, self._iu - 1]

    def normal(self, std: float = 1.0) -> tf.Tensor:
        """[n] N(0, std²)."""
        assert self._iz < self.NORMAL, "raise _Draws.NORMAL"
        self._iz += 1
        return std * self._z[:, self._iz - 1]

    def chance(self, prob: tf.Tensor | float) -> tf.Tensor:
        """Per-sample bool mask: True with probability ``prob``."""
        return self.uniform() < prob

    def lognormal2(self, std: float, mask: tf.Tensor) -> tf.Tensor:
        """2^N(0, std²) where applied, 1 elsewhere."""
        return _gated(mask, tf.pow(2.0, self.normal(std)), 1.0)


def _gated(mask: tf.Tensor, value: tf.Tensor, identity: float) -> tf.Tensor:
    """``value`` where the transform is applied, its identity parameter elsewhere."""
    return tf.where(mask, value, tf.fill(tf.shape(value), identity))


# -- geometric: 3x3 matrices mapping output pixels to input pixels, about the centre --
def _affine(a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, d: tf.Tensor, e: tf.Tensor,
            f: tf.Tensor) -> tf.Tensor:
    zero, one = tf.zeros_like(a), tf.ones_like(a)
    return tf.stack([tf.stack([a, b, c], -1), tf.stack([d, e, f], -1),
                     tf.stack([zero, zero, one], -1)], -2)


def _rotation(theta: tf.Tensor) -> tf.Tensor:
    zero = tf.zeros_like(theta)
    return _affine(tf.cos(theta), -tf.sin(theta), zero, tf.sin(theta), tf.cos(theta), zero)


def _geometric(rng: _Draws, n: tf.Tensor, prob: dict[str, tf.Tensor], h: int,
               w: int) -> tf.Tensor:
    """Every geometric transform of the pipe folded into one matrix per sample.

    The matrix maps output to input coordinates, i.e. it is the inverse of the image's
    transform; each factor's distribution is its own inverse's (flips, uniform angles,
    symmetric shifts, log-symmetric scales), so sampled factors multiplied in pipeline
    order give exactly the inverse of the forward chain."""
    zero, one = tf.zeros([n]), tf.ones([n])
    m = tf.eye(3, batch_shape=[n])
    if "xflip" in prob:
        flip = rng.chance(prob["xflip"]) & rng.chance(0.5)
        m = m @ _affine(tf.where(flip, -one, one), zero, zero, zero, one, zero)
    if "rotate90" in prob:
        # exact integer cos/sin: float cos(pi/2) is not 0 and would blur a pure blit
        k = tf.minimum(tf.cast(rng.uniform(0, 4), tf.int32), 3)
        k *= tf.cast(rng.chance(prob["rotate90"]), tf.int32)
        cos, sin = tf.gather([1.0, 0.0, -1.0, 0.0], k), tf.gather([0.0, 1.0, 0.0, -1.0], k)
        m = m @ _affine(cos, -sin, zero, sin, cos, zero)
    if "xint" in prob:
        shift = tf.round(tf.stack([rng.uniform(-0.125, 0.125) * w,
                                   rng.uniform(-0.125, 0.125) * h], 1))
        shift *= tf.cast(rng.chance(prob["xint"]), tf.float32)[:, None]
        m = m @ _affine(one, zero, shift[:, 0], zero, one, shift[:, 1])
    if "scale" in prob:
        s = rng.lognormal2(0.2, rng.chance(prob["scale"]))
        m = m @ _affine(s, zero, zero, zero, s, zero)
    if "rotate" in prob:
        # two rotations around the anisotropic scale, each with 1 - sqrt(1 - p), so at
        # least one of them happens with probability p
        p_rot = 1 - tf.sqrt(1 - prob["rotate"])
        pre = _gated(rng.chance(p_rot), rng.uniform(-math.pi, math.pi), 0.0)
        m = m @ _rotation(pre)
    if "aniso" in prob:
        s = rng.lognormal2(0.2, rng.chance(prob["aniso"]))
        m = m @ _affine(s, zero, zero, zero, 1 / s, zero)
    if "rotate" in prob:
        post = _gated(rng.chance(p_rot), rng.uniform(-math.pi, math.pi), 0.0)
        m = m @ _rotation(post)
    if "xfrac" in prob:
        shift = tf.stack([rng.normal(0.125) * w, rng.normal(0.125) * h], 1)
        shift *= tf.cast(rng.chance(prob["xfrac"]), tf.float32)[:, None]
        m = m @ _affine(one, zero, shift[:, 0], zero, one, shift[:, 1])
    return m


def _reflect(coord: tf.Tensor, size: int) -> tf.Tensor:
    """Fold a pixel coordinate into [-0.5, size - 0.5] by mirroring at the image edges."""
    t = tf.math.floormod(coord + 0.5, 2.0 * size)
    return tf.where(t >= size, 2.0 * size - t, t) - 0.5


def _warp(x: tf.Tensor, m: tf.Tensor) -> tf.Tensor:
    """Bilinear resampling with mirrored borders, built from gathers so that autodiff
    gives the exact adjoint (ImageProjectiveTransformV3's registered gradient warps the
    output gradient back with the inverse matrix, which is off by the Jacobian: 3.5x
    for a 2x zoom)."""
    n, (h, w, c) = tf.shape(x)[0], x.shape[1:]
    jj, ii = np.meshgrid(np.arange(w) - (w - 1) / 2, np.arange(h) - (h - 1) / 2)
    grid = np.stack([jj.ravel(), ii.ravel(), np.ones(h * w)]).astype(np.float32)  # [3, hw]
    src = m[:, :2, :] @ grid  # [n, 2, hw]
    cx = _reflect(src[:, 0] + (w - 1) / 2, w)
    cy = _reflect(src[:, 1] + (h - 1) / 2, h)
    x0, y0 = tf.floor(cx), tf.floor(cy)
    fx, fy = cx - x0, cy - y0
    x0i = tf.clip_by_value(tf.cast(x0, tf.int32), 0, w - 1)
    x1i = tf.clip_by_value(tf.cast(x0, tf.int32) + 1, 0, w - 1)
    y0i = tf.clip_by_value(tf.cast(y0, tf.int32), 0, h - 1)
    y1i = tf.clip_by_value(tf.cast(y0, tf.int32) + 1, 0, h - 1)
    idx = tf.concat([y0i * w + x0i, y0i * w + x1i, y1i * w + x0i, y1i * w + x1i], 1)
    corners = tf.gather(tf.reshape(x, [n, h * w, c]), idx, batch_dims=1)  # [n, 4hw, c]
    weights = tf.concat([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
    out = tf.reduce_sum(tf.reshape(corners * weights[..., None], [n, 4, h * w, c]), 1)
    return tf.reshape(out, [n, h, w, c])


# -- colour: one 4x4 matrix per sample acting on homogeneous RGB (0 is mid-grey) -----
def _colour(rng: _Draws, n: tf.Tensor, prob: dict[str, tf.Tensor]) -> tf.Tensor:
    eye = tf.eye(4, batch_shape=[n])
    vvt = np.zeros([4, 4], np.float32)
    vvt[:3, :3] = np.outer(_LUMA, _LUMA)
    ex = np.zeros([4, 4], np.float32)  # cross-product matrix of the luma axis
    ex[:3, :3] = np.cross(np.eye(3), _LUMA)
    c = eye
    if "brightness" in prob:
        b = _gated(rng.chance(prob["brightness"]), rng.normal(0.2), 0.0)
        c = (eye + tf.pad(b[:, None, None] * tf.ones([1, 3, 1]), [[0, 0], [0, 1], [3, 0]])) @ c
    if "contrast" in prob:
        s = rng.lognormal2(0.5, rng.chance(prob["contrast"]))
        c = tf.linalg.diag(tf.stack([s, s, s, tf.ones([n])], -1)) @ c
    if "lumaflip" in prob:
        flip = tf.cast(rng.chance(prob["lumaflip"]) & rng.chance(0.5), tf.float32)
        c = (eye - 2 * flip[:, None, None] * vvt) @ c
    if "hue" in prob:
        theta = _gated(rng.chance(prob["hue"]), rng.uniform(-math.pi, math.pi), 0.0)
        cos, sin = tf.cos(theta)[:, None, None], tf.sin(theta)[:, None, None]
        rodrigues = cos * (eye - vvt) + sin * ex + vvt  # rotation about the luma axis
        rodrigues += np.diag([0, 0, 0, 1]).astype(np.float32) * (1 - cos)
        c = rodrigues @ c
    if "saturation" in prob:
        s = rng.lognormal2(1.0, rng.chance(prob["saturation"]))[:, None, None]
        c = (vvt + (eye - vvt) * s + (1 - s) * np.diag([0, 0, 0, 1]).astype(np.float32)) @ c
    return c


def _recolour(x: tf.Tensor, c: tf.Tensor) -> tf.Tensor:
    """Apply the colour matrices; grey images (1 or 2 channels) as (g, g, g), keeping
    the mean of the result; channels past the third (alpha) pass through."""
    if x.shape[-1] >= 3:
        rgb = tf.einsum("nij,nhwj->nhwi", c[:, :3, :3], x[..., :3]) + c[:, None, None, :3, 3]
        return tf.concat([rgb, x[..., 3:]], -1)
    gain = tf.reduce_mean(tf.reduce_sum(c[:, :3, :3], 2), 1)
    return x * gain[:, None, None, None] + tf.reduce_mean(c[:, :3, 3], 1)[:, None, None, None]


# -- image-space filtering: four bands, scaled in the DCT domain ----------------------
@functools.lru_cache(maxsize=16)
def _filter_bank(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal DCT-II matrices for both axes, the bands' responses [4, h, w] and
    their energy matrix Q [4, 4] for a 1/f² power spectrum (natural images).

    A real, even response in the DCT domain is exactly a convolution with mirrored
    borders. Bands: 0-1/8, 1/8-1/4, 1/4-1/2, 1/2-1 of Nyquist in radial frequency,
    with half-octave cosine crossovers summing to 1; DC is in no band, so the mean
    of every channel stays as it is."""
    def dct(size: int) -> np.ndarray:
        k, i = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        d = np.cos(np.pi * (2 * i + 1) * k / (2 * size)) * math.sqrt(2 / size)
        d[0] /= math.sqrt(2)
        return d.astype(np.float32)

    fy, fx = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
    r = np.sqrt(fy**2 + fx**2)
    octave = np.log2(np.where(r > 0, r, 1.0))

    def low(edge: float) -> np.ndarray:  # 1 below the edge, 0 above, cosine in between
        t = np.clip((octave - edge) / 0.5 + 0.5, 0, 1)
        return np.where(r > 0, 0.5 + 0.5 * np.cos(np.pi * t), 0.0)

    lows = [np.zeros_like(r)] + [low(e) for e in (-3, -2, -1)] + [np.where(r > 0, 1.0, 0.0)]
    bands = np.stack([lows[i + 1] - lows[i] for i in range(4)])
    power = np.where(r > 0, 1 / np.where(r > 0, r, 1.0) ** 2, 0.0)
    q = np.einsum("ihw,jhw,hw->ij", bands, bands, power) / power.sum()
    return dct(h), dct(w), bands.astype(np.float32), q.astype(np.float32)


def _imgfilter(rng: _Draws, x: tf.Tensor, prob: tf.Tensor) -> tf.Tensor:
    h, w = x.shape[1:3]
    dh, dw, bands, q = _filter_bank(h, w)
    mask = rng.chance(prob)
    gains = tf.stack([rng.normal() for _ in range(4)], 1)
    gains = tf.where(mask[:, None], tf.pow(2.0, gains), 1.0)
    # the total energy of a 1/f² image stays the same: g ← g / sqrt(gᵀ Q g)
    gains /= tf.sqrt(tf.einsum("ni,ij,nj->n", gains, q, gains))[:, None]
    response = tf.einsum("ni,ihw->nhw", gains, bands)
    response += np.pad([[1.0]], [[0, h - 1], [0, w - 1]]).astype(np.float32)  # DC
    spectrum = tf.einsum("uh,nhwc,vw->nuvc", dh, x, dw) * response[..., None]
    out = tf.einsum("uh,nuvc,vw->nhwc", dh, spectrum, dw)
    return tf.where(mask[:, None, None, None], out, x)  # untouched samples stay bit-exact


# -- the pipeline --------------------------------------------------------------------
TRANSFORMS = (*_BLIT, *_GEOM, *_COLOR, "imgfilter", "noise", "cutout")  # in pipeline order


def augment(images: tf.Tensor, p: tf.Tensor | float, pipe: str = "bgc",
            seed: tf.Tensor | None = None, xla: bool = True) -> tf.Tensor:
    """``images`` (NHWC in [-1, 1]) through preset ``pipe``, each transform applied per
    sample with probability p · its multiplier; same shape and dtype out. ``seed``
    (two integers) makes the draws reproducible; by default every call differs."""
    return apply(images, p, _lookup(pipe), seed, xla)


def apply(images: tf.Tensor, p: tf.Tensor | float, transforms: Mapping[str, float],
          seed: tf.Tensor | None = None, xla: bool = True) -> tf.Tensor:
    """``augment`` with any {transform: multiplier} mapping; ``xla=False`` runs the same
    maths op by op (eagerly, when called eagerly), which tests use to skip compiling."""
    unknown = sorted(set(transforms) - set(TRANSFORMS))
    if unknown:
        raise StageError(f"unknown augment transform {unknown[0]!r}; known: "
                         f"{', '.join(TRANSFORMS)}")
    spec = tuple((name, float(transforms[name])) for name in TRANSFORMS if name in transforms)
    if seed is None:
        seed = tf.random.uniform([2], 0, 2**31 - 1, tf.int32)
    # a value, never differentiated: custom_gradient refuses variables, and a tape that
    # watched p would compile a second variant of the pipeline keeping intermediates
    p = tf.stop_gradient(tf.cast(p, tf.float32))
    x = tf.cast(images, tf.float32)  # float16 under mixed precision: the maths in float32
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int32), 3)
    n = tf.shape(x)[0]
    uniform = tf.random.stateless_uniform([n, _Draws.UNIFORM], seeds[0])
    normal = tf.random.stateless_normal([n, _Draws.NORMAL], seeds[1])
    noisy = "noise" in transforms
    field = tf.random.stateless_normal(tf.shape(x), seeds[2]) if noisy else tf.zeros([])
    draws = uniform, normal, field
    if not xla:
        return tf.cast(_pipeline(x, p, *draws, tf.ones([]), spec), images.dtype)

    # For fixed draws the pipeline is affine in the images, x ↦ A x + b: its gradient
    # is Aᵀ dy, and the gradient of that (R1 differentiates D's input gradient) is A
    # itself, i.e. the pipeline without its offsets; so every order runs one of the two
    # compiled functions. (No tf.cond to skip p = 0: TF cannot take second-order
    # gradients through a cond around a custom gradient.)
    @tf.custom_gradient
    def compiled(x: tf.Tensor) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
        @tf.custom_gradient
        def adjoint(dy: tf.Tensor) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
            def linear(w: tf.Tensor) -> tf.Tensor:
                return _compiled(w, p, *draws, tf.zeros([]), spec)
            return _compiled_vjp(x, p, *draws, dy, spec), linear
        return _compiled(x, p, *draws, tf.ones([]), spec), adjoint

    return tf.cast(compiled(x), images.dtype)


def _pipeline(x: tf.Tensor, p: tf.Tensor, uniform: tf.Tensor, normal: tf.Tensor,
              field: tf.Tensor, offsets: tf.Tensor,
              spec: tuple[tuple[str, float], ...]) -> tf.Tensor:
    """The maths of ``apply``; ``offsets`` scales the additive terms (brightness,
    noise): 0 leaves the linear part of the map."""
    rng = _Draws(uniform, normal, field)
    prob = {name: tf.clip_by_value(p * mult, 0.0, 1.0) for name, mult in spec}
    n, (h, w) = tf.shape(x)[0], x.shape[1:3]
    if prob.keys() & (_BLIT.keys() | _GEOM.keys()):
        x = _warp(x, _geometric(rng, n, prob, h, w))
    if prob.keys() & _COLOR.keys():
        c = _colour(rng, n, prob)  # only brightness puts anything in the last column
        x = _recolour(x, tf.concat([c[:, :, :3], c[:, :, 3:] * offsets], 2))
    if "imgfilter" in prob:
        x = _imgfilter(rng, x, prob["imgfilter"])
    if "noise" in prob:
        std = _gated(rng.chance(prob["noise"]), tf.abs(rng.normal(0.1)), 0.0)
        x += rng.field * (std * offsets)[:, None, None, None]
    if "cutout" in prob:
        # a square of half the image size, centred anywhere, set to 0 (mid-grey)
        centre = tf.stack([rng.uniform(), rng.uniform()], 1)
        ys = (np.arange(h, dtype=np.float32) + 0.5) / h
        xs = (np.arange(w, dtype=np.float32) + 0.5) / w
        in_y = tf.abs(ys[None, :] - centre[:, :1]) < 0.25
        in_x = tf.abs(xs[None, :] - centre[:, 1:]) < 0.25
        hole = in_y[:, :, None] & in_x[:, None, :] & rng.chance(prob["cutout"])[:, None, None]
        x *= 1 - tf.cast(hole, tf.float32)[..., None]
    return x


def _vjp(x: tf.Tensor, p: tf.Tensor, uniform: tf.Tensor, normal: tf.Tensor, field: tf.Tensor,
         dy: tf.Tensor, spec: tuple[tuple[str, float], ...]) -> tf.Tensor:
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = _pipeline(x, p, uniform, normal, field, tf.ones([]), spec)
    return tape.gradient(y, x, output_gradients=dy)


# XLA fuses the pipeline's few hundred small ops and its gathers: several times faster
# on CPU than op by op. TF would run the gradient of a compiled function op by op, so
# the backward pass is compiled on its own (XLA drops the forward maths it does not need)
_compiled = tf.function(_pipeline, jit_compile=True)
_compiled_vjp = tf.function(_vjp, jit_compile=True)


class AdaController:
    """Adjusts p from the sign of D's outputs on reals: every ``interval`` minibatches,
    r_t = mean(sign(D(reals))) and p += sign(r_t − target) · batch · interval /
    (speed_kimg · 1000), clamped to [0, 1]."""

    def __init__(self, target: float = 0.6, interval: int = 4, speed_kimg: float = 500.0,
                 p: float = 0.0) -> None:
        self.target, self.interval, self.speed_kimg = target, interval, speed_kimg
        self.p = state_variable(float(p), "augment_p")
        self.signs = state_variable(0.0, "ada_sign_sum")
        self.count = state_variable(0.0, "ada_count")

    def accumulate(self, real_logits: tf.Tensor) -> None:
        """Add a batch of D's real outputs (summed over replicas when there are several)."""
        sums = tf.stack([tf.reduce_sum(tf.sign(tf.cast(real_logits, tf.float32))),
                         tf.cast(tf.size(real_logits), tf.float32)])
        ctx = tf.distribute.get_replica_context()
        if ctx is not None:
            sums = ctx.all_reduce(tf.distribute.ReduceOp.SUM, sums)
        self.signs.assign_add(sums[0])
        self.count.assign_add(sums[1])

    def update(self, batch: int) -> float:
        """Called every ``interval`` steps: move p by the sign of (r_t − target); returns
        r_t (0.0 when nothing was accumulated, and p stays)."""
        if float(self.count.numpy()) == 0:
            return 0.0
        rt = float(self.signs.numpy()) / float(self.count.numpy())
        step = batch * self.interval / (self.speed_kimg * 1000)
        direction = (rt > self.target) - (rt < self.target)
        self.p.assign(min(1.0, max(0.0, float(self.p.numpy()) + direction * step)))
        self.signs.assign(0.0)
        self.count.assign(0.0)
        return rt
