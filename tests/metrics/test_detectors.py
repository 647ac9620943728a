"""Detector loaders on files built like the real ones (the weight cache and
fetch-weights are tested in test_weights.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from stylegan_ops.errors import StageError
from stylegan_ops.metrics import detectors
from tests.netfiles import TINY_WIDTHS, inception_graph, vgg_pickle

IMAGES = np.random.RandomState(0).randint(0, 256, (5, 40, 40, 3)).astype(np.uint8)


def test_inception_batches_match_the_original_single_image_graph(tmp_path: Path) -> None:
    import tensorflow as tf

    pb = inception_graph(tmp_path / "g.pb")
    det = detectors.load("inception", pb)
    feats, probs = det.features(IMAGES), det.probabilities(IMAGES)
    assert feats.shape == (5, 64) and probs.shape == (5, 10)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(det.features(IMAGES[2:3]), feats[2:3], rtol=1e-5)
    # the unmodified graph, fed one image the way the original FID code fed it
    graph_def = tf.compat.v1.GraphDef.FromString(pb.read_bytes())
    with tf.Graph().as_default() as g:
        tf.graph_util.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=g) as sess:
            for i in range(len(IMAGES)):
                pool, soft = sess.run(["pool_3:0", "softmax:0"],
                                      {"ExpandDims:0": IMAGES[i:i + 1].astype(np.float32)})
                np.testing.assert_allclose(feats[i], pool.reshape(-1), rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(probs[i], soft[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("content", "message"), [
    pytest.param(b"\xff\x00 not a protobuf", "not a TensorFlow GraphDef", id="garbage"),
    pytest.param(b"", "no 'ExpandDims'", id="empty-graph"),
])
def test_inception_rejects_other_files(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "x.pb").write_bytes(content)
    with pytest.raises(StageError, match=message):
        detectors.load("inception", tmp_path / "x.pb")


def test_vgg16_features_and_layout_checks(tmp_path: Path) -> None:
    det = detectors.load("vgg16", vgg_pickle(tmp_path / "vgg16.pkl", "vgg16"))
    feats = det.features(IMAGES)
    assert feats.shape == (5, 32) and (feats >= 0).all() and feats.std() > 0
    np.testing.assert_allclose(det.features(IMAGES[:1]), feats[:1], rtol=1e-4, atol=1e-5)


def _conv_vars(widths: tuple[int, ...] = TINY_WIDTHS) -> list[tuple[str, np.ndarray]]:
    from tests.netfiles import _vgg_convs

    return _vgg_convs(np.random.default_rng(0), widths)


@pytest.mark.parametrize(("edit", "message"), [
    pytest.param(lambda v: v[:5], "ends before conv2_1 bias ([8])", id="truncated"),
    pytest.param(lambda v: [v[1], v[0], *v[2:]], "variable #0 conv1_1/bias has shape (4,)",
                 id="swapped"),
    pytest.param(lambda v: [*v, ("extra", np.zeros(3, np.float32))],
                 "1 unexpected variables after the lin layers", id="extra"),
    pytest.param(lambda v: [(n, a[:, :, :2]) if n == "conv2_1/weight" else (n, a)
                            for n, a in v], "conv2_1 kernel needs [3, 3, 4, *]", id="chain"),
])
def test_lpips_pickles_are_mapped_by_order_and_shape(tmp_path: Path, edit: object,
                                                    message: str) -> None:
    rng = np.random.default_rng(1)
    lins = [(f"lin{i}", rng.uniform(size=(1, 1, w, 1)).astype(np.float32))
            for i, w in enumerate(TINY_WIDTHS)]
    variables = edit(_conv_vars() + lins)  # type: ignore[operator]
    path = vgg_pickle(tmp_path / "lpips.pkl", "lpips", variables=variables)
    with pytest.raises(StageError, match=re.escape(message)):
        detectors.load("lpips", path)


def test_lpips_is_a_distance(tmp_path: Path) -> None:
    lpips = detectors.load("lpips", vgg_pickle(tmp_path / "l.pkl", "lpips"))
    a, b = IMAGES[:3].astype(np.float32), IMAGES[[3, 4, 2]].astype(np.float32)
    d = lpips.distance(a, b)
    assert d.shape == (3,) and (d[:2] > 0).all() and abs(d[2]) < 1e-6
    np.testing.assert_allclose(lpips.distance(b, a), d, rtol=1e-5)
    assert (lpips.distance(a, a + 1.0) < lpips.distance(a, 255 - a)).all()


@pytest.mark.parametrize("name", ["inception", "vgg16", "lpips"])
def test_xla_forward_passes_agree_with_the_plain_ones(tmp_path: Path, name: str) -> None:
    """xla=True compiles the same forward pass: features (and LPIPS distances) agree to
    float32 rounding in another order of summation, and the label is unchanged."""
    path = (inception_graph(tmp_path / "g.pb") if name == "inception"
            else vgg_pickle(tmp_path / f"{name}.pkl", name))
    plain, xla = detectors.load(name, path), detectors.load(name, path, xla=True)
    assert plain.label == xla.label
    if name == "lpips":
        a, b = IMAGES[:3].astype(np.float32), IMAGES[2:].astype(np.float32)
        want, got = plain.distance(a, b), xla.distance(a, b)
    else:
        want, got = plain.features(IMAGES), xla.features(IMAGES)
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
