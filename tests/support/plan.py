"""A stand-in for the Bayesian fit, and a simulated study's plan statistics built from its rows in numpy, for the
tests of the analysis plan (tests/analysis/test_plan.py) and of its flows (tests/flows/cli/test_analysis.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.longitudinal import crossproducts_from_frame
from analysis.plan import FinalWaveCells, OutcomeStatistics, PlanStatistics, Unavailable, final_wave
from flows.statistics import design_spec
from schemas.protocol import StudyProtocol
from schemas.suffstats import CellCrossProducts, Moments, PairedMoments


def ml_fit_stand_in(stats, plan, *, outcome, direction, mcid=None, rope=None):
    """Fast stand-in for the Bayesian fit: the ML fit on the same cross-products with normal-approximation
    probabilities (the real sampler runs in the slow tests)."""
    from scipy.stats import norm

    from analysis.longitudinal import ml_fit
    from analysis.results import Diagnostics, LongitudinalResult
    from schemas.results import Effect

    ml = ml_fit(stats.cross)
    spec, sign, effects = stats.spec, (1 if direction == "higher_is_better" else -1), []
    for a in spec.treated:
        for w in (*spec.waves, "long_run"):
            at = spec.waves[-1] if w == "long_run" else w
            m, s = ml.coef(f"arm[{a}]:wave[{at}]")
            effects.append(Effect(
                outcome=outcome, arm=a, control=spec.control, wave=w, method="ml_stand_in", estimate=m, sd=s,
                lower=m - 1.96 * s, upper=m + 1.96 * s, interval_level=0.95, p_benefit=float(norm.cdf(sign * m / s)),
                p_above_mcid=None if mcid is None else float(norm.cdf((sign * m - mcid) / s)),
                p_in_rope=None if rope is None else float(norm.cdf((rope - m) / s) - norm.cdf((-rope - m) / s)),
                n_arm=stats.n_at(a, at), n_control=stats.n_at(spec.control, at), direction=direction))
    return LongitudinalResult(outcome, direction, spec.control, spec.arms, spec.waves, plan.effect_shape,
                              plan.time_trend, tuple(effects), (), (), Diagnostics(True, 1.0, 1000.0, 0),
                              stats.cross.n_participants, stats.cross.n_obs, "ml_stand_in")


def simulated_scores(rng: np.random.Generator, protocol: StudyProtocol, n: int = 240,
                     effects: dict[str, float] | None = None, drop: float = 0.15) -> pd.DataFrame:
    """Long rows (participant, arm, wave, outcome, value) of a two-arm study: every outcome at every wave,
    a follow-up shift of ``effects[outcome]`` in the treated arm, about ``drop`` of follow-up rows missing."""
    effects = effects or {}
    arms = protocol.arm_names
    arm = np.array([arms[i % len(arms)] for i in range(n)])
    trait = rng.normal(0, 1, n)
    rows = []
    for o in protocol.outcomes:
        for k, w in enumerate(protocol.wave_names):
            seen = np.ones(n, bool) if k == 0 else rng.random(n) >= drop
            shift = 0.0 if k == 0 else effects.get(o.name, 0.0)
            v = 50 + 10 * trait + shift * (arm != protocol.control_arm) + rng.normal(0, 6, n)
            rows += [(f"p{i:04d}", arm[i], w, o.name, float(v[i])) for i in range(n) if seen[i]]
    return pd.DataFrame(rows, columns=["participant", "arm", "wave", "outcome", "value"])


def plan_statistics_from_rows(scores: pd.DataFrame, protocol: StudyProtocol,
                              telemetry: dict[str, dict[str, PairedMoments]] | None = None) -> PlanStatistics:
    """What flows.statistics.plan_statistics reads from a warehouse, computed from the rows in numpy."""
    bw = protocol.baseline_wave
    out = []
    for o in protocol.outcomes:
        rows = scores[scores["outcome"] == o.name]
        base = rows[rows["wave"] == bw].set_index("participant")["value"]
        follow = rows[(rows["wave"] != bw) & rows["participant"].isin(base.index)].copy()
        follow["baseline"] = follow["participant"].map(base)
        observed = tuple(w for w in protocol.wave_names if w != bw and w in set(follow["wave"]))
        spec = design_spec(protocol, waves=observed) if observed else None
        longitudinal = (crossproducts_from_frame(follow, spec, value="value") if observed
                        else Unavailable(f"{o.name} has no follow-up scores yet (only the baseline)"))
        final = final_wave(protocol, o)
        fw, subgroups = None, {}
        if final in observed:
            fin = rows[rows["wave"] == final].set_index("participant")["value"]
            arm_of = rows.drop_duplicates("participant").set_index("participant")["arm"]
            wide = pd.DataFrame({"baseline": base, "y": fin.reindex(base.index), "arm": arm_of.reindex(base.index)})
            done, missing = wide[wide["y"].notna()], wide[wide["y"].isna()]
            fw = FinalWaveCells(
                {a: CellCrossProducts.from_paired(PairedMoments.from_arrays(g["baseline"], g["y"]))
                 for a, g in done.groupby("arm")},
                {a: CellCrossProducts.from_paired(Moments.from_arrays(missing[missing["arm"] == a]["baseline"]))
                 for a in wide["arm"].unique()})
            if o.name == protocol.primary_outcome.name and "baseline_tercile" in protocol.analysis.subgroups:
                ordered = wide.sort_values(["baseline"], kind="stable")
                ordered["level"] = ["T" + str(1 + (3 * k) // len(ordered)) for k in range(len(ordered))]
                done = ordered[ordered["y"].notna()]
                subgroups["baseline_tercile"] = {
                    lev: {a: PairedMoments.from_arrays(g2["baseline"], g2["y"]) for a, g2 in g.groupby("arm")}
                    for lev, g in done.groupby("level")}
        mmrm = _mmrm_statistics(follow, protocol, observed) if observed and protocol.analysis.primary_model(
            len(observed)) == "mmrm" else None
        out.append(OutcomeStatistics(o.name, observed, longitudinal, fw, subgroups, mmrm=mmrm))
    counts = scores.drop_duplicates("participant")["arm"].value_counts().to_dict()
    return PlanStatistics(tuple(out), counts, telemetry or {})


def _mmrm_statistics(follow: pd.DataFrame, protocol: StudyProtocol, observed: tuple[str, ...]):
    """The MMRM's pattern statistics of the follow-up rows, by the same SQL text the warehouse path runs."""
    import duckdb

    from analysis.mmrm import pattern_statistics_from_rows, pattern_statistics_sql
    from analysis.plan import mmrm_design

    design = mmrm_design(protocol, observed)
    con = duckdb.connect()
    try:
        con.register("obs", follow.rename(columns={"value": "y"})[["participant", "arm", "wave", "y", "baseline"]])
        rows = con.execute(pattern_statistics_sql(design, "obs", fourth_order=True)).fetchall()
    finally:
        con.close()
    return pattern_statistics_from_rows(design, rows, fourth_order=True)
