"""The FIR filters built for XLA (``separable_fir``: shifted multiply-adds per axis) compute
what the depthwise convolution computes, for every way the networks call them; a kernel
that is not an outer product keeps the convolution."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from stylegan_ops.networks.ops import (
    _separable,
    downsample2d,
    fir_kernel,
    separable_fir,
    upfirdn2d,
    upsample2d,
    xla_function,
)

RNG = np.random.RandomState(0)
X = tf.constant(RNG.randn(2, 9, 7, 3).astype(np.float32))  # odd, unequal sides
ASYMMETRIC = np.outer([1.0, 2.0, 5.0], [3.0, 1.0, 0.5, 4.0]).astype(np.float32)


def reference(x: np.ndarray, kernel: np.ndarray, up: int, down: int,
              pad: tuple[int, int]) -> np.ndarray:
    """upfirdn2d written out with numpy loops: zero insertion, padding, a true 2-D
    convolution (flipped kernel) per channel, every ``down``-th sample."""
    n, h, w, c = x.shape
    z = np.zeros((n, h * up, w * up, c), np.float64)
    z[:, ::up, ::up] = x
    z = np.pad(z, [(0, 0), pad, pad, (0, 0)])
    kh, kw = kernel.shape
    flipped = kernel[::-1, ::-1].astype(np.float64)
    out = np.zeros((n, z.shape[1] - kh + 1, z.shape[2] - kw + 1, c))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = np.einsum("nhwc,hw->nc", z[:, i:i + kh, j:j + kw], flipped)
    return out[:, ::down, ::down]


CASES = [
    pytest.param(fir_kernel(), 1, 2, (1, 1), id="downsample"),
    pytest.param(fir_kernel() * 4, 2, 1, (2, 1), id="upsample"),
    pytest.param(fir_kernel(), 1, 1, (2, 2), id="filter-only"),
    pytest.param(np.ones((1, 1), np.float32), 2, 1, (2, 1), id="zero-insertion"),
    pytest.param(ASYMMETRIC, 1, 2, (2, 1), id="asymmetric-taps"),
    pytest.param(ASYMMETRIC, 2, 1, (1, 2), id="asymmetric-up"),
]


@pytest.mark.parametrize(("kernel", "up", "down", "pad"), CASES)
def test_separable_and_depthwise_filters_equal_the_written_out_filter(
        kernel: np.ndarray, up: int, down: int, pad: tuple[int, int]) -> None:
    want = reference(X.numpy(), kernel, up, down, pad)
    conv = upfirdn2d(X, kernel, up, down, pad).numpy()
    with separable_fir():
        sep = upfirdn2d(X, kernel, up, down, pad).numpy()
    assert conv.shape == sep.shape == want.shape
    np.testing.assert_allclose(conv, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sep, want, rtol=1e-5, atol=1e-5)


def test_the_networks_resampling_agrees_compiled() -> None:
    """upsample2d and downsample2d as the networks call them, XLA-compiled (separable)
    against the plain depthwise path; gradients too."""
    k = fir_kernel()

    def both(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = upsample2d(x, k)
            z = downsample2d(y * y, k)
            loss = tf.reduce_sum(z * z)
        return z, tape.gradient(loss, x)

    plain = [t.numpy() for t in tf.function(both)(X)]
    compiled = [t.numpy() for t in xla_function(both)(X)]
    for a, b in zip(plain, compiled, strict=True):
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max())


def test_a_kernel_that_is_no_outer_product_keeps_the_convolution() -> None:
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.float32)
    assert _separable(cross) is None and _separable(np.zeros((3, 3), np.float32)) is None
    col, row = _separable(ASYMMETRIC)  # type: ignore[misc]
    np.testing.assert_allclose(np.outer(col, row), ASYMMETRIC, rtol=1e-6)
    with separable_fir():
        got = upfirdn2d(X, cross, 1, 1, (1, 1)).numpy()
    np.testing.assert_allclose(got, reference(X.numpy(), cross, 1, 1, (1, 1)),
                               rtol=1e-5, atol=1e-5)
