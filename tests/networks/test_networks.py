"""Generator and discriminator: NVIDIA names and shapes, forward passes, equivalences."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from stylegan_ops.networks.discriminator import Discriminator, minibatch_stddev
from stylegan_ops.networks.generator import Generator
from stylegan_ops.networks.ops import downsample2d, fir_kernel, upsample2d
from stylegan_ops.networks.presets import preset


@pytest.fixture(scope="module")
def small() -> tuple[Generator, Discriminator]:
    cfg = preset("small")
    return Generator(cfg), Discriminator(cfg)


def test_config_f_names_and_shapes_are_nvidias() -> None:
    cfg = preset("config-f")
    g, d = Generator(cfg), Discriminator(cfg)
    shapes = {k: tuple(v.shape) for k, v in {**g.params, **d.params}.items()}
    expected = {
        "G_mapping/Dense0/weight": (512, 512), "G_mapping/Dense7/bias": (512,),
        "G_synthesis/4x4/Const/const": (1, 512, 4, 4),
        "G_synthesis/4x4/Conv/weight": (3, 3, 512, 512),
        "G_synthesis/8x8/Conv0_up/weight": (3, 3, 512, 512),
        "G_synthesis/8x8/Conv0_up/mod_weight": (512, 512),
        "G_synthesis/8x8/Conv0_up/mod_bias": (512,),
        "G_synthesis/8x8/Conv0_up/noise_strength": (),
        "G_synthesis/8x8/Conv0_up/bias": (512,),
        "G_synthesis/256x256/Conv1/weight": (3, 3, 128, 128),
        "G_synthesis/256x256/ToRGB/weight": (1, 1, 128, 3),
        "G_synthesis/256x256/ToRGB/mod_weight": (512, 128),
        "G_synthesis/noise0": (1, 1, 4, 4), "G_synthesis/noise12": (1, 1, 256, 256),
        "dlatent_avg": (512,),
        "256x256/FromRGB/weight": (1, 1, 3, 128), "256x256/Conv0/weight": (3, 3, 128, 128),
        "256x256/Conv1_down/weight": (3, 3, 128, 256), "256x256/Skip/weight": (1, 1, 128, 256),
        "4x4/Conv/weight": (3, 3, 513, 512), "4x4/Dense0/weight": (8192, 512),
        "Output/weight": (512, 1), "Output/bias": (1,),
    }
    for name, shape in expected.items():
        assert shapes[name] == shape, name
    assert "256x256/Skip/bias" not in shapes  # the skip path has no bias
    assert len([k for k in shapes if k.startswith("G_synthesis/noise")]) == 13
    assert cfg.num_ws == 14
    n_g = sum(int(np.prod(v.shape)) for k, v in g.params.items() if "noise" not in k
              and k != "dlatent_avg")
    assert 30.0e6 < n_g < 30.4e6  # config-f at 256 px: ~30.2M generator parameters


def test_forward_shapes_and_ranges(small: tuple[Generator, Discriminator]) -> None:
    g, d = small
    img = g(tf.random.normal([3, g.cfg.z_dim]))
    assert img.shape == (3, 32, 32, 3)
    assert d(img).shape == (3, 1)
    with pytest.raises(tf.errors.InvalidArgumentError):
        g(tf.random.normal([2, g.cfg.z_dim + 1]))


@pytest.mark.parametrize("noise_mode", ["const", "none"])
def test_fused_and_per_sample_modulation_agree(small: tuple[Generator, Discriminator],
                                               noise_mode: str) -> None:
    g, _ = small
    ws = g.map(tf.random.normal([4, g.cfg.z_dim], seed=1))
    a = g.synthesis(ws, noise_mode=noise_mode, fused=False)
    b = g.synthesis(ws, noise_mode=noise_mode, fused=True)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4, rtol=1e-4)


def test_psi_zero_gives_the_average_w_image(small: tuple[Generator, Discriminator]) -> None:
    g, _ = small
    g.w_avg.assign(tf.random.normal([g.cfg.w_dim], seed=3))
    imgs = g(tf.random.normal([3, g.cfg.z_dim], seed=4), psi=0.0, noise_mode="none")
    ws_avg = tf.tile(g.w_avg[None, None], [1, g.cfg.num_ws, 1])
    avg_img = g.synthesis(ws_avg, noise_mode="none")
    for i in range(3):
        np.testing.assert_allclose(imgs[i].numpy(), avg_img[0].numpy(), atol=1e-5)


def test_fir_resampling_keeps_flat_images_flat() -> None:
    x = tf.ones([1, 8, 8, 2]) * 3.0
    up, down = upsample2d(x, fir_kernel()), downsample2d(x, fir_kernel())
    assert up.shape == (1, 16, 16, 2) and down.shape == (1, 4, 4, 2)
    np.testing.assert_allclose(up.numpy()[:, 2:-2, 2:-2], 3.0, rtol=1e-6)  # interior
    np.testing.assert_allclose(down.numpy()[:, 1:-1, 1:-1], 3.0, rtol=1e-6)


def test_minibatch_stddev_matches_a_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4, 4, 6)).astype(np.float32)
    got = minibatch_stddev(tf.constant(x), group=4, features=1).numpy()
    y = x.reshape(4, 2, 4, 4, 6)
    std = np.sqrt(((y - y.mean(0)) ** 2).mean(0) + 1e-8).mean(axis=(1, 2, 3))  # [2]
    want = np.tile(std, 4)  # sample i belongs to group member i % 2
    assert got.shape == (8, 4, 4, 7)
    np.testing.assert_allclose(got[:, 0, 0, 6], want, rtol=1e-5)
    np.testing.assert_array_equal(got[..., :6], x)


def test_resampling_convs_sit_on_the_skip_paths_grid() -> None:
    """A conv with a centre-tap kernel is the bare resampling: G's upsampling conv equals
    the RGB skip path's upsample2d, and D's strided 3x3 and 1x1 convs equal downsample2d,
    pixel for pixel. A half-pixel shift between the two paths would still train, only
    worse, so nothing else would catch it. A ramp upsampled lands on pixel centres."""
    from stylegan_ops.networks.ops import Conv, ModulatedConv

    rng = np.random.default_rng(0)
    k = fir_kernel()
    up = ModulatedConv("u", 4, 1, 1, 3, rng, up=True, fir=k, demodulate=False)
    delta = np.zeros([3, 3, 1, 1], np.float32)
    delta[1, 1] = 3.0  # × the runtime scale 1/sqrt(9): a tap of 1
    up.weight.assign(delta)
    up.affine.weight.assign(np.zeros([4, 1], np.float32))  # styles exactly 1
    x = tf.constant(rng.standard_normal([1, 8, 8, 1]).astype(np.float32))
    want = upsample2d(x, k).numpy()
    for fused in (False, True):
        got = up(x, tf.zeros([1, 4]), fused=fused).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)
    x16 = tf.constant(rng.standard_normal([1, 16, 16, 1]).astype(np.float32))
    down3 = Conv("d3", 1, 1, 3, rng, down=True, bias=False, act="linear", fir=k)
    down3.weight.assign(delta)
    down1 = Conv("d1", 1, 1, 1, rng, down=True, bias=False, act="linear", fir=k)
    down1.weight.assign(np.ones([1, 1, 1, 1], np.float32))
    want = downsample2d(x16, k).numpy()
    np.testing.assert_allclose(down3(x16).numpy(), want, atol=1e-5)
    np.testing.assert_allclose(down1(x16).numpy(), want, atol=1e-5)
    ramp = tf.constant(np.tile(np.arange(8, dtype=np.float32)[None, None, :, None],
                               [1, 8, 1, 1]))
    row = upsample2d(ramp, k).numpy()[0, 4, 1:-1, 0]
    np.testing.assert_allclose(row, np.arange(1, 15) / 2 - 0.25, atol=1e-5)  # (j+½)/2 − ½
