"""Design-stage simulation benchmark and validation (issue 19): ``flourish design``'s engine on the demo protocol.

    .venv/bin/python benchmarks/design.py [--nsim 1000] [--monitor-nsim 1000] [--public-nsim 0] [--speed-trials 20]

The demo protocol is the one ``flourish simulate`` writes (flows.simulation.field_study: three arms, WHO-5 percent
primary at m12, MCID 10, five follow-up waves, two engagement metrics). It has no design section, so the stated
defaults apply (ICC 0.6, variance doubling over a year, serial correlation 0.5, 25% attrition, outcome SD 20 = a
fifth of WHO-5's 0..100 range); for the divergence monitor the primary outcome gets a non-inferiority margin of 2
points, its ROPE (with the default margin, its MCID of 10 points = 0.5 SD, a 0.2 SD decline is inside the margin
and is by definition not a divergence, so no N detects it).

1. Calibration at the planned N (the smallest N per arm with analytic power >= 80% at 1 MCID): under the null the
   type I error against alpha; at 1 MCID the simulated power against the closed-form known-covariance power
   (analysis.design.analytic, Diggle et al. 2002 §4.3 formulas), difference in Monte Carlo SEs; coverage of the
   95% Kenward-Roger interval against [93.6, 96.4] (nsim 1,000: 95 +- 1.96 x 0.69).
2. The divergence monitor: engagement +0.3 SD and flourishing -0.2 SD, flourishing unchanged, the final wave
   suppressed; at the N the monitor needs for 80% detection (analytic) and, for contrast, at the primary's N.
3. Speed, same run: simulated trials per second of the engine (statistics drawn directly, the plan's REML MMRM with
   Kenward-Roger) at the planned N and at 1,000 per arm, beside simr-style refitting (participants simulated
   and refitted by statsmodels MixedLM, random intercept, REML: statsmodels has no unstructured-covariance MMRM)
   on the same design.
4. With ``--public-nsim K``: the public tier's power and coverage at epsilon 2, 4 and 8 (K noise-aware fits each,
   the closed-form public model since main's public-tier merge).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, not benchmarks/ (analysis.py here)

from analysis.design import DesignAssumptions, simulate_cell, simulate_monitor
from analysis.design.engine import simulate_public
from analysis.design.statistics import pattern_probabilities
from flows.design import _outcome_mid, release_noise
from flows.simulation.field_study import protocol as demo_protocol

SD = 20.0


def assumptions() -> DesignAssumptions:
    p = demo_protocol()
    p = p.model_copy(update={"primary_outcome": p.primary_outcome.model_copy(update={"ni_margin": 2.0})})
    return DesignAssumptions.of(p, SD, _outcome_mid(p))


def simr_style(a: DesignAssumptions, n: int, attrition: float, trials: int, seed: int = 1) -> float:
    """Trials per second of simulate-participants-and-refit with statsmodels MixedLM on the same design."""
    import pandas as pd
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(seed)
    sigma, pp = a.sigma(), pattern_probabilities(len(a.waves), attrition)
    counts = a.n_per_arm(n)
    chol = np.linalg.cholesky(sigma)
    t0 = time.perf_counter()
    for _ in range(trials):
        frames = []
        for arm in a.arms:
            m = counts[arm]
            w = a.outcome_mean + rng.standard_normal((m, len(a.months))) @ chol.T
            w[:, 1:] += a.effect_path(a.sign * float(a.protocol.primary_outcome.mcid) if arm != a.arms[0] else 0.0)[1:] \
                - a.outcome_mean
            last = rng.choice(len(pp), size=m, p=pp)
            for t, wave in enumerate(a.waves):
                keep = last > t
                frames.append(pd.DataFrame({"pid": [f"{arm}{i}" for i in np.flatnonzero(keep)], "arm": arm,
                                            "wave": wave, "baseline": w[keep, 0], "y": w[keep, 1 + t]}))
        data = pd.concat(frames, ignore_index=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            smf.mixedlm("y ~ C(wave) * C(arm) + C(wave):baseline", data, groups=data["pid"]).fit(reml=True)
    return trials / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nsim", type=int, default=1000)
    ap.add_argument("--monitor-nsim", type=int, default=1000)
    ap.add_argument("--public-nsim", type=int, default=0)
    ap.add_argument("--speed-trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--json", type=str, default=None, help="also write the results here")
    ap.add_argument("--public-only", action="store_true", help="run part 4 only")
    ap.add_argument("--public-n", type=int, default=None, help="N per arm of part 4 (default: the planned N)")
    args = ap.parse_args()
    a, att, out = assumptions(), 0.25, {}
    n = a.planned_n(att)
    print(f"demo protocol: arms {a.arms}, follow-up waves {a.waves}, outcome SD {SD:g}, alpha {a.alpha:g}, "
          f"planned N {n} per arm (analytic power >= 0.8 at 1 MCID, attrition {att:.0%})")

    if args.public_only:
        args.nsim = args.monitor_nsim = args.speed_trials = 0
    # 1. calibration
    if args.nsim:
        calibration(a, n, att, args, out)
    if args.monitor_nsim:
        monitor(a, n, att, args, out)
    if args.speed_trials:
        speed(a, n, att, args, out)
    if args.public_nsim:
        public(a, n, att, args, out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=float)


def calibration(a, n, att, args, out) -> None:
    null = simulate_cell(a, n, att, 0.0, args.nsim, args.seed)
    alt = simulate_cell(a, n, att, 1.0, args.nsim, args.seed)
    out["null"], out["alt"] = null.record(), alt.record()
    print(f"\n1. calibration, nsim {args.nsim} per cell")
    print(f"   type I error {null.rejection_rate:.4f} +- {null.rejection_rate_mcse:.4f} (alpha {a.alpha:g}: "
          f"{(null.rejection_rate - a.alpha) / math.sqrt(a.alpha * (1 - a.alpha) / (args.nsim - null.n_failed)):+.2f} "
          f"MC SEs); failures {null.n_failed}")
    diff = (alt.power - alt.analytic_power) / alt.power_mcse
    print(f"   power at 1 MCID {alt.power:.4f} +- {alt.power_mcse:.4f}; analytic {alt.analytic_power:.4f} "
          f"({diff:+.2f} MC SEs); failures {alt.n_failed}")
    for name, c in (("null", null), ("1 MCID", alt)):
        print(f"   {name}: coverage {100 * c.coverage:.1f}% +- {100 * c.coverage_mcse:.1f} "
              f"({'inside' if 0.936 <= c.coverage <= 0.964 else 'OUTSIDE'} [93.6, 96.4]); bias {c.bias:+.3f} +- "
              f"{c.bias_mcse:.3f}; RMSE {c.rmse:.3f} +- {c.rmse_mcse:.3f}; mean SE {c.mean_se:.3f} vs analytic "
              f"{c.analytic_se:.3f}; {c.trials_per_second:.1f} trials/s")



def monitor(a, n, att, args, out) -> None:
    s = a.settings
    n_mon = a.monitor_n(att)
    print(f"\n2. divergence monitor (margin {a.protocol.primary_outcome.margin:g} points = "
          f"{a.protocol.primary_outcome.margin / SD:.2f} SD), nsim {args.monitor_nsim}; the monitor needs N {n_mon} "
          f"per arm for 80% analytic detection of engagement +{s.engagement_effect_sd:g} SD with flourishing "
          f"-{s.harm_effect_sd:g} SD")
    out["monitor"] = []
    for label, nn, fl, sup, k in (("divergence", n_mon, -s.harm_effect_sd, False, args.monitor_nsim),
                                  ("flourishing unchanged", n_mon, 0.0, False, args.monitor_nsim),
                                  ("final wave suppressed", n_mon, -s.harm_effect_sd, True, max(20, args.monitor_nsim // 10)),
                                  ("divergence at the primary's N", n, -s.harm_effect_sd, False,
                                   max(20, args.monitor_nsim // 5))):
        m = simulate_monitor(a, label, nn, att, s.engagement_effect_sd, fl, k, args.seed, suppress_final=sup)
        out["monitor"].append(m.record())
        print(f"   {label:32s} N {nn:>5}: divergence at the final wave {m.divergence_rate_final:.4f} +- "
              f"{m.divergence_rate_final_mcse:.4f} (analytic {m.analytic_detection_final:.3f}), at any wave "
              f"{m.divergence_rate_any_wave:.4f}, indeterminate {m.indeterminate_rate_final:.3f} "
              f"(nsim {k}, failures {m.n_failed})")



def speed(a, n, att, args, out) -> None:
    print(f"\n3. speed, same run ({args.speed_trials} trials each)")
    out["speed"] = {}
    for nn in (n, 1000):
        t0 = time.perf_counter()
        simulate_cell(a, nn, att, 1.0, args.speed_trials, args.seed + 1)
        engine = args.speed_trials / (time.perf_counter() - t0)
        simr = simr_style(a, nn, att, max(3, args.speed_trials // (1 if nn < 500 else 4)))
        out["speed"][nn] = {"engine_trials_per_second": engine, "mixedlm_trials_per_second": simr}
        print(f"   N {nn:>5} per arm: engine {engine:.2f} trials/s (REML MMRM, unstructured, Kenward-Roger); "
              f"simr-style MixedLM refit {simr:.2f} trials/s (random intercept only); ratio {engine / simr:.1f}x")



def public(a, n, att, args, out) -> None:
    n = args.public_n or n
    if args.public_nsim:
        print(f"\n4. public tier at N {n} per arm, 1 MCID, {args.public_nsim} noise-aware fits per epsilon")
        out["public"] = []
        for eps in (2.0, 4.0, 8.0):
            share, noise, center, half_range = release_noise(a.protocol, eps)
            c = simulate_public(a, eps, share, noise, n, att, 1.0, args.public_nsim, args.seed, center=center,
                                half_range=half_range)
            out["public"].append(c.record())
            print(f"   epsilon {eps:g} (release share {share:g}; noise SD of a cell's sum {c.noise_sd_sum_y:.0f}): "
                  f"power {c.power:.3f} +- {c.power_mcse:.3f}, coverage {c.coverage:.3f} +- {c.coverage_mcse:.3f}, "
                  f"mean interval width {c.mean_interval_width:.1f}, failures {c.n_failed}")


if __name__ == "__main__":
    main()
