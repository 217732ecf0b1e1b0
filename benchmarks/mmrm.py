"""Benchmark of the MMRM on pattern statistics, beside statsmodels MixedLM in the same run.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        .venv/bin/python benchmarks/mmrm.py [--participants 1000000] [--repeats 3] [--skip-bayes] [--skip-mixedlm]

An in-memory DuckDB table of N participants x 6 follow-up waves (3 arms, baseline, one covariate; a random
intercept and slope so the variance grows over waves; 40% drop out early, 3% of the remaining values
missing intermittently) is reduced to pattern statistics by ``analysis.mmrm.pattern_statistics_sql``
(second order, and with the fourth-order sums the sandwich needs); then the unstructured REML fit from the
statistics (with sandwich and Kenward-Roger-linear), and the Bayesian fit (the first, compiling, and a warm
one that only swaps data). Figures are medians of ``--repeats`` runs (the Bayesian compile once). The
same-run comparison: statsmodels MixedLM (random intercept, REML, the same fixed effects) on the first
``--mixedlm-participants`` participants, beside the MMRM on their statistics. Peak memory is the process's
maximum resident set (``ru_maxrss``), printed at the end.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARMS = ("control", "coach", "nudge")
WAVES = tuple(f"w{t}" for t in range(1, 7))


def build_table(con, n: int, seed: float = 0.42) -> float:
    """Create table ``obs`` (participant, arm, wave, y, baseline, age) in DuckDB SQL; return seconds."""
    t0 = time.perf_counter()
    normal = "sqrt(-2 * ln(random())) * cos(2 * pi() * random())"
    con.execute(f"SELECT setseed({seed})")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE people AS
        SELECT i AS participant, ['control', 'coach', 'nudge'][1 + (i % 3)] AS arm,
               50 + 15 * {normal} AS baseline, 40 + 10 * {normal} AS age,
               6 * {normal} AS u0, 1.5 * {normal} AS u1,
               CASE WHEN random() < 0.6 THEN 6 ELSE 1 + CAST(floor(5 * random()) AS INTEGER) END AS last_wave
        FROM range({n}) t(i)""")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE obs AS
        SELECT participant, arm, 'w' || t AS wave,
               10 + 0.8 * baseline + 0.02 * age + t
               + CASE arm WHEN 'coach' THEN 0.6 * t WHEN 'nudge' THEN 0.3 * t ELSE 0 END
               + u0 + u1 * t + 8 * {normal} AS y,
               baseline, age
        FROM people, range(1, 7) w(t)
        WHERE t <= last_wave AND random() > 0.03""")
    return time.perf_counter() - t0


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--participants", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mixedlm-participants", type=int, default=50_000)
    ap.add_argument("--skip-bayes", action="store_true")
    ap.add_argument("--skip-mixedlm", action="store_true")
    args = ap.parse_args()

    import duckdb

    from analysis.mmrm import MMRMDesign, fit_mmrm, pattern_statistics

    design = MMRMDesign(ARMS, WAVES, ("age",))
    con = duckdb.connect(":memory:")
    # the machine is shared: the load average says how much the figures below were slowed by others
    print(f"DuckDB {duckdb.__version__}, threads {con.execute('SELECT current_setting(' + repr('threads') + ')').fetchone()[0]}, "
          f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    seconds = build_table(con, args.participants)
    n_rows = con.execute("SELECT count(*) FROM obs").fetchone()[0]
    print(f"table: {args.participants:,} participants, {n_rows:,} outcome rows, built in {seconds:.1f} s", flush=True)

    t2, stats2 = median_time(lambda: pattern_statistics(con, "obs", design), args.repeats)
    print(f"pattern statistics (likelihood sums), DuckDB GROUP BY: {t2:.2f} s  "
          f"[{len(stats2.patterns)} patterns, {stats2.n_participants:,} participants]", flush=True)
    t4, stats4 = median_time(lambda: pattern_statistics(con, "obs", design, fourth_order=True), args.repeats)
    print(f"pattern statistics with fourth-order sums (sandwich):   {t4:.2f} s", flush=True)

    tf, fit = median_time(lambda: fit_mmrm(stats4, design), args.repeats)
    lr = fit.effect("coach")
    print(f"REML unstructured fit from the statistics (+ sandwich, KR-linear): {tf:.2f} s  "
          f"[{fit.convergence.iterations} iterations; long-run coach {lr.estimate:.3f} "
          f"(model SE {lr.model_based.se:.4f}, sandwich SE {lr.sandwich.se:.4f}, df {lr.model_based.df:.0f})]", flush=True)

    if not args.skip_bayes:
        from analysis.mmrm import fit_mmrm_bayes

        t0 = time.perf_counter()
        post = fit_mmrm_bayes(stats2, design)
        first = time.perf_counter() - t0
        print(f"Bayesian fit, first in this process: {first:.1f} s (compile {post.compile_seconds:.1f} s, "
              f"sampling {post.sampling_seconds:.1f} s; 4 chains x 1,000 draws + 1,000 tuning; "
              f"diagnostics passed={post.diagnostics.passed}, R-hat {post.diagnostics.rhat_max:.3f}, "
              f"ESS {post.diagnostics.ess_bulk_min:.0f})", flush=True)
        tw, warm = median_time(lambda: fit_mmrm_bayes(stats2, design), args.repeats)
        print(f"Bayesian fit, warm (with_data, no compile): {tw:.1f} s  [long-run coach posterior mean "
              f"{warm.effect('coach').mean:.3f}, SD {warm.effect('coach').sd:.4f}]", flush=True)

    if not args.skip_mixedlm:
        import statsmodels.formula.api as smf

        n_m = args.mixedlm_participants
        frame = con.execute(f"SELECT * FROM obs WHERE participant < {n_m}").df()
        con.execute(f"CREATE OR REPLACE TEMP VIEW obs_sub AS SELECT * FROM obs WHERE participant < {int(n_m)}")
        sub = pattern_statistics(con, "obs_sub", design)
        t_mmrm, sub_fit = median_time(lambda: fit_mmrm(sub, design), args.repeats)
        t0 = time.perf_counter()
        arm = "C(arm, Treatment('control'))"
        mixed = smf.mixedlm(f"y ~ C(wave) * {arm} + baseline * C(wave) + age", frame,
                            groups=frame["participant"]).fit(reml=True)
        t_mixed = time.perf_counter() - t0
        mixed_lr = mixed.params[f"{arm}[T.coach]"] + mixed.params[f"C(wave)[T.w6]:{arm}[T.coach]"]
        print(f"same run, {n_m:,} participants ({len(frame):,} rows): statsmodels MixedLM random intercept "
              f"{t_mixed:.1f} s (one fit; long-run coach {mixed_lr:.3f}) vs MMRM REML from statistics "
              f"{t_mmrm:.2f} s (long-run coach {sub_fit.effect('coach').estimate:.3f})", flush=True)

    print(f"peak resident memory: {peak_rss_mib():,.0f} MiB; load average {os.getloadavg()[0]:.1f} at the end", flush=True)


if __name__ == "__main__":
    main()
