"""Metric mathematics against references and known distributions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from stylegan_ops.metrics.stats import (
    FeatureStats,
    fid,
    inception_score,
    kid,
    precision_recall,
    swd,
)

RNG = np.random.default_rng(0)


def reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Straight from the definition, float64, np.cov (unbiased)."""
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def stats_of(x: np.ndarray, chunks: int = 3) -> FeatureStats:
    st = FeatureStats(x.shape[1])
    for part in np.array_split(x, chunks):
        st.add(part)
    return st


def test_streaming_stats_and_fid_match_the_reference() -> None:
    a = RNG.standard_normal((600, 16))
    b = RNG.standard_normal((500, 16)) * 1.3 + 0.4
    sa, sb = stats_of(a), stats_of(b)
    np.testing.assert_allclose(sa.mean, a.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sa.cov, np.cov(a, rowvar=False), rtol=1e-9, atol=1e-12)
    got = fid(sa.mean, sa.cov, sb.mean, sb.cov)
    assert got == pytest.approx(reference_fid(a, b), rel=1e-9)
    assert fid(sa.mean, sa.cov, sa.mean, sa.cov) == pytest.approx(0.0, abs=1e-8)
    assert got == pytest.approx(fid(sb.mean, sb.cov, sa.mean, sa.cov), rel=1e-7)  # symmetric


def test_stats_round_trip_through_npz() -> None:
    a = RNG.standard_normal((50, 8))
    st = FeatureStats(8, keep=20)
    st.add(a)
    back = FeatureStats.from_npz(st.to_npz())
    np.testing.assert_array_equal(back.cov, st.cov)
    assert back.features().shape == (20, 8)


def test_kid_is_unbiased_on_known_distributions() -> None:
    same = [kid(RNG.standard_normal((400, 8)), RNG.standard_normal((400, 8)), subsets=20,
                subset_size=200, seed=i) for i in range(5)]
    assert abs(np.mean(same)) < 5e-3  # unbiased: ~0 for equal distributions
    shifted = kid(RNG.standard_normal((400, 8)), RNG.standard_normal((400, 8)) + 1.0,
                  subsets=20, subset_size=200)
    assert shifted > 0.1


def test_precision_recall_on_point_clouds_with_known_overlap() -> None:
    real = RNG.standard_normal((500, 2))
    assert precision_recall(real, RNG.standard_normal((500, 2))) > (0.85, 0.85)
    collapsed = RNG.standard_normal((500, 2)) * 0.1  # mode collapse: precise, no recall
    p, r = precision_recall(real, collapsed)
    assert p > 0.95 and r < 0.3
    far = RNG.standard_normal((500, 2)) + 10.0
    assert precision_recall(real, far) == (0.0, 0.0)


def test_inception_score_bounds() -> None:
    one_class = np.tile(np.eye(10)[0], (100, 1))
    assert inception_score(one_class)[0] == pytest.approx(1.0)
    confident_uniform = np.eye(10)[np.arange(1000) % 10]
    assert inception_score(confident_uniform, splits=10)[0] == pytest.approx(10.0, rel=1e-6)


def test_swd_zero_for_identical_sets_and_growing_with_a_shift() -> None:
    imgs = RNG.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    same = swd(imgs, imgs.copy(), per_image=16)
    assert set(same) == {"swd32", "swd16", "swd_avg"} and same["swd_avg"] == 0.0
    scores = []
    for shift in (10, 40, 80):
        moved = np.clip(imgs.astype(int) + shift, 0, 255).astype(np.uint8)
        scores.append(swd(imgs, moved, per_image=16)["swd_avg"])
    assert 0 < scores[0] < scores[1] < scores[2]
