"""Privacy costs at study scale: standard DP release, consent-ledger sync, erasure (with compaction), re-keying.

Run: .venv/bin/python benchmarks/privacy_bench.py [participants]
Data are generated in DuckDB with the privacy tests' protocol (2 arms x 3 waves, 2 outcomes, 1 telemetry
surrogate; ~10 events per participant). The machine is shared: read the figures as orders of magnitude.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.privacy_flows import (  # noqa: E402
    compact_warehouse,
    consent_sync,
    erase_participant,
    rekey_warehouse,
    release_protocol,
)
from flows.warehouse import connect  # noqa: E402
from privacy.pseudonym import pseudonymize_many  # noqa: E402
from tests.support.privacy import KEY, OUTCOME_BOUNDS, make_protocol  # noqa: E402


def build(path: Path, n: int) -> list[str]:
    raw = [f"bench-{i:07d}" for i in range(n)]
    mapping = pseudonymize_many(raw, KEY)
    con = connect(path)
    con.execute("CREATE TEMP TABLE ids (i BIGINT, raw VARCHAR, p VARCHAR)")
    con.executemany("INSERT INTO ids VALUES (?, ?, ?)", [[i, r, mapping[r]] for i, r in enumerate(raw)])
    con.execute("INSERT INTO consents SELECT p, 'v1', ['surveys', 'telemetry'], TIMESTAMPTZ '2026-01-05 00:00:00+00', "
                "NULL, 'h' || i, 'b1', 'consents.jsonl', i FROM ids")
    con.execute("INSERT INTO assignments SELECT p, 'study-a', CASE WHEN i % 2 = 0 THEN 'control' ELSE 'coach' END, "
                "TIMESTAMPTZ '2026-01-05 00:00:00+00', NULL, 'b1' FROM ids")
    con.execute("INSERT INTO responses SELECT 'r-' || i || '-' || w, p, 'study-a', 'who5', '1', w, "
                "TIMESTAMPTZ '2026-01-05 00:00:00+00', 5, 'b1' FROM ids, (VALUES ('baseline'), ('m1'), ('m3')) t(w)")
    con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value) SELECT 'study-a', p, w, o, "
                "CASE WHEN o = 'who5.percent' THEN floor(random() * 26) * 4 ELSE random() * 10 END "
                "FROM ids, (VALUES ('baseline'), ('m1'), ('m3')) t(w), (VALUES ('who5.percent'), ('ext.score')) u(o)")
    con.execute("INSERT INTO events SELECT 'e-' || i || '-' || k, p, 'study-a', "
                "TIMESTAMPTZ '2026-01-05 00:00:00+00' + k * INTERVAL 1 DAY, 's', 'session_start', NULL, NULL, 'b1' "
                "FROM ids, range(10) r(k)")
    con.close()
    return raw


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "study" / "w.duckdb"
        t = time.perf_counter()
        raw = build(path, n)
        print(f"participants {n}: build {time.perf_counter() - t:.1f} s, file {path.stat().st_size / 1e6:.1f} MB")
        t = time.perf_counter()
        r = release_protocol(make_protocol(), path, outcome_bounds=OUTCOME_BOUNDS, fraction=0.5)
        print(f"standard release: {time.perf_counter() - t:.2f} s ({len(r.rows)} values, "
              f"{sum(x.suppressed for x in r.rows)} suppressed, epsilon {r.epsilon:.3f})")
        t = time.perf_counter()
        entries = consent_sync(path)
        print(f"consent ledger sync: {time.perf_counter() - t:.2f} s ({entries} hash-chained entries)")
        t = time.perf_counter()
        receipt = erase_participant(path, raw[7], KEY, "erasure_request")
        print(f"erase one participant (plan, rows, files, compaction, byte scan): {time.perf_counter() - t:.2f} s, "
              f"{receipt.total_deleted} rows, residual files {list(receipt.residual_files)}")
        t = time.perf_counter()
        report = compact_warehouse(path)
        print(f"compact: {time.perf_counter() - t:.2f} s ({report.bytes_before / 1e6:.1f} -> "
              f"{report.bytes_after / 1e6:.1f} MB)")
        t = time.perf_counter()
        rep = rekey_warehouse(path, KEY, b"bench-new-key-0123456789", raw)
        print(f"rekey (one transaction + compaction): {time.perf_counter() - t:.2f} s, "
              f"{sum(rep.rows_updated.values())} rows, {rep.participants} participants")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
