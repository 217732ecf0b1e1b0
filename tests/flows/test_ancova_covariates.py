"""The final-wave ANCOVA adjusts for the covariates the protocol declares (``analysis.covariates``), as the preregistered
plan says and the MMRM and random-intercept models do: the trusted tier's ``ancova_final_wave`` rows (the secondary
outcomes' Holm family) and the tipping point built on the same statistics, read from the warehouse in one GROUP BY.

The reference is statsmodels' OLS on the completers' rows (``y ~ baseline + age + C(site) + C(arm)``), and, for the
tipping point, ``analysis.missing.statistics_from_frame`` on one row per participant (numpy)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.missing import statistics_from_frame, tipping_point
from analysis.plan import run_plan, run_public_plan
from flows.statistics import final_wave_cells, plan_statistics
from flows.warehouse import open_warehouse
from schemas.protocol import StudyProtocol
from tests.support.plan import ml_fit_stand_in

PRIMARY, SECONDARY = "who5.percent", "swls.total"


def _protocol(covariates: list[str]) -> StudyProtocol:
    return StudyProtocol.model_validate({
        "study_id": "s1",
        "title": "ANCOVA with covariates",
        "arms": [{"name": "control", "control": True}, {"name": "coach"}, {"name": "nudge"}],
        "waves": [{"name": n, "day": d, "instruments": ["who5"]} for n, d in [("w0", 0), ("w1", 30), ("w2", 91)]],
        "primary_outcome": {"name": PRIMARY, "instrument": "who5", "wave": "w2"},
        "secondary_outcomes": [{"name": SECONDARY, "source": "external", "wave": "w2"}],
        "privacy": {"epsilon": 1.0},
        "baseline_covariates": [{"name": "age"}, {"name": "site", "kind": "categorical", "levels": ["A", "B", "C"]}],
        # the random-intercept model keeps the run fast with the stand-in fit; the ANCOVA is what is tested here
        "analysis": {"covariates": covariates, "model": "random_intercept"},
    })


def _people(n: int = 150, seed: int = 3) -> pd.DataFrame:
    """One row per participant: arm, age, site, each outcome's baseline and w1, w2 scores (NaN = not observed). The
    outcomes depend strongly on age and site, and age is imbalanced between the arms, so an ANCOVA that leaves them
    out has another estimate and a standard error several times larger."""
    rng = np.random.default_rng(seed)
    arm = np.array(["control", "coach", "nudge"])[np.arange(n) % 3]
    age = rng.uniform(18, 80, n).round(0) + 6.0 * (arm == "coach")
    site = rng.choice(["A", "B", "C"], n)
    site_shift = np.select([site == "B", site == "C"], [4.0, -3.0], 0.0)
    out = pd.DataFrame({"participant": [f"p{i:03d}" for i in range(n)], "arm": arm, "age": age, "site": site})
    for k, o in enumerate((PRIMARY, SECONDARY)):
        trait = rng.normal(0, 5, n)
        base = 40 + trait + 0.3 * age + rng.normal(0, 3, n)
        out[f"{o}@w0"] = base.round(2)
        for w in ("w1", "w2"):
            y = 5 + 0.5 * base + 0.6 * age + site_shift + trait + (3.0 - k) * (arm == "coach") + rng.normal(0, 2, n)
            out[f"{o}@{w}"] = np.where(rng.random(n) < 0.2, np.nan, y.round(2))
    # dropouts of every kind: no follow-up score at all (left out of the MMRM's participants, imputed by the tipping
    # point), a w1 score but none at w2, and a participant without a baseline (in no final-wave statistic)
    for o in (PRIMARY, SECONDARY):
        out.loc[out.index % 11 == 4, [f"{o}@w1", f"{o}@w2"]] = np.nan
        out.loc[out.index % 13 == 5, f"{o}@w2"] = np.nan
        out.loc[out.index == 7, f"{o}@w0"] = np.nan
    return out


def _warehouse(path, people: pd.DataFrame) -> None:
    with open_warehouse(path) as con:
        con.executemany("INSERT INTO assignments (participant, study_id, arm, assigned_at, batch_id) "
                        "VALUES (?, 's1', ?, now(), 'b')", people[["participant", "arm"]].values.tolist())
        rows = [("s1", p["participant"], w, o, float(p[f"{o}@{w}"])) for _, p in people.iterrows()
                for o in (PRIMARY, SECONDARY) for w in ("w0", "w1", "w2") if not np.isnan(p[f"{o}@{w}"])]
        con.executemany("INSERT INTO scores (study_id, participant, wave, outcome, value) VALUES (?, ?, ?, ?, ?)", rows)
        con.executemany("INSERT INTO participant_characteristics VALUES (?, 's1', 'age', NULL, ?, 'b')",
                        people[["participant", "age"]].values.tolist())
        con.executemany("INSERT INTO participant_characteristics VALUES (?, 's1', 'site', ?, NULL, 'b')",
                        people[["participant", "site"]].values.tolist())


def _wide(people: pd.DataFrame, outcome: str) -> pd.DataFrame:
    """The final-wave ANCOVA's participants (randomised, with a baseline) with the outcome at w2 (NaN = missing) and
    the site's dummies."""
    d = people[people[f"{outcome}@w0"].notna()]
    return pd.DataFrame({"arm": d["arm"], "age": d["age"], "site": d["site"],
                         "site[B]": (d["site"] == "B").astype(float), "site[C]": (d["site"] == "C").astype(float),
                         "baseline": d[f"{outcome}@w0"], "outcome": d[f"{outcome}@w2"]})


def _ols(wide: pd.DataFrame, formula: str):
    import statsmodels.formula.api as smf

    return smf.ols(formula, data=wide[wide["outcome"].notna()]).fit()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    people = _people()
    path = tmp_path_factory.mktemp("ancova") / "w.duckdb"
    _warehouse(path, people)
    return path, people


def _ancova_rows(path, protocol):
    with open_warehouse(path) as con:
        stats = plan_statistics(con, protocol)
    result = run_plan(stats, protocol, fit=ml_fit_stand_in)
    return stats, result, {(e.outcome, e.arm): e for e in result.effects if e.method == "ancova_final_wave"}


@pytest.mark.parametrize("covariates, terms", [(["age"], "age"), (["site"], "C(site)"), (["age", "site"], "age + C(site)")])
def test_the_final_wave_ancova_adjusts_for_the_declared_covariates_as_ols_does(study, covariates, terms):
    path, people = study
    _, result, rows = _ancova_rows(path, _protocol(covariates))
    for outcome in (PRIMARY, SECONDARY):
        ref = _ols(_wide(people, outcome), f"outcome ~ baseline + {terms} + C(arm, Treatment('control'))")
        for arm in ("coach", "nudge"):
            row, name = rows[(outcome, arm)], f"C(arm, Treatment('control'))[T.{arm}]"
            assert row.estimate == pytest.approx(ref.params[name], rel=1e-8, abs=1e-10)
            assert row.sd == pytest.approx(ref.bse[name], rel=1e-8)
            assert row.p_value == pytest.approx(ref.pvalues[name], rel=1e-6, abs=1e-300)
            assert (row.n_arm, row.n_control) == tuple(
                int(((ref.model.data.frame["arm"] == a)).sum()) for a in (arm, "control"))
    # the secondary outcome's rows are the Holm family's members, adjusted from these p-values
    assert all(rows[(SECONDARY, a)].p_adjusted is not None for a in ("coach", "nudge"))


def test_the_tipping_point_imputes_from_the_covariate_adjusted_ancova(study):
    """The dropouts (randomised, with a baseline, no final-wave score, also those with no follow-up score at all) are
    imputed by X beta with their covariates: the tipping point equals the one computed from participant rows."""
    path, people = study
    protocol = _protocol(["age", "site"])
    stats, result, _ = _ancova_rows(path, protocol)
    fw = stats.outcome(PRIMARY).final_wave
    wide = _wide(people, PRIMARY)
    assert sum(c.n for c in fw.dropouts.values()) == int(wide["outcome"].isna().sum()) > 0
    ref = tipping_point(statistics_from_frame(wide, control="control", covariates=["age", "site[B]", "site[C]"]),
                        direction="higher_is_better", outcome=PRIMARY, wave="w2")
    assert [t.arm for t in result.tipping_points] == [t.arm for t in ref]
    for got, want in zip(result.tipping_points, ref, strict=True):
        assert got.tipping_delta == pytest.approx(want.tipping_delta, rel=1e-8)
        assert got.effect_per_delta == pytest.approx(want.effect_per_delta, rel=1e-8)
        assert got.estimate_mar == pytest.approx(want.estimate_mar, rel=1e-8)
        assert (got.n_missing_arm, got.n_missing_control) == (want.n_missing_arm, want.n_missing_control)


def test_without_covariates_the_ancova_is_the_one_from_baseline_moments(study):
    """A plan without covariates gives the numbers of the moment-based ANCOVA it had before (per-arm paired moments of
    the completers, baseline moments of the dropouts), and those are OLS's y ~ baseline + arm."""
    from analysis.missing import ancova_effects, statistics_from_moments
    from schemas.suffstats import Moments, PairedMoments

    path, people = study
    stats, result, rows = _ancova_rows(path, _protocol([]))
    for outcome in (PRIMARY, SECONDARY):
        wide = _wide(people, outcome)
        done, missing = wide[wide["outcome"].notna()], wide[wide["outcome"].isna()]
        moments = statistics_from_moments(
            {a: PairedMoments.from_arrays(g["baseline"], g["outcome"]) for a, g in done.groupby("arm")},
            {a: Moments.from_arrays(g["baseline"]) for a, g in missing.groupby("arm")}, control="control")
        assert stats.outcome(outcome).final_wave.completers["coach"].columns == ("intercept", "baseline")
        ref = _ols(wide, "outcome ~ baseline + C(arm, Treatment('control'))")
        for before in ancova_effects(moments, outcome=outcome, wave="w2"):
            row = rows[(outcome, before.arm)]
            assert row.estimate == pytest.approx(before.estimate, rel=1e-10)
            assert row.sd == pytest.approx(before.sd, rel=1e-10)
            assert row.estimate == pytest.approx(ref.params[f"C(arm, Treatment('control'))[T.{before.arm}]"], rel=1e-8)
        if outcome == PRIMARY:
            for got, want in zip(result.tipping_points, tipping_point(moments, direction="higher_is_better"),
                                 strict=True):
                assert got.tipping_delta == pytest.approx(want.tipping_delta, rel=1e-10)


def _with_extra(tmp_path, people: pd.DataFrame, extra: list[tuple[str, str, str, float]]):
    """The study's warehouse plus a coach participant without a recorded age or site and these primary scores."""
    path = tmp_path / "w.duckdb"
    _warehouse(path, people)
    with open_warehouse(path) as con:
        con.execute("INSERT INTO assignments (participant, study_id, arm, assigned_at, batch_id) "
                    "VALUES ('x1', 's1', 'coach', now(), 'b')")
        con.executemany("INSERT INTO scores (study_id, participant, wave, outcome, value) VALUES ('s1', 'x1', ?, ?, ?)",
                        extra)
    return path


def test_a_dropout_without_a_covariate_leaves_the_ancova_and_refuses_only_the_tipping_point(tmp_path):
    """A participant with a baseline and no follow-up score is no completer (the ANCOVA does not need its age) but is
    one of the dropouts the tipping point imputes from X beta: without its age it cannot be, and the row says so."""
    people = _people(n=90, seed=8)
    path = _with_extra(tmp_path, people, [("w0", PRIMARY, 50.0)])
    _, result, rows = _ancova_rows(path, _protocol(["age"]))
    ref = _ols(_wide(people, PRIMARY), "outcome ~ baseline + age + C(arm, Treatment('control'))")
    assert rows[(PRIMARY, "coach")].estimate == pytest.approx(ref.params["C(arm, Treatment('control'))[T.coach]"],
                                                              rel=1e-8)
    tips = [e for e in result.effects if e.method == "tipping_point_delta"]
    assert tips and all(not e.estimable and "1 participant(s) missing the final-wave who5.percent lack a covariate"
                        in e.reason for e in tips)


def test_a_completer_without_a_covariate_is_refused_with_the_reason(tmp_path):
    people = _people(n=90, seed=8)
    path = _with_extra(tmp_path, people, [("w0", PRIMARY, 50.0), ("w2", PRIMARY, 60.0)])
    _, result, rows = _ancova_rows(path, _protocol(["age"]))
    assert PRIMARY in result.failed and SECONDARY not in result.failed
    assert all(not rows[(PRIMARY, a)].estimable and "covariate 'age'" in rows[(PRIMARY, a)].reason
               and "1 of the" in rows[(PRIMARY, a)].reason for a in ("coach", "nudge"))
    assert rows[(SECONDARY, "coach")].estimable


def test_the_public_tier_says_its_ancova_adjusts_for_the_baseline_only(study):
    """The DP release holds per arm x wave moments of (baseline, outcome) only, so the public ANCOVA cannot adjust for
    the covariates; the run says so rather than differing silently from the trusted rows."""
    from analysis.plan import ReleasedCells
    from schemas.suffstats import NoisyPairedMoments, PairedMoments

    _, people = study
    released = {}
    for o in (PRIMARY, SECONDARY):
        cells = {}
        for w in ("w1", "w2"):
            d = people[people[f"{o}@w0"].notna() & people[f"{o}@{w}"].notna()]
            cells |= {(a, w): NoisyPairedMoments.exact(PairedMoments.from_arrays(g[f"{o}@w0"], g[f"{o}@{w}"]))
                      for a, g in d.groupby("arm")}
        released[o] = ReleasedCells(cells, ("w1", "w2"))
    adjusted = run_public_plan(released, _protocol(["age", "site"]))
    plain = run_public_plan(released, _protocol([]))
    note = [n for n in adjusted.notes if "adjusts for each outcome's baseline only" in n]
    assert len(note) == 1 and "(age, site)" in note[0]
    assert not any("baseline only" in n for n in plain.notes)
    assert adjusted.effects == plain.effects  # the release and the public model are unchanged
