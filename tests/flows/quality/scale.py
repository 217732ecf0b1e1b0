"""A synthetic warehouse of any size, written straight into DuckDB, to time the quality gates at scale.

The simulator and the ingest take minutes per 10,000 participants (README, "Measured"); the gates only read
tables, so a warehouse of the simulated study's shape is generated here with set-based SQL: the simulated
protocol (three arms, six waves, four instruments, five scores), attrition, answers on the scales, scores in
range, telemetry. Values are hashes, not a model; items and scores are not consistent with each other (no
rule compares them). Clean by construction, so every critical expectation passes.

    .venv/bin/python -m tests.flows.quality.scale --participants 1000000 --out /tmp/q1m.duckdb

prints the build time, the table sizes and the gates' time (reductions and validation separately).
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime
from pathlib import Path

RETENTION_PERCENT = (100, 95, 92, 88, 82, 76)  # share of participants answering each wave, in wave order
EVENTS_PER_PARTICIPANT = 30
AS_OF = datetime(2027, 9, 1, tzinfo=UTC)


def build(con, participants: int, protocol=None) -> dict[str, int]:
    """Fill an empty, migrated warehouse with ``participants`` of the simulated study; return row counts."""
    import instruments
    from flows.simulation.field_study import protocol as sim_protocol

    p = protocol or sim_protocol()
    sid = p.study_id
    waves = [(i, w.name, w.day, w.window_days, RETENTION_PERCENT[min(i, len(RETENTION_PERCENT) - 1)])
             for i, w in enumerate(p.waves)]
    insts = [(j, name, instruments.load(name)) for j, name in enumerate(p.instruments())]
    con.execute("CREATE TEMP TABLE syn_wave (w INTEGER, wave VARCHAR, day INTEGER, win INTEGER, keep INTEGER)")
    con.executemany("INSERT INTO syn_wave VALUES (?, ?, ?, ?, ?)", waves)
    con.execute("CREATE TEMP TABLE syn_item (j INTEGER, instrument VARCHAR, item_code VARCHAR, lo INTEGER, hi INTEGER)")
    con.executemany("INSERT INTO syn_item VALUES (?, ?, ?, ?, ?)",
                    [(j, name, code, inst.scale_min, inst.scale_max) for j, name, inst in insts for code in inst.items])
    con.execute("CREATE TEMP TABLE syn_score (outcome VARCHAR, instrument VARCHAR, lo DOUBLE, hi DOUBLE)")
    con.executemany("INSERT INTO syn_score VALUES (?, ?, ?, ?)",
                    [(inst.outcome(s.name), name, *inst.score_range(s.name)) for _, name, inst in insts
                     for s in inst.scores])
    arms = [a.name for a in p.arms]
    con.execute(
        "CREATE TEMP TABLE syn_p AS SELECT i, md5(i::VARCHAR) || md5((i + 104729)::VARCHAR) AS participant, "
        "list_extract(?, (i % ?)::INTEGER + 1) AS arm, "
        "TIMESTAMPTZ '2026-01-05 00:00:00+00' + to_seconds((hash(i, 'assigned') % 5184000)::BIGINT) AS assigned_at "
        "FROM range(?) t(i)", [arms, len(arms), participants])
    con.execute("INSERT INTO assignments SELECT participant, ?, arm, assigned_at, "
                "CASE WHEN i % 2 = 0 THEN 'north' ELSE 'south' END, 'syn' FROM syn_p", [sid])
    # who answers which wave, and when: inside day - win // 2 .. day + win (the window is day +/- win)
    con.execute(
        "CREATE TEMP TABLE syn_pw AS SELECT p.i, p.participant, w.wave, w.w, p.assigned_at + to_seconds(("
        "(w.day * 86400) + (hash(p.i, w.w, 'when') % ((w.win * 3 // 2) * 86400 + 1)) - (w.win // 2) * 86400"
        ")::BIGINT) AS submitted_at FROM syn_p p CROSS JOIN syn_wave w WHERE hash(p.i, w.w) % 100 < w.keep")
    con.execute(
        "INSERT INTO responses SELECT 'r' || pw.i || '-' || pw.w || '-' || it.j, pw.participant, ?, it.instrument, '1', "
        "pw.wave, pw.submitted_at, it.n_items, 'syn' FROM syn_pw pw CROSS JOIN "
        "(SELECT j, instrument, count(*)::INTEGER AS n_items FROM syn_item GROUP BY ALL) it", [sid])
    con.execute(
        "INSERT INTO response_items SELECT 'r' || pw.i || '-' || pw.w || '-' || it.j, pw.participant, ?, it.instrument, "
        "'1', pw.wave, it.item_code, (it.lo + hash(pw.i, pw.w, it.item_code) % (it.hi - it.lo + 1))::INTEGER "
        "FROM syn_pw pw CROSS JOIN syn_item it", [sid])
    con.execute(
        "INSERT INTO scores (study_id, participant, wave, outcome, value, items_answered, prorated, source, scored_at) "
        "SELECT ?, pw.participant, pw.wave, s.outcome, s.lo + (hash(pw.i, pw.w, s.outcome) % "
        "((s.hi - s.lo)::BIGINT + 1)), NULL, false, 'flourish', now() FROM syn_pw pw CROSS JOIN syn_score s", [sid])
    types = ["session_start", "message", "message", "feature_exposure", "session_end"]
    con.execute(
        "INSERT INTO events SELECT 'e' || p.i || '-' || k, p.participant, ?, p.assigned_at + to_seconds("
        "(k * 86400 * 12 + hash(p.i, k) % 86400)::BIGINT), 's' || p.i || '-' || (k // 5), "
        "list_extract(?, (k % 5)::INTEGER + 1), NULL, NULL, 'syn' FROM syn_p p CROSS JOIN range(?) t(k)",
        [sid, types, EVENTS_PER_PARTICIPANT])
    for t in ("syn_p", "syn_pw", "syn_wave", "syn_item", "syn_score"):
        con.execute(f"DROP TABLE {t}")
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("assignments", "responses", "response_items", "scores", "events")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=100_000)
    parser.add_argument("--out", type=Path, required=True, help="warehouse file (built when missing)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-limit", default="2GB", help="DuckDB's cap, as FLOURISH_DUCKDB_MEMORY_LIMIT")
    args = parser.parse_args(argv)

    from flows.quality import run_quality_gates
    from flows.quality.frames import reduce_warehouse
    from flows.quality.rules import QualitySettings, build_rules
    from flows.quality.validate import validate
    from flows.simulation.field_study import protocol as sim_protocol
    from flows.warehouse import connect

    proto = sim_protocol()
    fresh = not args.out.exists()
    con = connect(args.out)
    try:
        if fresh:
            started = time.perf_counter()
            counts = build(con, args.participants, proto)
            con.execute("CHECKPOINT")
            print(f"built {args.participants:,} participants in {time.perf_counter() - started:.1f} s: {counts}")
        con.execute(f"SET memory_limit = '{args.memory_limit}'")
        t = time.perf_counter()
        validate(build_rules(proto), reduce_warehouse(con, proto, as_of=AS_OF, settings=QualitySettings())[0])
        print(f"first run (imports Great Expectations): {time.perf_counter() - t:.1f} s")
        for k in range(args.repeats):
            t, cpu = time.perf_counter(), time.process_time()
            frames, _ = reduce_warehouse(con, proto, as_of=AS_OF, settings=QualitySettings())
            reduced, reduced_cpu = time.perf_counter() - t, time.process_time() - cpu
            rows = sum(len(f) for f in frames.values())
            t = time.perf_counter()
            validate(build_rules(proto), frames)
            validated = time.perf_counter() - t
            t, cpu = time.perf_counter(), time.process_time()
            report = run_quality_gates(con, proto, run_id=f"scale-{k}", as_of=AS_OF)
            whole_cpu = time.process_time() - cpu
            print(f"run {k + 1}: reductions {reduced:.2f} s ({reduced_cpu:.2f} s CPU, {rows:,} frame rows), "
                  f"validation {validated:.2f} s; run_quality_gates {report.run_seconds:.2f} s "
                  f"({whole_cpu:.2f} s CPU), {report.verdict}")
        for name, wall, cpu in _per_frame(con, proto):
            print(f"  {name}: {wall:.2f} s ({cpu:.2f} s CPU)")
        print(f"load average: {os.getloadavg()}")
    finally:
        con.close()


def _per_frame(con, proto) -> list[tuple[str, float]]:
    from flows.quality import frames as f
    from flows.quality.rules import QualitySettings

    counts, first, last = f.arm_counts(con, proto)
    calls = {
        "item_values": lambda: f.item_values(con, proto), "score_values": lambda: f.score_values(con, proto),
        "score_keys": lambda: f.score_keys(con, proto), "responses": lambda: f.response_cells(con, proto),
        "assignments": lambda: f.assignment_cells(con, proto), "arm_counts": lambda: f.arm_counts(con, proto),
        "allocation": lambda: f.allocation(counts, proto, QualitySettings()),
        "completeness": lambda: f.completeness(con, proto, AS_OF),
        "events": lambda: f.event_cells(con, proto, first, last),
    }
    out = []
    for name, call in calls.items():
        t, cpu = time.perf_counter(), time.process_time()
        call()
        out.append((name, time.perf_counter() - t, time.process_time() - cpu))
    return out


if __name__ == "__main__":  # pragma: no cover
    main()
