"""Benchmark: score 1,000,000 simulated long-format WHO-5 item responses.

Run: ``.venv/bin/python benchmarks/scoring.py [n_rows]``. One "response" here is one
answered item (a row of ``response_items``, the warehouse's unit); 1,000,000 rows are
200,000 participant x wave administrations of the 5-item WHO-5, about 1% of items skipped
so the prorating path runs too. Prints seconds and responses/s for validation + pivot +
scoring (raw and percent), and for the safety screen on PHQ-9 of the same size.
Target (issue 3): under 10 s for 1,000,000 responses.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

import instruments
from instruments.scoring import safety_flags


def simulate(name: str, n_rows: int, seed: int = 1) -> pd.DataFrame:
    inst = instruments.load(name)
    rng = np.random.default_rng(seed)
    k = len(inst.items)
    n_admin = int(np.ceil(n_rows / (k * 0.97))) + 4
    participant = np.repeat(np.char.add("p", (np.arange(n_admin) // 4).astype(str)), k)
    wave = np.repeat((np.arange(n_admin) % 4).astype(str), k)
    long = pd.DataFrame({
        "participant": participant,
        "wave": wave,
        "item_code": np.tile(np.array(inst.items, dtype=object), n_admin),
        "value": rng.integers(inst.scale_min, inst.scale_max + 1, size=n_admin * k),
    })
    skipped = rng.random(len(long)) < 0.01
    return long[~skipped].iloc[:n_rows].reset_index(drop=True)  # exactly n_rows answered items


def main(n_rows: int = 1_000_000) -> None:
    long = simulate("who5", n_rows)
    t0 = time.perf_counter()
    scores = instruments.score("who5", long)
    seconds = time.perf_counter() - t0
    print(f"who5: scored {len(long):,} long responses ({len(scores):,} score rows) in {seconds:.2f} s "
          f"= {len(long) / seconds:,.0f} responses/s")

    phq = simulate("phq9", n_rows)
    t0 = time.perf_counter()
    scores = instruments.score("phq9", phq)
    flags = safety_flags("phq9", phq)
    seconds = time.perf_counter() - t0
    print(f"phq9: scored + safety-screened {len(phq):,} long responses ({len(scores):,} score rows, "
          f"{len(flags):,} flags) in {seconds:.2f} s = {len(phq) / seconds:,.0f} responses/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
