"""Benchmark of the primary model end to end, beside the usual alternatives.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        .venv/bin/python benchmarks/analysis.py [--sizes 10000 1000000] [--skip-mixedlm] [--skip-naive]

The MMRM primary beside the random-intercept model and MixedLM at 50,000 in one run (issue 20):
``--model both --sizes 50000 1000000 --mixedlm-sizes 50000 --skip-naive``.

For each size: write a DuckDB warehouse file (3 arms, baseline + 5 follow-up waves = 6 waves,
15% of follow-up rows missing), then time, in this process,
  1. sufficient statistics: the cross-products SQL over ``scores`` joined to ``assignments``
     (``flows.statistics.longitudinal_stats``, on one DuckDB thread so that sums are reproducible; the
     same SQL on all threads is timed beside it),
  2. compile (first size only: the compiled model is reused by ``with_data`` afterwards),
  3. sampling 4 chains x 1,000 draws (+1,000 tuning) with nutpie, and the diagnostics,
and print each figure and the end-to-end sum. Peak resident memory is the process maximum
(``ru_maxrss``), reported after the largest size. Same-run comparisons (flags to skip): statsmodels
MixedLM (ML, random intercept, same fixed effects) at 10,000 and 50,000 participants, and nutpie on
the naive model with one latent intercept per participant at 10,000. ``--random-slopes`` runs the
random intercept-and-slope model instead (data simulated with slope SD 0.5 per month).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from schemas.protocol import StudyProtocol  # noqa: E402

ARMS = ("control", "coach", "nudge")
WAVE_DAYS = (0, 14, 30, 61, 91, 182)


def protocol(random_slopes: bool = False) -> StudyProtocol:
    return StudyProtocol.model_validate({
        "study_id": "bench",
        "title": "benchmark",
        "arms": [{"name": a, "control": a == "control"} for a in ARMS],
        "waves": [{"name": f"w{i}", "day": d, "instruments": ["who5"]} for i, d in enumerate(WAVE_DAYS)],
        "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "w5"},
        "privacy": {"epsilon": 1.0},
        "analysis": {"effect_shape": "per_wave", "time_trend": "per_wave", "random_slopes": random_slopes},
    })


def build_warehouse(path: Path, n: int, seed: int = 1, slope_sd: float = 0.0) -> float:
    """Write assignments and scores for n participants with DuckDB SQL; return seconds. ``slope_sd``
    adds a random slope on months per participant (for the random-slopes run)."""
    from flows.warehouse import open_warehouse

    t0 = time.perf_counter()
    with open_warehouse(path) as con:
        con.execute(f"SELECT setseed({(seed % 1000) / 1000})")
        con.execute(f"""
            INSERT INTO assignments (participant, study_id, arm, assigned_at, stratum, batch_id)
            SELECT 'p' || i, 'bench', ['control', 'coach', 'nudge'][1 + (i % 3)], TIMESTAMPTZ '2026-01-01', NULL, 'b'
            FROM range({n}) t(i)""")
        # participant level: baseline ~ N(50, 15), intercept u ~ N(0, 8) (Box-Muller normals)
        con.execute(f"""
            CREATE TEMP TABLE people AS
            SELECT 'p' || i AS participant, i % 3 AS arm_i,
                   50 + 15 * sqrt(-2 * ln(random())) * cos(2 * pi() * random()) AS baseline,
                   8 * sqrt(-2 * ln(random())) * cos(2 * pi() * random()) AS u,
                   {float(slope_sd)} * sqrt(-2 * ln(random())) * cos(2 * pi() * random()) AS u1
            FROM range({n}) t(i)""")
        con.execute("""
            INSERT INTO scores (study_id, participant, wave, outcome, value, source)
            SELECT 'bench', participant, 'w0', 'who5.percent', baseline, 'flourish' FROM people""")
        waves = ", ".join(f"({k}, {d / 30.4375})" for k, d in enumerate(WAVE_DAYS) if k > 0)
        con.execute(f"""
            INSERT INTO scores (study_id, participant, wave, outcome, value, source)
            SELECT 'bench', participant, 'w' || k,  'who5.percent',
                   20 + 0.6 * baseline + 0.3 * months + (arm_i = 1)::INT * 3 * (1 - exp(-months / 2))
                   + (arm_i = 2)::INT * 1.5 + u + u1 * months + 10 * sqrt(-2 * ln(random())) * cos(2 * pi() * random()),
                   'flourish'
            FROM people, (VALUES {waves}) w(k, months)
            WHERE random() > 0.15""")
    return time.perf_counter() - t0


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def primary(path: Path, proto: StudyProtocol) -> dict[str, float]:
    import nutpie

    import analysis.longitudinal as L
    from analysis.longitudinal import model as M
    from flows.statistics import longitudinal_stats
    from flows.warehouse import open_warehouse

    out: dict[str, float] = {}
    t0 = time.perf_counter()
    with open_warehouse(path, read_only=True) as con:
        stats = longitudinal_stats(con, proto)
    out["suffstats_s"] = time.perf_counter() - t0
    # same run: the same SQL on all of DuckDB's threads (not reproducible to the last bit: flows.statistics._one_thread)
    t0 = time.perf_counter()
    with open_warehouse(path, read_only=True) as con:
        longitudinal_stats.__wrapped__(con, proto)
    out["suffstats_all_threads_s"] = time.perf_counter() - t0
    plan = proto.analysis
    t1 = time.perf_counter()
    std = M.standardise(stats)
    data = M.model_data(std.cross, stats.spec, plan)
    cached = len(M.COMPILE_CACHE)
    M.compiled_model(stats.spec, plan, data)
    out["compile_s"] = time.perf_counter() - t1 if len(M.COMPILE_CACHE) > cached else 0.0
    t2 = time.perf_counter()
    result = L.fit_from_crossproducts(stats, plan, outcome="who5.percent")
    out["sample_and_diagnostics_s"] = time.perf_counter() - t2
    out["sampling_s"] = result.diagnostics.sampling_seconds or float("nan")
    out["total_s"] = out["suffstats_s"] + out["compile_s"] + out["sample_and_diagnostics_s"]
    out["rhat_max"] = result.diagnostics.rhat_max
    out["ess_bulk_min"] = result.diagnostics.ess_bulk_min
    out["divergences"] = result.diagnostics.divergences
    out["passed"] = float(result.diagnostics.passed)
    out["n_participants"] = stats.cross.n_participants
    out["n_obs"] = stats.cross.n_obs
    out["long_run_coach"] = result.effect("coach").estimate
    del nutpie
    return out


def mmrm_primary(path: Path, proto: StudyProtocol) -> dict[str, float]:
    """The MMRM primary as `flourish analyze` runs it on a plan with two or more follow-up waves: the pattern
    statistics from the warehouse (``flows.statistics.mmrm_stats``: one GROUP BY on one DuckDB thread, with the
    fourth-order sums the sandwich needs), then ``analysis.plan.fit_primary_mmrm`` (REML, unstructured,
    Kenward-Roger and sandwich rows), the function ``run_plan`` calls."""
    from analysis.plan import OutcomeStatistics, fit_primary_mmrm
    from flows.statistics import mmrm_stats
    from flows.warehouse import open_warehouse

    waves = [w.name for w in proto.waves[1:]]
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    with open_warehouse(path, read_only=True) as con:
        stats = mmrm_stats(con, proto, outcome="who5.percent", waves=waves)
    out["suffstats_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    s = OutcomeStatistics("who5.percent", tuple(waves), None, mmrm=stats)  # type: ignore[arg-type]
    result, rows, failure = fit_primary_mmrm(s, proto.primary_outcome, proto, list(ARMS[1:]), running=False)
    out["fit_s"] = time.perf_counter() - t1
    out["total_s"] = out["suffstats_s"] + out["fit_s"]
    if failure is not None:
        raise SystemExit(f"the MMRM failed: {failure}")
    long_run = [e for e in rows if e.arm == "coach" and e.wave == "long_run"]
    out["long_run_coach"] = long_run[0].estimate if long_run else float("nan")
    out["rows"] = len(rows)
    return out


def long_frame(path: Path, proto: StudyProtocol):
    from flows.statistics import observations_sql
    from flows.warehouse import open_warehouse

    with open_warehouse(path, read_only=True) as con:
        f = con.execute(f"SELECT * FROM {observations_sql(proto, 'who5.percent')}").df()
    return f.rename(columns={"y": "outcome"})


def mixedlm(path: Path, proto: StudyProtocol) -> float:
    from analysis.frequentist import fit_mixedlm

    frame = long_frame(path, proto)
    waves = {w.name: w.months for w in proto.waves[1:]}
    t0 = time.perf_counter()
    fit_mixedlm(frame, proto.analysis, control="control", waves=waves)
    return time.perf_counter() - t0


def naive(path: Path, proto: StudyProtocol, draws: int) -> dict[str, float]:
    """One latent intercept per participant (non-centred), the same fixed effects, nutpie."""
    import nutpie
    import pymc as pm

    frame = long_frame(path, proto)
    waves = [w.name for w in proto.waves[1:]]
    pid, n_p = frame["participant"].factorize()[0], frame["participant"].nunique()
    cols = [(frame["wave"] == w).to_numpy(float) for w in waves]
    cols += [((frame["arm"] == a) & (frame["wave"] == w)).to_numpy(float) for a in ARMS[1:] for w in waves]
    b = frame["baseline"].to_numpy()
    cols.append((b - b.mean()) / b.std())
    x = np.column_stack(cols)
    y = frame["outcome"].to_numpy()
    t0 = time.perf_counter()
    with pm.Model() as model:
        beta = pm.Normal("beta", 0, 50, shape=x.shape[1])
        tau = pm.HalfNormal("tau", 20)
        sigma = pm.HalfNormal("sigma", 20)
        z = pm.Normal("z", 0, 1, shape=n_p)
        pm.Normal("y", pm.math.dot(x, beta) + tau * z[pid], sigma, observed=y)
    compiled = nutpie.compile_pymc_model(model)
    t1 = time.perf_counter()
    nutpie.sample(compiled, draws=draws, tune=draws, chains=4, cores=2, progress_bar=False)
    return {"compile_s": t1 - t0, "sampling_s": time.perf_counter() - t1, "draws": draws}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--skip-mixedlm", action="store_true", help="skip statsmodels MixedLM at 10k and 50k")
    ap.add_argument("--mixedlm-sizes", type=int, nargs="+", default=[10_000, 50_000])
    ap.add_argument("--skip-naive", action="store_true", help="skip nutpie on the naive latent-intercept model")
    ap.add_argument("--naive-draws", type=int, default=1000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--model", choices=["mmrm", "random-intercept", "both"], default="both",
                    help="the MMRM primary (REML from pattern statistics), the Bayesian random-intercept model, or both")
    ap.add_argument("--random-slopes", action="store_true",
                    help="fit (and simulate) random slopes on months; comparisons are skipped")
    args = ap.parse_args()
    if args.random_slopes:
        args.skip_mixedlm = args.skip_naive = True

    t_process = time.perf_counter()
    t_import = time.perf_counter()
    import nutpie  # noqa: F401
    import pymc  # noqa: F401

    print(f"imports (pymc, nutpie): {time.perf_counter() - t_import:.1f} s", flush=True)
    proto = protocol(args.random_slopes)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="flourish-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    files: dict[int, Path] = {}

    def warehouse(n: int) -> Path:
        if n not in files:
            p = work / f"bench_{n}.duckdb"
            if p.exists():
                p.unlink()
            secs = build_warehouse(p, n, slope_sd=0.5 if args.random_slopes else 0.0)
            print(f"[{n:>9,} participants] warehouse written in {secs:.1f} s ({p.stat().st_size / 1e6:.0f} MB)", flush=True)
            files[n] = p
        return files[n]

    for n in args.sizes:
        path = warehouse(n)
        if args.model in ("mmrm", "both"):
            for attempt in range(3):  # medians of three: the machine is shared
                m = mmrm_primary(path, proto)
                print(f"[{n:>9,} participants] MMRM primary (REML, unstructured, KR + sandwich): pattern statistics "
                      f"from the warehouse {m['suffstats_s']:.2f} s, fit {m['fit_s']:.2f} s => end to end "
                      f"{m['total_s']:.2f} s ({m['rows']:.0f} rows; coach long-run {m['long_run_coach']:.3f}); peak RSS "
                      f"so far {peak_rss_gib():.2f} GiB", flush=True)
        if args.model == "mmrm":
            continue
        r = primary(path, proto)
        print(f"[{n:>9,} participants] primary model: sufficient statistics {r['suffstats_s']:.2f} s (one thread, "
              f"reproducible; all threads {r['suffstats_all_threads_s']:.2f} s), compile "
              f"{r['compile_s']:.1f} s, sampling 4x1000 {r['sampling_s']:.2f} s (+ diagnostics/summary "
              f"{r['sample_and_diagnostics_s'] - r['sampling_s']:.2f} s) => end to end {r['total_s']:.1f} s; "
              f"R-hat max {r['rhat_max']:.4f}, bulk ESS min {r['ess_bulk_min']:.0f}, divergences {r['divergences']:.0f}, "
              f"passed={bool(r['passed'])}; {r['n_obs']:,.0f} rows; peak RSS so far {peak_rss_gib():.2f} GiB", flush=True)
    if not args.skip_mixedlm:
        for n in args.mixedlm_sizes:
            secs = mixedlm(warehouse(n), proto)
            print(f"[{n:>9,} participants] statsmodels MixedLM (ML, random intercept): {secs:.1f} s", flush=True)
    if not args.skip_naive:
        r = naive(warehouse(10_000), proto, args.naive_draws)
        print(f"[   10,000 participants] nutpie on the naive latent-intercept model: compile {r['compile_s']:.1f} s, "
              f"sampling 4x{r['draws']} {r['sampling_s']:.1f} s", flush=True)
    print(f"peak resident memory of this process: {peak_rss_gib():.2f} GiB; process wall time "
          f"{time.perf_counter() - t_process:.1f} s (includes writing the warehouse files)", flush=True)


if __name__ == "__main__":
    main()
