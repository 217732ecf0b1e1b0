"""Ingest benchmark: Flourish's ingest against DuckDB's bare read_json on the same files, and memory vs size.

    .venv/bin/python benchmarks/ingest.py [--participants 10000] [--repeats 3] [--quick]

1. Throughput: a simulated landing folder (consents, assignments and >= 2M events at the default
   10,000 participants) is ingested by Flourish (validation, pseudonymization, consent gate,
   de-duplication, quarantine, one transaction) and, in the same run, the same event files are
   loaded by DuckDB's own ``read_json`` into a table of a fresh DuckDB file, twice: bare (its
   defaults, the schema detected: the issue's comparison) and typed (column types given: stricter).
   Imports happen before the clock starts on both sides. Each run is a fresh process; the figure
   is the median over ``--repeats`` runs, and the ratio compares medians. Events/s counts event
   rows only (consents and assignments are <1% of rows).
2. Memory: peak RSS of a fresh ingest process at 1x and 4x input (participants/4 and participants),
   so flat memory as input grows shows as a ratio near 1.

Targets (issue 2): Flourish >= 50% of read_json throughput; peak RSS at 4x <= 1.5 x peak at 1x.
The machine is shared and noisy: read medians and ratios, not single figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = "benchmark-key-0123456789abcdef"

FLOURISH_RUN = """
import json, resource, sys, time
import instruments, flows.study  # imported before the clock starts, as duckdb is for the read_json runs
from flows.ingest import ingest_batch
from schemas.protocol import load_protocol
protocol = load_protocol(sys.argv[1])
t = time.perf_counter()
rec = ingest_batch(sys.argv[2], protocol, sys.argv[3], sys.argv[4].encode())
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "events": rec.stored["events"], "read": rec.read,
                  "balanced": rec.balanced, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

DUCKDB_RUN = """
import duckdb, glob, json, resource, sys, time
files = sorted(glob.glob(sys.argv[1] + "/events-*.jsonl"))
con = duckdb.connect(sys.argv[2])
con.execute("SET memory_limit = '2GB'")
t = time.perf_counter()
if sys.argv[3] == "bare":  # read_json with its defaults: the schema is detected
    con.execute(f"CREATE TABLE events AS SELECT * FROM read_json({files})")
else:  # column types given
    con.execute(f'''CREATE TABLE events AS SELECT * FROM read_json({files}, format='newline_delimited', columns={{
        'event_id': 'VARCHAR', 'participant_id': 'VARCHAR', 'study_id': 'VARCHAR', 'ts': 'TIMESTAMPTZ',
        'session_id': 'VARCHAR', 'type': 'VARCHAR', 'feature': 'VARCHAR', 'value': 'DOUBLE'}})''')
n = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
con.close()
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "events": n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _landing(base: Path, participants: int, seed: int) -> tuple[Path, Path]:
    from flows.simulation import simulate

    out = base / f"sim-{participants}"
    simulate(out, participants, seed, truth_draws=2_000)
    land = out / "landing"
    bench = out / "bench-landing"  # consents, assignments and events: the files both sides read
    bench.mkdir()
    for p in land.iterdir():
        if p.name.startswith(("consents", "assignments", "events-2")):
            shutil.copy(p, bench / p.name)
    return out / "study.yaml", bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--participants", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 repeat, 2,000 participants (a smoke run, not the figure)")
    args = ap.parse_args()
    if args.quick:
        args.participants, args.repeats = 2_000, 1
    with tempfile.TemporaryDirectory(prefix="flourish-bench-") as tmp:
        base = Path(tmp)
        t = time.perf_counter()
        study, landing = _landing(base, args.participants, seed=1)
        small_study, small_landing = _landing(base, max(args.participants // 4, 6), seed=2)
        print(f"simulated {args.participants:,} and {max(args.participants // 4, 6):,} participants "
              f"in {time.perf_counter() - t:.0f} s", flush=True)

        fl, dk, bare = [], [], []
        for i in range(args.repeats):
            fl.append(_run(FLOURISH_RUN, str(study), str(landing), str(base / f"f{i}.duckdb"), KEY))
            dk.append(_run(DUCKDB_RUN, str(landing), str(base / f"d{i}.duckdb"), "typed"))
            bare.append(_run(DUCKDB_RUN, str(landing), str(base / f"b{i}.duckdb"), "bare"))
            print(f"  run {i + 1}: flourish {fl[-1]['events'] / fl[-1]['seconds']:,.0f} events/s, "
                  f"duckdb read_json bare {bare[-1]['events'] / bare[-1]['seconds']:,.0f} events/s, "
                  f"typed {dk[-1]['events'] / dk[-1]['seconds']:,.0f} events/s", flush=True)
            assert fl[-1]["balanced"] and fl[-1]["events"] == dk[-1]["events"] == bare[-1]["events"], (fl[-1], dk[-1])
        f_rate = statistics.median(r["events"] / r["seconds"] for r in fl)
        d_rate = statistics.median(r["events"] / r["seconds"] for r in dk)
        b_rate = statistics.median(r["events"] / r["seconds"] for r in bare)
        small = _run(FLOURISH_RUN, str(small_study), str(small_landing), str(base / "small.duckdb"), KEY)
        large_rss = statistics.median(r["peak_rss_mb"] for r in fl)

        events = fl[0]["events"]
        size_mb = sum(p.stat().st_size for p in landing.iterdir()) / 2**20
        print()
        print(f"input: {events:,} events ({fl[0]['read']:,} rows, {size_mb:,.0f} MiB of landing files)")
        print(f"flourish ingest      : {f_rate:>10,.0f} events/s  (median of {args.repeats})")
        print(f"read_json bare       : {b_rate:>10,.0f} events/s  (median of {args.repeats}, same files, defaults)")
        print(f"read_json typed      : {d_rate:>10,.0f} events/s  (median of {args.repeats}, same files, columns given)")
        print(f"ratio flourish/bare  : {f_rate / b_rate:>10.2f}   target >= 0.50")
        print(f"ratio flourish/typed : {f_rate / d_rate:>10.2f}   (the stricter comparison)")
        print(f"peak RSS 1x ({small['events']:,} events): {small['peak_rss_mb']:,.0f} MiB")
        print(f"peak RSS 4x ({events:,} events): {large_rss:,.0f} MiB")
        print(f"ratio 4x/1x          : {large_rss / small['peak_rss_mb']:>10.2f}   target <= 1.50")


if __name__ == "__main__":
    main()
