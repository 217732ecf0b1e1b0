"""The warehouse path (scores joined to assignments, in DuckDB) gives the same sufficient statistics as
the frame paths (the same SQL on an in-memory frame, and analysis's numpy) and as numpy on the raw rows;
inputs that do not fit the plan are refused clearly."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.errors import AnalysisInputError
from analysis.longitudinal import crossproducts_from_frame, design_spec_from_frame, fit_longitudinal
from analysis.public import paired_moments_from_frame
from flows.statistics import (
    coverage,
    design_spec,
    longitudinal_stats,
    longitudinal_stats_from_frame,
    paired_moments,
)
from flows.warehouse import open_warehouse
from schemas.protocol import AnalysisPlan, StudyProtocol
from schemas.suffstats import CrossProducts, PairedMoments
from tests.support.longitudinal import SPEC, numpy_design, random_long

PROTOCOL = StudyProtocol.model_validate({
    "study_id": "s1",
    "title": "warehouse path",
    "arms": [{"name": "control", "control": True}, {"name": "coach"}, {"name": "nudge"}],
    "waves": [{"name": n, "day": d, "instruments": ["who5"]} for n, d in [("w0", 0), ("w1", 30), ("w2", 91), ("w3", 182)]],
    "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "w3"},
    "privacy": {"epsilon": 1.0},
    "baseline_covariates": [{"name": "age"}],
    "analysis": {"covariates": ["age"]},
})


def _seed_warehouse(con, rng: np.random.Generator, n: int = 60) -> pd.DataFrame:
    """Insert assignments and scores; return the long analysis frame the warehouse should yield."""
    people = pd.DataFrame({
        "participant": [f"p{i}" for i in range(n)],
        "arm": rng.choice(["control", "coach", "nudge"], n),
        "baseline": rng.normal(50, 12, n).round(1),
        "age": rng.integers(18, 80, n).astype(float),
    })
    con.executemany(
        "INSERT INTO assignments (participant, study_id, arm, assigned_at, batch_id) VALUES (?, 's1', ?, now(), 'b')",
        people[["participant", "arm"]].values.tolist(),
    )
    # someone else's study and an unrelated outcome must not leak in
    con.execute("INSERT INTO assignments (participant, study_id, arm, assigned_at, batch_id) VALUES ('p0', 's2', 'nudge', now(), 'b')")
    rows, long = [], []
    for p in people.itertuples():
        rows.append(("s1", p.participant, "w0", "who5.percent", p.baseline))
        rows.append(("s2", p.participant, "w1", "who5.percent", 99.0))
        for w in ("w1", "w2", "w3"):
            if rng.random() < 0.75:
                y = round(float(p.baseline + rng.normal(2, 8)), 1)
                rows.append(("s1", p.participant, w, "who5.percent", y))
                rows.append(("s1", p.participant, w, "swls.total", 20.0))
                long.append((p.participant, p.arm, w, y, p.baseline, p.age))
    con.executemany("INSERT INTO scores (study_id, participant, wave, outcome, value) VALUES (?, ?, ?, ?, ?)", rows)
    # the declared baseline covariate comes from the participants records (a partner's `participants` landing file)
    con.executemany("INSERT INTO participant_characteristics VALUES (?, 's1', 'age', NULL, ?, 'b')",
                    people[["participant", "age"]].values.tolist())
    return pd.DataFrame(long, columns=["participant", "arm", "wave", "outcome", "baseline", "age"])


def _add_edge_cases(con) -> None:
    """Participants without a baseline or without a follow-up score, rescored rows (p1 at w2 and w0: the later
    scored_at wins, then the later batch) and a NaN score: what the pivoted reads must treat as the long ones do."""
    con.execute("INSERT INTO assignments (participant, study_id, arm, assigned_at, batch_id) VALUES "
                "('nobase', 's1', 'coach', now(), 'b'), ('nofollow', 's1', 'nudge', now(), 'b')")
    con.execute("INSERT INTO participant_characteristics VALUES ('nobase', 's1', 'age', NULL, 30, 'b'), "
                "('nofollow', 's1', 'age', NULL, 40, 'b')")
    con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value, scored_at, batch_id) VALUES "
                "('s1', 'nobase', 'w1', 'who5.percent', 60, NULL, NULL), "
                "('s1', 'nofollow', 'w0', 'who5.percent', 60, NULL, NULL), "
                # p1 rescored at w2 and w0: the later scored_at wins, then the later batch
                "('s1', 'p1', 'w2', 'who5.percent', 12.5, TIMESTAMPTZ '2027-01-01', 'b9'), "
                "('s1', 'p1', 'w2', 'who5.percent', 99.0, TIMESTAMPTZ '2026-01-01', 'b9'), "
                "('s1', 'p1', 'w0', 'who5.percent', 33.0, NULL, 'z'), "
                "('s1', 'p1', 'w0', 'who5.percent', 77.0, NULL, 'a'), "
                "('s1', 'p2', 'w1', 'who5.percent', 'NaN', TIMESTAMPTZ '2028-01-01', 'z')")


def test_warehouse_statistics_equal_frame_statistics_and_numpy(tmp_path):
    rng = np.random.default_rng(11)
    with open_warehouse(tmp_path / "w.duckdb") as con:
        frame = _seed_warehouse(con, rng)
        stats = longitudinal_stats(con, PROTOCOL)
        cells = paired_moments(con, PROTOCOL)
        cov = coverage(con, PROTOCOL)
    spec = design_spec(PROTOCOL, ["age"])
    assert spec.months == tuple(d / 30.4375 for d in (30, 91, 182))
    from_frame = crossproducts_from_frame(frame, spec)
    assert stats.cross.allclose(from_frame.cross)
    assert stats.cross.allclose(longitudinal_stats_from_frame(frame, spec).cross)
    assert stats.baseline.n == frame["participant"].nunique()
    assert stats.cross.n_obs == len(frame)
    assert int(cov["without_baseline"].sum()) == 0
    assert not stats.cross.slope_groups  # only a random-slope plan pays for the finer statistics
    # a random-slope plan: the warehouse computes the slope groups with the same SQL as the frame path
    slopes_protocol = PROTOCOL.model_copy(update={"analysis": PROTOCOL.analysis.model_copy(update={"random_slopes": True})})
    with open_warehouse(tmp_path / "w.duckdb") as con:
        with_slopes = longitudinal_stats(con, slopes_protocol)
    assert with_slopes.cross.slope_groups
    assert with_slopes.cross.allclose(crossproducts_from_frame(frame, spec, slopes=True).cross)
    assert with_slopes.cross.allclose(longitudinal_stats_from_frame(frame, spec, slopes=True).cross)
    for (arm, wave), pm_ in cells.items():
        sub = frame[(frame["arm"] == arm) & (frame["wave"] == wave)]
        ref = PairedMoments.from_arrays(sub["baseline"], sub["outcome"])
        assert pm_.n == ref.n
        assert np.allclose([pm_.sum_x, pm_.sum_y, pm_.sum_xx, pm_.sum_yy, pm_.sum_xy],
                           [ref.sum_x, ref.sum_y, ref.sum_xx, ref.sum_yy, ref.sum_xy])
    numpy_cells = paired_moments_from_frame(frame)
    assert list(numpy_cells) == list(cells)
    for key, cell in cells.items():
        assert np.allclose(list(cell.as_dict().values()), list(numpy_cells[key].as_dict().values()))


def test_the_mmrm_statistics_read_one_row_per_participant_equal_those_of_the_observation_rows(tmp_path):
    """``mmrm_stats`` reads the scores pivoted (``participant_rows_sql``); the long path (``observations_sql``, the
    relation every other reader uses, collapsed per participant by the MMRM's own SQL) must give the same
    statistics: same participants (none without a baseline or a follow-up score), same score where a participant x
    wave has several rows (``SCORE_PRECEDENCE``), same covariate."""
    from analysis.mmrm import pattern_statistics_from_rows, pattern_statistics_sql
    from analysis.plan import mmrm_design
    from flows.statistics import mmrm_stats, observations_sql

    waves = ["w1", "w2", "w3"]
    with open_warehouse(tmp_path / "w.duckdb") as con:
        _seed_warehouse(con, np.random.default_rng(5))
        _add_edge_cases(con)
        got = mmrm_stats(con, PROTOCOL, outcome="who5.percent", waves=waves)
        design = mmrm_design(PROTOCOL, waves, ["age"])
        rows = con.execute(pattern_statistics_sql(design, observations_sql(PROTOCOL, "who5.percent", ["age"], waves),
                                                  fourth_order=True)).fetchall()
        want = pattern_statistics_from_rows(design, rows, fourth_order=True)
    assert got.allclose(want, rtol=1e-12, atol=1e-9)
    assert (got.n_participants, got.n_obs) == (want.n_participants, want.n_obs) == (
        60, sum(p.n_participants * len(p.observed) for p in want.patterns))


def test_the_longitudinal_statistics_read_through_the_pivot_equal_those_of_the_observation_rows(tmp_path):
    """``longitudinal_stats`` reads the observations unpivoted from one row per participant
    (``observations_wide_sql``), computed once into a temporary table; the long relation (``observations_sql``)
    must give the same statistics, with rescored rows, NaN, participants without a baseline or follow-up, a
    covariate and random-slope groups."""
    from flows.statistics import design_statistics, observations_sql

    slopes = PROTOCOL.model_copy(update={"analysis": PROTOCOL.analysis.model_copy(update={"random_slopes": True})})
    with open_warehouse(tmp_path / "w.duckdb") as con:
        _seed_warehouse(con, np.random.default_rng(6))
        _add_edge_cases(con)
        for protocol in (PROTOCOL, slopes):
            got = longitudinal_stats(con, protocol)
            want = design_statistics(con, observations_sql(protocol, "who5.percent", ["age"]),
                                     design_spec(protocol, ["age"]), slopes=protocol.analysis.random_slopes)
            assert got.cross.allclose(want.cross)
            assert (got.cross.n_obs, got.baseline.n) == (want.cross.n_obs, want.baseline.n)
            assert bool(got.cross.slope_groups) == protocol.analysis.random_slopes
        assert not [t for t in con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 25), st.integers(2, 25))
def test_sql_and_numpy_frame_paths_equal_the_hand_built_design_and_add(seed, n1, n2):
    """The design's SQL text (run by flows on a frame) and its numpy evaluation (analysis's frame path) give
    the cross-products of the design built by hand, categorical covariate included; statistics of two sets
    of participants add up to those of both."""
    rng = np.random.default_rng(seed)
    f1, f2 = random_long(rng, n1), random_long(rng, n2, offset=1000)
    if f1.empty or f2.empty:
        return
    both = pd.concat([f1, f2], ignore_index=True)
    ref = CrossProducts.from_arrays(numpy_design(both), both["outcome"], both["participant"], SPEC.column_names())
    for path in (longitudinal_stats_from_frame, crossproducts_from_frame):
        assert path(both, SPEC).cross.allclose(ref), path.__name__
        pooled = path(f1, SPEC) + path(f2, SPEC)
        assert pooled.cross.allclose(ref) and pooled.baseline.n == both["participant"].nunique(), path.__name__


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 20), st.integers(2, 20))
def test_sql_slope_groups_equal_numpy_and_add(seed, n1, n2):
    rng = np.random.default_rng(seed)
    f1, f2 = random_long(rng, n1), random_long(rng, n2, offset=1000)
    if f1.empty or f2.empty:
        return
    both = pd.concat([f1, f2], ignore_index=True)
    months = both["wave"].map(dict(zip(SPEC.waves, SPEC.months, strict=True))).to_numpy(float)
    ref = CrossProducts.from_arrays(numpy_design(both), both["outcome"], both["participant"], SPEC.column_names(),
                                    time=months)
    assert ref.slope_groups
    for path in (longitudinal_stats_from_frame, crossproducts_from_frame):
        assert path(both, SPEC, slopes=True).cross.allclose(ref), path.__name__
        pooled = path(f1, SPEC, slopes=True) + path(f2, SPEC, slopes=True)
        assert pooled.cross.allclose(ref), path.__name__
        with pytest.raises(ValueError, match="slope groups"):
            path(f1, SPEC, slopes=True) + path(f2, SPEC)


def test_inputs_that_do_not_fit_the_plan_are_refused():
    frame = pd.DataFrame({"participant": ["a", "b"], "arm": ["control", "coach"], "wave": ["w1", "w1"],
                          "outcome": [1.0, 2.0], "baseline": [1.0, 1.0]})
    with pytest.raises(AnalysisInputError, match="covariate 'age'"):
        design_spec_from_frame(frame, control="control", waves={"w1": 1.0}, covariates=["age"])
    with pytest.raises(AnalysisInputError, match="control arm 'placebo'"):
        design_spec_from_frame(frame, control="placebo", waves={"w1": 1.0})
    with pytest.raises(AnalysisInputError, match="random slopes need at least two follow-up waves"):
        fit_longitudinal(frame, AnalysisPlan(random_slopes=True), control="control", waves={"w1": 1.0})
    with pytest.raises(AnalysisInputError, match="control arm"):
        fit_longitudinal(frame, AnalysisPlan(), waves={"w1": 1.0})


def test_one_follow_up_row_per_participant_is_the_ancova():
    """With a single follow-up row per participant the intercept variance is not identified apart from
    the residual; the model fits tau = 0, which is the ANCOVA y ~ arm + baseline (statsmodels OLS)."""
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(5)
    n = 300
    frame = pd.DataFrame({"participant": [f"p{i}" for i in range(n)], "arm": rng.choice(["control", "coach"], n),
                          "wave": "w1", "baseline": rng.normal(50, 10, n)})
    frame["outcome"] = 10 + 0.7 * frame["baseline"] + 3.0 * (frame["arm"] == "coach") + rng.normal(0, 6, n)
    res = fit_longitudinal(frame, AnalysisPlan(), control="control", waves={"w1": 1.0})
    assert res.diagnostics.passed, res.diagnostics
    ols = smf.ols("outcome ~ C(arm, Treatment('control')) + baseline", frame).fit()
    m, s = ols.params.iloc[1], ols.bse.iloc[1]
    eff = res.effect("coach", "w1")
    assert abs(eff.estimate - m) < 0.1 * s and 0.9 < eff.sd / s < 1.15
    assert {v.name: v.mean for v in res.variance_components}["tau"] == 0.0


def _large_warehouse(path, n: int = 30_000) -> None:
    """Scores of n participants x 4 waves x 2 outcomes (240,000 rows: several DuckDB row groups, so a
    parallel read splits them between threads), with telemetry, written in SQL."""
    with open_warehouse(path) as con:
        con.execute("SELECT setseed(0.25)")
        con.execute(f"""INSERT INTO assignments (participant, study_id, arm, assigned_at, stratum, batch_id)
            SELECT 'p' || i, 's1', ['control', 'coach', 'nudge'][1 + (i % 3)], TIMESTAMPTZ '2026-01-01', NULL, 'b'
            FROM range({n}) t(i)""")
        con.execute(f"""INSERT INTO scores (study_id, participant, wave, outcome, value, source)
            SELECT 's1', 'p' || i, w, o, 50 + 20 * random() + (w <> 'w0')::INT * 3 * random(), 'flourish'
            FROM range({n}) t(i), (VALUES ('w0'), ('w1'), ('w2'), ('w3')) ws(w), (VALUES ('who5.percent'), ('age')) os(o)""")
        con.execute(f"""INSERT INTO participant_characteristics
            SELECT 'p' || i, 's1', 'age', NULL, 18 + 60 * random(), 'b' FROM range({n}) t(i)""")
        con.execute(f"""INSERT INTO events SELECT 'e' || i || '-' || k, 'p' || i, 's1',
            TIMESTAMPTZ '2026-01-01' + to_days(CAST(k * 3 AS INTEGER) - 13), 's', 'session_start', NULL, random(), 'b'
            FROM range({n}) t(i), range(8) r(k)""")


def test_statistics_of_the_same_warehouse_are_identical_bit_for_bit(tmp_path):
    """D15 (hardening findings): two analyses of the same data and locked plan with a fixed seed differed in 12 of 62
    estimates. The sampler turns any change in its input, down to the last bit of a sum, into different draws,
    and DuckDB's parallel aggregation adds per-thread partial sums in the order the threads finish. Every reader
    of floating-point sums must give the same bits on every read, whatever the connection's thread setting."""
    from flows.statistics import baseline_moments, final_wave_cells, mmrm_stats, subgroup_cells, telemetry_cells

    _large_warehouse(tmp_path / "w.duckdb")
    metric = StudyProtocol.model_validate({
        **PROTOCOL.model_dump(mode="json"),
        "surrogates": [{"name": "sessions", "event_type": "session_start", "window_days": 14}]}).surrogates[0]
    outcome = PROTOCOL.primary_outcome
    with open_warehouse(tmp_path / "w.duckdb") as con:
        con.execute("SET threads TO 4")  # parallel reads even on a one-core machine

        def read():
            return (longitudinal_stats(con, PROTOCOL), paired_moments(con, PROTOCOL),
                    final_wave_cells(con, PROTOCOL, outcome), subgroup_cells(con, PROTOCOL, outcome, "baseline_tercile"),
                    telemetry_cells(con, PROTOCOL, metric), baseline_moments(con, PROTOCOL),
                    mmrm_stats(con, PROTOCOL, outcome=outcome.name, waves=["w1", "w2", "w3"]))

        first = read()
        for _ in range(4):
            again = read()
            assert again[0].cross == first[0].cross and again[0].baseline == first[0].baseline  # exact equality
            assert again[1:] == first[1:]
        assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 4  # the caller's setting is kept
