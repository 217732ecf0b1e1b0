"""Scale-out benchmark: the primary model's statistics at 1,000,000 participants x 6 waves, from the warehouse in
one process, and from bucketed Parquet partitions in one process and on a local Dask cluster (2 workers).

    .venv/bin/python benchmarks/scaleout.py [--participants 1000000] [--buckets 16] [--repeats 3]

Prints each figure's median over the repeats (the machine is shared: compare within a run). The Dask figure
includes submitting the partitions as Prefect tasks and gathering their results; the cluster's start-up is
printed apart. On one 2-core machine Dask cannot beat DuckDB's own parallel GROUP BY: the point is that the same
statistics, exactly, come from partitions that could live on many machines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flows  # noqa: E402,F401  (quiet process defaults)
from benchmarks.analysis import build_warehouse, protocol  # noqa: E402
from flows.scaleout import export_partitions, statistics_in_process, statistics_on_dask  # noqa: E402
from flows.statistics import longitudinal_stats  # noqa: E402
from flows.warehouse import open_warehouse  # noqa: E402


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--participants", type=int, default=1_000_000)
    ap.add_argument("--buckets", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    proto = protocol()
    outcome = proto.primary_outcome.name
    with tempfile.TemporaryDirectory() as tmp:
        wh = Path(tmp) / "w.duckdb"
        print(f"building a warehouse of {args.participants:,} participants x 6 waves ...", flush=True)
        build_warehouse(wh, args.participants)
        with open_warehouse(wh) as con:
            export_s, root = _timed(lambda: export_partitions(con, proto, Path(tmp) / "parts", args.buckets))
        warehouse_t, process_t, dask_t = [], [], []
        for i in range(args.repeats):
            with open_warehouse(wh, read_only=True) as con:
                t, ref = _timed(lambda: longitudinal_stats(con, proto))
            warehouse_t.append(t)
            t, one = _timed(lambda: statistics_in_process(root, proto, outcome))
            process_t.append(t)
            t, dsk = _timed(lambda: statistics_on_dask(root, proto, outcome, workers=2))
            dask_t.append(t)
            assert one.cross.n_obs == dsk.cross.n_obs and (one.cross.xtx == dsk.cross.xtx).all(), "not equal"
            print(f"  repeat {i + 1}: warehouse {warehouse_t[-1]:.2f} s, partitions in one process "
                  f"{process_t[-1]:.2f} s, partitions on Dask {dask_t[-1]:.2f} s", flush=True)
        med = statistics.median
        print(f"participants {args.participants:,}, buckets {args.buckets}; export to Parquet {export_s:.1f} s")
        print(f"statistics from the warehouse (one process, DuckDB threads)  median {med(warehouse_t):.2f} s")
        print(f"statistics from partitions, one process, one after another  median {med(process_t):.2f} s")
        print(f"statistics from partitions on a local Dask cluster (2 workers, incl. cluster start) median "
              f"{med(dask_t):.2f} s; ratio to one process {med(dask_t) / med(process_t):.2f}")
        print("Dask result equals the one-process result exactly: yes (asserted on every repeat)")


if __name__ == "__main__":
    main()
