"""`flourish run` twice on an unchanged study: the second run finds every heavy stage cached (issue 17).

Simulates a study of ``--participants`` (10,000 by default, the `flourish simulate` default), then runs the whole
pipeline as a user would (the installed command, Prefect orchestration, one process per run) twice on the same
landing folder and warehouse, and prints each run's wall time, its stages' states and the ratio. The machine is
shared, so the ratio of two runs measured one after the other is the figure to quote, not either time alone.

    .venv/bin/python -m benchmarks.pipeline [--participants N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOURISH = [sys.executable, "-m", "flows.cli"]


def _run(args: list[str]) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(FLOURISH + args, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"flourish {' '.join(args[:1])} failed: {done.stderr.strip()[-400:]}")
    return seconds, json.loads(done.stdout) if "--json" in args else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=1, help="pairs of (first, second) runs, each on a new study")
    opts = parser.parse_args()
    firsts, seconds_, ratios = [], [], []
    for r in range(opts.repeats):
        with tempfile.TemporaryDirectory(prefix="flourish-bench-") as tmp:
            root = Path(tmp)
            _run(["simulate", "--out", str(root / "sim"), "--participants", str(opts.participants), "--seed", str(r + 1)])
            key = root / "k.key"
            key.write_text("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n")
            args = ["run", str(root / "sim" / "study.yaml"), "--landing", str(root / "sim" / "landing"),
                    "--warehouse", str(root / "w.duckdb"), "--key-file", str(key), "--analyze", "always", "--json"]
            first, rec1 = _run(args)
            second, rec2 = _run(args)
        states1 = {s["stage"]: s["state"] for s in rec1["stages"]}
        states2 = {s["stage"]: s["state"] for s in rec2["stages"]}
        print(f"repeat {r + 1}: first run {first:.1f} s {states1}")
        print(f"          second run {second:.1f} s {states2}")
        firsts.append(first)
        seconds_.append(second)
        ratios.append(second / first)
    print(f"participants {opts.participants:,}: first run median {statistics.median(firsts):.1f} s, second run "
          f"median {statistics.median(seconds_):.1f} s, second/first {statistics.median(ratios):.3f} "
          f"(target < 0.25)")


if __name__ == "__main__":
    main()
