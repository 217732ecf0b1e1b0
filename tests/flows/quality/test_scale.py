"""Memory stays bounded: the frames Great Expectations sees do not grow with the number of participants, and a
clean synthetic warehouse of the simulated study's shape passes every expectation."""

from __future__ import annotations

from flows.quality import run_quality_gates
from flows.quality.frames import reduce_warehouse
from flows.quality.rules import QualitySettings
from flows.simulation.field_study import protocol as sim_protocol
from flows.warehouse import connect
from tests.flows.quality.scale import AS_OF, build


def _frame_rows(tmp_path, participants):
    con = connect(tmp_path / f"syn-{participants}.duckdb")
    try:
        counts = build(con, participants)
        frames, _ = reduce_warehouse(con, sim_protocol(), as_of=AS_OF, settings=QualitySettings())
        report = run_quality_gates(con, sim_protocol(), run_id=f"syn-{participants}", as_of=AS_OF)
    finally:
        con.close()
    return counts, {name: len(f) for name, f in frames.items()}, report


def test_frames_do_not_grow_with_participants(tmp_path):
    small_counts, small, _ = _frame_rows(tmp_path, 500)
    big_counts, big, report = _frame_rows(tmp_path, 5_000)
    assert big_counts["response_items"] > 9 * small_counts["response_items"]
    assert sum(big.values()) <= 1.2 * sum(small.values()) and sum(big.values()) < 2_000, (small, big)
    assert all(r.success for r in report.results), [r.headline() for r in report.results if not r.success]
