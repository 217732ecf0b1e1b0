"""MMRM pattern statistics: the DuckDB GROUP BY equals the numpy reference, statistics add, bad rows are refused.

The SQL (analysis/mmrm/sql.py) and ``MMRMStatistics.from_arrays`` (schemas/mmrm_stats.py) are written
independently: one collapses rows per participant and groups by the pattern bit mask in SQL, the other
works on a participant x wave matrix with NaN for the waves not observed.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from analysis.mmrm.design import MMRMDesign  # noqa: E402
from analysis.mmrm.sql import StatisticsInputError, pattern_statistics, pattern_statistics_sql  # noqa: E402
from schemas.mmrm_stats import IncompatibleStatistics, MMRMStatistics  # noqa: E402

# hostile names on purpose: quotes in arm, wave and covariate names must not break the SQL
ARMS = ("control", "it's new", "nudge")
WAVES = ("w1", "w'2", "w3", "w4")
COVARIATE = 'age "years"'


@st.composite
def trials(draw):
    n_arms = draw(st.integers(2, 3))
    n_waves = draw(st.integers(1, 4))
    with_cov = draw(st.booleans())
    design = MMRMDesign(ARMS[:n_arms], WAVES[:n_waves], (COVARIATE,) if with_cov else ())
    n = draw(st.integers(1, 25))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, n_arms, n)
    base = np.round(rng.normal(50, 10, n), 2)
    cov = np.round(rng.normal(40, 8, n), 1)
    y = np.round(rng.normal(50, 10, (n, n_waves)), 3)
    miss = rng.random((n, n_waves)) < draw(st.sampled_from([0.0, 0.3, 0.6]))  # intermittent patterns too
    y[miss] = np.nan
    return design, arm, base, cov, y


def _frame(design: MMRMDesign, arm, base, cov, y, ids=None) -> pd.DataFrame:
    rows = []
    for i in range(len(arm)):
        for t, w in enumerate(design.waves):
            row = {"participant": ids[i] if ids is not None else f"p'{i}", "arm": design.arms[arm[i]], "wave": w,
                   "y": None if np.isnan(y[i, t]) else float(y[i, t]), "baseline": float(base[i])}
            if design.covariates:
                row[COVARIATE] = float(cov[i])
            rows.append(row)
    return pd.DataFrame(rows)


def _z(design: MMRMDesign, arm, base, cov) -> np.ndarray:
    cols = [np.ones(len(arm))] + [(arm == k).astype(float) for k in range(1, len(design.arms))] + [base]
    return np.column_stack(cols + ([cov] if design.covariates else []))


def _sql_stats(frame: pd.DataFrame, design: MMRMDesign, fourth_order: bool) -> MMRMStatistics:
    con = duckdb.connect(":memory:")
    try:
        con.register("obs", frame)
        return pattern_statistics(con, "obs", design, fourth_order=fourth_order)
    finally:
        con.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trials(), st.booleans())
def test_the_sql_group_by_equals_the_numpy_reference(trial, fourth_order):
    design, arm, base, cov, y = trial
    # rows whose outcome is NULL stay in the relation: the SQL must ignore them like absent rows
    sql = _sql_stats(_frame(design, arm, base, cov, y), design, fourth_order)
    ref = MMRMStatistics.from_arrays(_z(design, arm, base, cov), y, design.z_columns, design.waves,
                                     fourth_order=fourth_order)
    assert sql.allclose(ref, rtol=1e-10, atol=1e-8)
    assert sql.n_participants == int((~np.isnan(y)).any(axis=1).sum())
    assert sql.n_obs == int((~np.isnan(y)).sum())


def _wide_frame(design: MMRMDesign, arm, base, cov, y) -> pd.DataFrame:
    """One row per participant: arm, baseline, the covariate, y0 ... (the wide source)."""
    frame = pd.DataFrame({"arm": [design.arms[a] for a in arm], "baseline": base.astype(float)})
    if design.covariates:
        frame[COVARIATE] = cov.astype(float)
    for t in range(len(design.waves)):
        frame[f"y{t}"] = y[:, t]
    return frame


def _sql_stats_wide(frame: pd.DataFrame, design: MMRMDesign, fourth_order: bool) -> MMRMStatistics:
    con = duckdb.connect(":memory:")
    try:
        con.register("obs", frame)
        return pattern_statistics(con, "obs", design, fourth_order=fourth_order, wide=True)
    finally:
        con.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trials(), st.booleans())
def test_a_wide_source_gives_the_statistics_of_the_long_one(trial, fourth_order):
    design, arm, base, cov, y = trial
    wide = _sql_stats_wide(_wide_frame(design, arm, base, cov, y), design, fourth_order)
    long = _sql_stats(_frame(design, arm, base, cov, y), design, fourth_order)
    assert wide.allclose(long, rtol=1e-12, atol=1e-9)
    assert (wide.n_participants, wide.n_obs) == (long.n_participants, long.n_obs)


@pytest.mark.parametrize("column, values, reason", [
    ("arm", ["c", "zz"], "an arm that is missing or not in the design"),
    ("arm", [None, "t"], "an arm that is missing or not in the design"),
    ("baseline", [None, 3.0], "missing or differs"),
])
def test_a_wide_source_with_a_missing_arm_or_baseline_is_refused(column, values, reason):
    design = MMRMDesign(("c", "t"), ("w1", "w2"))
    frame = pd.DataFrame({"arm": ["c", "t"], "baseline": [1.0, 3.0], "y0": [1.0, 3.0], "y1": [2.0, None]})
    frame[column] = values
    with pytest.raises(StatisticsInputError, match=reason):
        _sql_stats_wide(frame, design, False)


def test_a_wide_row_observed_at_no_wave_is_ignored():
    design = MMRMDesign(("c", "t"), ("w1", "w2"))
    frame = pd.DataFrame({"arm": ["c", "t", "zz"], "baseline": [1.0, 3.0, None], "y0": [1.0, 3.0, None],
                          "y1": [2.0, None, None]})
    stats = _sql_stats_wide(frame, design, False)
    assert [(p.observed, p.n_participants) for p in stats.patterns] == [((0,), 1), ((0, 1), 1)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trials(), st.integers(0, 2**32 - 1))
def test_statistics_of_disjoint_participant_sets_add_to_those_of_their_union(trial, split_seed):
    design, arm, base, cov, y = trial
    first = np.random.default_rng(split_seed).random(len(arm)) < 0.5
    parts = []
    for sel in (first, ~first):
        frame = _frame(design, arm[sel], base[sel], cov[sel], y[sel], ids=[f"p{i}" for i in np.flatnonzero(sel)])
        parts.append(_sql_stats(frame, design, True) if sel.any() else
                     MMRMStatistics(design.z_columns, design.waves, ()))
    union = _sql_stats(_frame(design, arm, base, cov, y, ids=[f"p{i}" for i in range(len(arm))]), design, True)
    assert (parts[0] + parts[1]).allclose(union, rtol=1e-10, atol=1e-8)


def test_a_participant_with_two_rows_at_one_wave_is_refused():
    design = MMRMDesign(("c", "t"), ("w1", "w2"))
    frame = pd.DataFrame({"participant": ["a", "a", "a", "b"], "arm": ["c", "c", "c", "t"],
                          "wave": ["w1", "w1", "w2", "w1"], "y": [1.0, 2.0, 3.0, 4.0], "baseline": [0.0] * 4})
    with pytest.raises(StatisticsInputError, match="1 participants have two or more rows at one wave"):
        _sql_stats(frame, design, False)


@pytest.mark.parametrize("column, values, reason", [
    ("arm", ["c", "zz", "t"], "an arm that is missing or not in the design"),
    ("arm", [None, None, "t"], "an arm that is missing or not in the design"),
    ("arm", ["c", "t", "t"], "missing or differs"),           # participant a switches arm
    ("baseline", [1.0, 2.0, 3.0], "missing or differs"),       # participant a's baseline differs between rows
    ("baseline", [None, None, 3.0], "missing or differs"),     # participant a has no baseline
])
def test_rows_that_would_make_the_statistics_wrong_are_refused_with_the_reason(column, values, reason):
    design = MMRMDesign(("c", "t"), ("w1", "w2"))
    frame = pd.DataFrame({"participant": ["a", "a", "b"], "arm": ["c", "c", "t"], "wave": ["w1", "w2", "w1"],
                          "y": [1.0, 2.0, 3.0], "baseline": [1.0, 1.0, 3.0]})
    frame[column] = values
    with pytest.raises(StatisticsInputError, match=reason):
        _sql_stats(frame, design, False)


def test_rows_of_other_waves_and_missing_outcomes_are_ignored_not_counted():
    design = MMRMDesign(("c", "t"), ("w1", "w2"))
    frame = pd.DataFrame({"participant": ["a", "a", "a", "b", "b"], "arm": ["c"] * 3 + ["t"] * 2,
                          "wave": ["baseline", "w1", "w2", "w1", "w2"], "y": [9.0, 1.0, None, 3.0, 4.0],
                          "baseline": [5.0] * 3 + [6.0] * 2})
    stats = _sql_stats(frame, design, False)
    assert [(p.observed, p.n_participants) for p in stats.patterns] == [((0,), 1), ((0, 1), 1)]


def test_statistics_of_different_designs_do_not_add():
    a = MMRMStatistics.from_arrays(np.ones((2, 1)), np.zeros((2, 2)), ("intercept",), ("w1", "w2"))
    b = MMRMStatistics.from_arrays(np.ones((2, 1)), np.zeros((2, 2)), ("intercept",), ("w1", "w3"))
    with pytest.raises(IncompatibleStatistics):
        a + b
    c = MMRMStatistics.from_arrays(np.ones((2, 1)), np.zeros((2, 2)), ("intercept",), ("w1", "w2"), fourth_order=True)
    with pytest.raises(IncompatibleStatistics):
        a + c


def test_transformed_statistics_equal_the_statistics_of_transformed_data():
    rng = np.random.default_rng(3)
    z = np.column_stack([np.ones(30), rng.integers(0, 2, 30), rng.normal(50, 10, 30)])
    y = rng.normal(50, 10, (30, 3))
    y[rng.random((30, 3)) < 0.3] = np.nan
    a = np.array([[1.0, 0, 0], [0, 1, 0], [-5.0, 0, 0.1]])
    d = np.array([-5.0, 0.0, 0.0])
    got = MMRMStatistics.from_arrays(z, y, ("intercept", "arm[t]", "baseline"), ("a", "b", "c")).transformed(a, 0.1, d)
    want = MMRMStatistics.from_arrays(z @ a.T, 0.1 * y + (z @ d)[:, None], ("intercept", "arm[t]", "baseline"),
                                      ("a", "b", "c"))
    assert got.allclose(want, rtol=1e-12, atol=1e-9)


def test_the_sql_is_one_statement_over_the_named_source():
    design = MMRMDesign(("c", "t"), ("w1", "w2"), ("x",))
    sql = pattern_statistics_sql(design, "scores_view", fourth_order=True)
    assert sql.count("FROM scores_view") == 1 and sql.strip().upper().startswith("SELECT")
    wide = pattern_statistics_sql(design, "scores_view", fourth_order=True, wide=True)
    assert wide.count("FROM scores_view") == 1 and "GROUP BY participant" not in wide
