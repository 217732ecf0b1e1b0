"""Sufficient-statistic types equal numpy on the raw rows, add like the rows they summarise, and
carry everything the random-intercept likelihood needs."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import multivariate_normal

from analysis.longitudinal import marginal_loglik
from flows.statistics import longitudinal_stats_from_frame
from tests.support.longitudinal import SPEC, numpy_design, random_long
from schemas.suffstats import (
    PAIRED_STATISTICS,
    CrossProducts,
    InsufficientData,
    Moments,
    NoisyPairedMoments,
    PairedMoments,
)

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
vectors = st.integers(0, 40).flatmap(lambda n: arrays(float, n, elements=finite))


def close(a: float, b: float, scale: float = 1.0) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * max(1.0, scale))


@given(vectors, vectors)
def test_moments_equal_numpy_and_add_like_concatenation(a, b):
    ma, mb = Moments.from_arrays(a), Moments.from_arrays(b)
    both = np.concatenate([a, b])
    pooled = ma + mb
    ref = Moments.from_arrays(both)
    scale = float(np.dot(both, both)) + 1
    assert pooled.n == ref.n == both.size
    assert close(pooled.sum_y, float(both.sum()), scale) and close(pooled.sum_yy, float(np.dot(both, both)), scale)
    if both.size >= 2:
        assert math.isclose(pooled.variance, float(np.var(both, ddof=1)), rel_tol=1e-6, abs_tol=1e-6 * scale)
    else:
        with pytest.raises(InsufficientData):
            pooled.variance  # noqa: B018 - never a silent 0


@given(st.integers(0, 30).flatmap(lambda n: st.tuples(arrays(float, n, elements=finite), arrays(float, n, elements=finite))),
       st.integers(0, 30).flatmap(lambda n: st.tuples(arrays(float, n, elements=finite), arrays(float, n, elements=finite))))
def test_paired_moments_equal_numpy_and_add(first, second):
    x = np.concatenate([first[0], second[0]])
    y = np.concatenate([first[1], second[1]])
    pooled = PairedMoments.from_arrays(*first) + PairedMoments.from_arrays(*second)
    ref = {"n": x.size, "sum_x": x.sum(), "sum_y": y.sum(), "sum_xx": x @ x, "sum_yy": y @ y, "sum_xy": x @ y}
    scale = float(x @ x + y @ y) + 1
    for s in PAIRED_STATISTICS:
        assert close(getattr(pooled, s), float(ref[s]), scale), s
    if x.size >= 2 and np.var(x) > 1e-6:
        assert math.isclose(pooled.covariance, float(np.cov(x, y)[0, 1]), rel_tol=1e-6, abs_tol=1e-6 * scale)


def test_adding_different_types_is_a_type_error():
    with pytest.raises(TypeError):
        Moments.from_arrays([1.0, 2.0]) + PairedMoments.from_arrays([1.0], [2.0])
    with pytest.raises(TypeError):
        PairedMoments.zero() + NoisyPairedMoments.exact(PairedMoments.zero())


def test_noisy_moments_add_values_and_noise_variances_and_read_release_rows():
    rng = np.random.default_rng(1)
    a = NoisyPairedMoments.with_gaussian_noise(PairedMoments.from_arrays([1, 2, 3], [2, 2, 5]), {s: 3.0 for s in PAIRED_STATISTICS}, rng)
    b = NoisyPairedMoments.with_gaussian_noise(PairedMoments.from_arrays([4], [1]), {s: 4.0 for s in PAIRED_STATISTICS}, rng)
    ab = a + b
    assert ab.sd_of("sum_xy") == pytest.approx(5.0)
    assert ab.value("n") == pytest.approx(a.n + b.n)
    rows = [{"statistic": s, "value": ab.value(s), "noise_sd": ab.sd_of(s), "suppressed": False} for s in PAIRED_STATISTICS]
    assert NoisyPairedMoments.from_release_rows(rows) == ab
    with pytest.raises(InsufficientData):
        NoisyPairedMoments.from_release_rows([{**rows[0], "suppressed": True}, *rows[1:]])


# -- cross-products -------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 25), st.integers(2, 25))
def test_sql_crossproducts_equal_numpy_and_add_like_concatenation(seed, n1, n2):
    rng = np.random.default_rng(seed)
    f1, f2 = random_long(rng, n1), random_long(rng, n2, offset=1000)
    both = pd.concat([f1, f2], ignore_index=True)
    if f1.empty or f2.empty:
        return
    ref = CrossProducts.from_arrays(numpy_design(both), both["outcome"], both["participant"], SPEC.column_names())
    sql_both = longitudinal_stats_from_frame(both, SPEC)
    pooled = longitudinal_stats_from_frame(f1, SPEC) + longitudinal_stats_from_frame(f2, SPEC)
    assert sql_both.cross.allclose(ref)
    assert pooled.cross.allclose(ref)
    assert pooled.baseline.n == both["participant"].nunique()
    numpy_pooled = (CrossProducts.from_arrays(numpy_design(f1), f1["outcome"], f1["participant"], SPEC.column_names())
                    + CrossProducts.from_arrays(numpy_design(f2), f2["outcome"], f2["participant"], SPEC.column_names()))
    assert numpy_pooled.allclose(ref)


def test_marginal_loglik_from_crossproducts_equals_direct_multivariate_normal():
    rng = np.random.default_rng(7)
    frame = random_long(rng, 30)
    x = numpy_design(frame)
    y = frame["outcome"].to_numpy()
    cross = CrossProducts.from_arrays(x, y, frame["participant"], SPEC.column_names())
    beta = rng.normal(size=x.shape[1])
    sigma2, tau2 = 4.0, 9.0
    direct = 0.0
    for _, idx in frame.groupby("participant").indices.items():
        n_i = len(idx)
        cov = sigma2 * np.eye(n_i) + tau2 * np.ones((n_i, n_i))
        direct += multivariate_normal(mean=x[idx] @ beta, cov=cov).logpdf(y[idx])
    assert marginal_loglik(cross, beta, sigma2, tau2) == pytest.approx(direct, rel=1e-10)


def test_transformed_crossproducts_equal_those_of_the_transformed_rows():
    rng = np.random.default_rng(3)
    frame = random_long(rng, 20)
    x = numpy_design(frame)
    y = frame["outcome"].to_numpy()
    cross = CrossProducts.from_arrays(x, y, frame["participant"], SPEC.column_names())
    t = rng.normal(size=(x.shape[1] + 1, x.shape[1] + 1))
    w = np.column_stack([x, y]) @ t
    ref = CrossProducts.from_arrays(w[:, :-1], w[:, -1], frame["participant"], SPEC.column_names())
    assert cross.transformed(t, SPEC.column_names()).allclose(ref, rtol=1e-8, atol=1e-6)
