"""Adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with limited
data"): every image D sees is transformed with probability p per transform; p follows
the sign of D's outputs on reals toward a target. All ops are differentiable, so G's
gradients flow through the augmentations of its images."""

from __future__ import annotations

import math

import tensorflow as tf

from stylegan_ops.networks.ops import state_variable


def _apply(p: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
    """Per-sample mask: 1 with probability p."""
    return tf.cast(tf.random.uniform([n]) < p, tf.float32)


def _translate_rotate_scale(n: tf.Tensor, p: tf.Tensor, h: int, w: int) -> tf.Tensor:
    """Per-sample 3x3 inverse affine matrices (output pixel → input pixel), around the center."""
    eye = tf.eye(3, batch_shape=[n])

    def mat(a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, d: tf.Tensor, e: tf.Tensor,
            f: tf.Tensor) -> tf.Tensor:
        zero, one = tf.zeros_like(a), tf.ones_like(a)
        return tf.stack([tf.stack([a, b, c], -1), tf.stack([d, e, f], -1),
                         tf.stack([zero, zero, one], -1)], -2)

    zero, one = tf.zeros([n]), tf.ones([n])
    m = eye
    # blit: x-flip, 90° rotations, integer translation (up to 1/8 of the size)
    flip = 1 - 2 * tf.floor(tf.random.uniform([n]) * 2) * _apply(p, n)
    m = m @ mat(flip, zero, zero, zero, one, zero)
    quarter = tf.floor(tf.random.uniform([n]) * 4) * _apply(p, n) * (math.pi / 2)
    m = m @ mat(tf.cos(quarter), -tf.sin(quarter), zero, tf.sin(quarter), tf.cos(quarter), zero)
    shift = tf.round(tf.random.uniform([n, 2], -0.125, 0.125) * [w, h]) * _apply(p, n)[:, None]
    m = m @ mat(one, zero, shift[:, 0], zero, one, shift[:, 1])
    # geometric: isotropic scale, rotation, anisotropic scale
    iso = tf.math.pow(2.0, tf.random.normal([n]) * 0.2 * _apply(p, n))
    m = m @ mat(iso, zero, zero, zero, iso, zero)
    theta = tf.random.uniform([n], -math.pi, math.pi) * _apply(p, n)
    m = m @ mat(tf.cos(theta), -tf.sin(theta), zero, tf.sin(theta), tf.cos(theta), zero)
    aniso = tf.math.pow(2.0, tf.random.normal([n]) * 0.2 * _apply(p, n))
    m = m @ mat(aniso, zero, zero, zero, 1 / aniso, zero)
    # about the image center
    c = mat(one, zero, one * (w - 1) / 2, zero, one, one * (h - 1) / 2)
    c_inv = mat(one, zero, -one * (w - 1) / 2, zero, one, -one * (h - 1) / 2)
    return c @ m @ c_inv


def augment(images: tf.Tensor, p: tf.Tensor) -> tf.Tensor:
    """Blit, geometric and colour transforms, each applied with probability ``p``."""
    n = tf.shape(images)[0]
    h, w = int(images.shape[1]), int(images.shape[2])
    m = _translate_rotate_scale(n, p, h, w)
    transforms = tf.reshape(m, [n, 9])[:, :8] / m[:, 2:3, 2]
    dtype = images.dtype
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=transforms, output_shape=[h, w],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")
    # colour: brightness, contrast, saturation (images are in [-1, 1])
    x = x + (tf.random.normal([n]) * 0.2 * _apply(p, n))[:, None, None, None]
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    contrast = tf.math.pow(2.0, tf.random.normal([n]) * 0.5 * _apply(p, n))[:, None, None, None]
    x = mean + (x - mean) * contrast
    luma = tf.reduce_mean(x, axis=3, keepdims=True)
    sat = tf.math.pow(2.0, tf.random.normal([n]) * 1.0 * _apply(p, n))[:, None, None, None]
    x = luma + (x - luma) * sat
    return tf.cast(x, dtype)


class AdaController:
    """Adjusts p from the sign of D's outputs on reals (target 0.6, speed 500 kimg)."""

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
        """Called every ``interval`` steps: move p by the sign of (r_t − target)."""
        if float(self.count.numpy()) == 0:
            return float(self.p.numpy())
        rt = float(self.signs.numpy()) / float(self.count.numpy())
        step = batch * self.interval / (self.speed_kimg * 1000)
        direction = (rt > self.target) - (rt < self.target)
        self.p.assign(min(1.0, max(0.0, float(self.p.numpy()) + direction * step)))
        self.signs.assign(0.0)
        self.count.assign(0.0)
        return rt
