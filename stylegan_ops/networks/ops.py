"""Building blocks of StyleGAN2 in pure TensorFlow ops (NHWC), no custom CUDA kernels.

Parameters are stored as NVIDIA stores them — conv weights HWIO ``[k, k, in, out]``, dense
``[in, out]``, unscaled — and scaled at run time (equalised learning rate), so imported
weights are used as they are.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

LRELU_GAIN = math.sqrt(2.0)


def fir_kernel(taps: Sequence[float] = (1, 3, 3, 1), gain: float = 1.0) -> np.ndarray:
    """Separable FIR filter as a normalised 2-D kernel times ``gain``."""
    k = np.asarray(taps, dtype=np.float32)
    k2 = np.outer(k, k)
    return np.asarray(k2 / k2.sum() * gain, dtype=np.float32)


# Set while a function is traced for XLA (``xla_function``): FIR filters become shifted
# multiply-adds along each axis instead of a depthwise convolution. Measured on TF 2.21's
# CPU: a depthwise 4×4 filter of 32×35×35×64 takes 10 ms through TF's kernel and 216 ms
# compiled by XLA, the separable adds 2.3 ms compiled (and 20 ms uncompiled, so the plain
# path keeps the convolution). Both are the same filter to float32 rounding.
_SEPARABLE_FIR: contextvars.ContextVar[bool] = contextvars.ContextVar("separable_fir",
                                                                      default=False)


@contextlib.contextmanager
def separable_fir() -> Iterator[None]:
    """FIR filters traced inside this block are built as separable shifted adds."""
    token = _SEPARABLE_FIR.set(True)
    try:
        yield
    finally:
        _SEPARABLE_FIR.reset(token)


def xla_function(fn: Callable[..., Any]) -> Any:
    """``fn`` as an XLA-compiled tf.function (jit_compile), traced with the FIR filters
    XLA compiles well (``separable_fir``)."""
    @functools.wraps(fn)
    def traced(*args: Any, **kwargs: Any) -> Any:
        with separable_fir():
            return fn(*args, **kwargs)

    return tf.function(traced, jit_compile=True)


def _separable(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(column taps, row taps) whose outer product is ``kernel``, or None."""
    total = float(kernel.sum())
    if total == 0:
        return None
    col, row = kernel.sum(axis=1), kernel.sum(axis=0) / total
    return (col, row) if np.allclose(np.outer(col, row), kernel, rtol=1e-6, atol=1e-9) else None


def _fir_separable(x: tf.Tensor, col: np.ndarray, row: np.ndarray, down: int) -> tf.Tensor:
    """A VALID true convolution of padded NHWC ``x`` with col⊗row, every ``down``-th
    output: one weighted sum of shifted slices per axis."""
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    ho, wo = h - len(col) + 1, w - len(row) + 1
    col, row = col[::-1], row[::-1]  # flipped: a convolution, not a correlation
    y = float(col[0]) * x[:, :ho:down]
    for i in range(1, len(col)):
        y += float(col[i]) * x[:, i:i + ho:down]
    z = float(row[0]) * y[:, :, :wo:down]
    for j in range(1, len(row)):
        z += float(row[j]) * y[:, :, j:j + wo:down]
    return z


def upfirdn2d(x: tf.Tensor, kernel: np.ndarray, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> tf.Tensor:
    """Upsample by zero insertion, pad, convolve with a FIR filter, downsample (NHWC)."""
    n, h, w, c = (tf.shape(x)[i] for i in range(4))
    if up > 1:
        x = tf.reshape(x, [n, h, 1, w, 1, c])
        x = tf.pad(x, [[0, 0], [0, 0], [0, up - 1], [0, 0], [0, up - 1], [0, 0]])
        x = tf.reshape(x, [n, h * up, w * up, c])
    x = tf.pad(x, [[0, 0], [pad[0], pad[1]], [pad[0], pad[1]], [0, 0]])
    taps = _separable(kernel) if _SEPARABLE_FIR.get() else None
    if taps is not None:
        return _fir_separable(x, *taps, down)
    # a true convolution: flip the kernel, then filter every channel alike (depthwise)
    k = tf.constant(kernel[::-1, ::-1, None, None], dtype=x.dtype)
    k = tf.tile(k, [1, 1, x.shape[-1], 1])
    x = tf.nn.depthwise_conv2d(x, k, strides=[1, 1, 1, 1], padding="VALID")
    if down > 1:
        x = x[:, ::down, ::down, :]
    return x


def upsample2d(x: tf.Tensor, kernel: np.ndarray) -> tf.Tensor:
    """2× upsampling with a FIR filter (the skip path of the generator's RGB output)."""
    p = kernel.shape[0] - 2
    return upfirdn2d(x, kernel * 4, up=2, pad=((p + 1) // 2 + 1, p // 2))


def downsample2d(x: tf.Tensor, kernel: np.ndarray) -> tf.Tensor:
    p = kernel.shape[0] - 2
    return upfirdn2d(x, kernel, down=2, pad=((p + 1) // 2, p // 2))


def lrelu(x: tf.Tensor) -> tf.Tensor:
    """Leaky ReLU (0.2) with gain √2, as in StyleGAN2's bias_act."""
    return tf.nn.leaky_relu(x, 0.2) * LRELU_GAIN


def normalize_2nd_moment(x: tf.Tensor, eps: float = 1e-8) -> tf.Tensor:
    return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=1, keepdims=True) + eps)


def state_variable(value: Any, name: str, trainable: bool = False) -> tf.Variable:
    """A variable that replicas may update in place: under MirroredStrategy every
    replica computes the same update (gradients are all-reduced first), and the first
    replica's value is kept."""
    return tf.Variable(value, trainable=trainable, name=name,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class Params(tf.Module):
    """A module whose variables are registered under NVIDIA's names."""

    def __init__(self, name: str) -> None:
        super().__init__(name="m_" + re.sub(r"\W", "_", name))
        self.nv_name = name
        self.params: dict[str, tf.Variable] = {}

    def param(self, name: str, shape: Sequence[int], init: str | float,
              trainable: bool = True, rng: np.random.Generator | None = None,
              std: float = 1.0) -> tf.Variable:
        """Create ``<module>/<name>``: ``init`` is 'normal' (× std) or a constant."""
        if init == "normal":
            assert rng is not None
            value = rng.standard_normal(size=tuple(shape)).astype(np.float32) * std
        else:
            value = np.full(tuple(shape), float(init), dtype=np.float32)
        var = state_variable(value, name, trainable)
        self.params[f"{self.nv_name}/{name}"] = var
        return var


class Dense(Params):
    """Equalised-lr dense layer with bias and optional lrelu (``Dense0``, ``mod_weight``…)."""

    def __init__(self, name: str, fan_in: int, units: int, rng: np.random.Generator,
                 lrmul: float = 1.0, act: str = "linear", weight_name: str = "weight",
                 bias_name: str | None = "bias") -> None:
        super().__init__(name)
        self.lrmul, self.act = lrmul, act
        self.scale = lrmul / math.sqrt(fan_in)  # he_std (gain 1) × lrmul
        self.weight = self.param(weight_name, [fan_in, units], "normal", rng=rng,
                                 std=1.0 / lrmul)
        self.bias = self.param(bias_name, [units], 0.0) if bias_name else None

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.matmul(x, tf.cast(self.weight * self.scale, x.dtype))
        if self.bias is not None:
            x = x + tf.cast(self.bias * self.lrmul, x.dtype)
        return lrelu(x) if self.act == "lrelu" else x


class Conv(Params):
    """Equalised-lr conv (D's FromRGB, Conv0, Conv1_down, Skip, 4x4/Conv)."""

    def __init__(self, name: str, cin: int, cout: int, kernel: int, rng: np.random.Generator,
                 down: bool = False, bias: bool = True, act: str = "lrelu",
                 fir: np.ndarray | None = None) -> None:
        super().__init__(name)
        self.k, self.down, self.act, self.fir = kernel, down, act, fir
        self.scale = 1.0 / math.sqrt(cin * kernel * kernel)
        self.weight = self.param("weight", [kernel, kernel, cin, cout], "normal", rng=rng)
        self.bias = self.param("bias", [cout], 0.0) if bias else None

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        w = tf.cast(self.weight * self.scale, x.dtype)
        if self.down:
            assert self.fir is not None
            p = (self.fir.shape[0] - 2) + (self.k - 1)
            x = upfirdn2d(x, self.fir, pad=((p + 1) // 2, p // 2))
            x = tf.nn.conv2d(x, w, strides=2, padding="VALID")
        else:
            x = tf.nn.conv2d(x, w, strides=1, padding="SAME")
        if self.bias is not None:
            x = x + tf.cast(self.bias, x.dtype)
        return lrelu(x) if self.act == "lrelu" else x


class ModulatedConv(Params):
    """Modulated conv with optional demodulation and 2× upsampling (G's Conv, ToRGB).

    ``fused=True`` folds the per-sample styles into the weights and runs one grouped conv
    (fast on GPU); ``fused=False`` scales activations instead (works everywhere). Both
    compute the same function.
    """

    def __init__(self, name: str, w_dim: int, cin: int, cout: int, kernel: int,
                 rng: np.random.Generator, demodulate: bool = True, up: bool = False,
                 fir: np.ndarray | None = None) -> None:
        super().__init__(name)
        self.k, self.demodulate, self.up, self.fir = kernel, demodulate, up, fir
        self.cin, self.cout = cin, cout
        self.scale = 1.0 / math.sqrt(cin * kernel * kernel)
        self.weight = self.param("weight", [kernel, kernel, cin, cout], "normal", rng=rng)
        self.affine = Dense(name, w_dim, cin, rng, weight_name="mod_weight",
                            bias_name="mod_bias")
        self.params.update(self.affine.params)

    def styles(self, w: tf.Tensor) -> tf.Tensor:
        return self.affine(w) + 1.0  # mod_bias starts at 0: styles start at 1

    def __call__(self, x: tf.Tensor, w: tf.Tensor, fused: bool) -> tf.Tensor:
        tf.debugging.assert_equal(tf.shape(x)[-1], self.cin, message=self.nv_name)
        # styles and demodulation in float32 even when x is float16 (no overflow)
        s = self.styles(tf.cast(w, tf.float32))  # [N, in]
        weight = self.weight * self.scale  # [k, k, in, out]
        if fused:
            return self._fused(x, s, weight)
        x = x * tf.cast(s, x.dtype)[:, None, None, :]
        x = self._conv(x, tf.cast(weight, x.dtype))
        if self.demodulate:
            ww = weight[None] * s[:, None, None, :, None]
            d = tf.math.rsqrt(tf.reduce_sum(tf.square(ww), axis=[1, 2, 3]) + 1e-8)
            x = x * tf.cast(d, x.dtype)[:, None, None, :]
        return x

    def _fused(self, x: tf.Tensor, s: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
        n = tf.shape(x)[0]
        ww = weight[None] * s[:, None, None, :, None]  # [N, k, k, in, out]
        if self.demodulate:
            d = tf.math.rsqrt(tf.reduce_sum(tf.square(ww), axis=[1, 2, 3]) + 1e-8)
            ww = ww * d[:, None, None, None, :]
        ww = tf.cast(ww, x.dtype)
        # one grouped conv: the batch becomes groups of channels
        ww = tf.reshape(tf.transpose(ww, [1, 2, 3, 0, 4]), [self.k, self.k, self.cin, -1])
        h, wd = tf.shape(x)[1], tf.shape(x)[2]
        x = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, h, wd, -1])
        x = self._conv(x, ww, zero_insert=True)
        h2, w2 = tf.shape(x)[1], tf.shape(x)[2]
        x = tf.reshape(x, [h2, w2, n, self.cout])
        return tf.transpose(x, [2, 0, 1, 3])

    def _conv(self, x: tf.Tensor, weight: tf.Tensor, zero_insert: bool = False) -> tf.Tensor:
        if not self.up:
            return tf.nn.conv2d(x, weight, strides=1, padding="SAME")
        assert self.fir is not None
        # A stride-2 transposed conv (as NVIDIA's Conv0_up), then the FIR filter: 2H+1 → 2H.
        if zero_insert:  # grouped convs have no transposed form: zero insertion + conv
            x = upfirdn2d(x, np.ones((1, 1), np.float32), up=2, pad=(self.k - 1, self.k - 2))
            x = tf.nn.conv2d(x, weight, strides=1, padding="VALID")
        else:
            n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
            flipped = tf.transpose(weight[::-1, ::-1], [0, 1, 3, 2])  # [k, k, out, in]
            x = tf.nn.conv2d_transpose(x, flipped, [n, 2 * h + self.k - 2,
                                                    2 * w + self.k - 2, weight.shape[-1]],
                                       strides=2, padding="VALID")
        p = (self.fir.shape[0] - 2) - (self.k - 1)
        return upfirdn2d(x, self.fir * 4, pad=((p + 1) // 2 + 1, p // 2 + 1))
