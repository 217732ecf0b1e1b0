"""A binary outcome's counts per arm x wave from the warehouse (flows/statistics.binary_table): the event from a
cut-off on a score (PHQ-9 >= 10, say) or from 0/1 scores, held to a count of the same rows in pandas."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from flows.ingest import ingest_batch
from flows.statistics import binary_table, plan_statistics
from schemas.protocol import StudyProtocol

from tests.support.spine import KEY, consent, write_jsonl


def _protocol(**outcome) -> StudyProtocol:
    return StudyProtocol.model_validate({
        "study_id": "s1", "title": "t",
        "arms": [{"name": "control", "control": True}, {"name": "coach"}],
        "waves": [{"name": "w0", "day": 0}, {"name": "w1", "day": 30}, {"name": "w2", "day": 90}],
        "primary_outcome": {"name": "screen", "source": "external", "wave": "w2", "kind": "binary",
                            "direction": "lower_is_better", **outcome},
    })


@pytest.mark.parametrize("outcome", [{"event_at_or_above": 10}, {"event_at_or_below": 10}, {}])
def test_counts_equal_a_count_of_the_same_rows(tmp_path, outcome):
    rng = np.random.default_rng(7)
    n = 120
    arms = np.where(np.arange(n) % 3 == 0, "control", "coach")
    rows = []
    for i in range(n):
        for w in ("w0", "w1", "w2"):
            if w != "w0" and rng.random() < 0.2:
                continue  # a missed wave
            value = float(rng.integers(0, 28)) if outcome else float(rng.integers(0, 2))
            rows.append({"participant": f"p{i}", "arm": arms[i], "wave": w, "value": value})
    frame = pd.DataFrame(rows)
    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent(f"p{i}", scopes=("surveys",)) for i in range(n)])
    write_jsonl(land / "assignments.jsonl", [{"participant_id": f"p{i}", "study_id": "s1", "arm": arms[i],
                                              "assigned_at": "2026-01-01T01:00:00Z"} for i in range(n)])
    write_jsonl(land / "scores.jsonl", [{"participant_id": r["participant"], "study_id": "s1", "wave": r["wave"],
                                         "outcome": "screen", "value": r["value"], "scored_at": "2026-05-01T00:00:00Z"}
                                        for r in rows])
    protocol = _protocol(**outcome)
    wh = tmp_path / "w.duckdb"
    rec = ingest_batch(land, protocol, wh, KEY)
    assert rec.quarantined == {}
    con = duckdb.connect(str(wh), read_only=True)
    try:
        table = binary_table(con, protocol, protocol.primary_outcome, ["w1", "w2"])
        stats = plan_statistics(con, protocol)
    finally:
        con.close()
    if "event_at_or_above" in outcome:
        frame["event"] = frame["value"] >= 10
    elif "event_at_or_below" in outcome:
        frame["event"] = frame["value"] <= 10
    else:
        frame["event"] = frame["value"] == 1
    for (arm, wave), cell in frame[frame.wave != "w0"].groupby(["arm", "wave"]):
        assert (table.cell(arm, wave).n, table.cell(arm, wave).events) == (len(cell), int(cell["event"].sum()))
    assert table.arms == ("control", "coach")
    assert stats.outcome("screen").binary == table and stats.outcome("screen").observed_waves == ("w1", "w2")


def test_the_public_tier_refuses_a_binary_outcome_without_a_release_of_its_counts(tmp_path):
    """Before issue 20 item 4 the public tier reported a binary outcome "not analysed yet"; now it reads the release
    of its counts, and without one refuses the run as it does for a continuous outcome without paired moments."""
    from flows.statistics import OutcomeHasNoData, released_statistics
    from flows.warehouse import open_warehouse

    protocol = _protocol()
    with open_warehouse(tmp_path / "w.duckdb") as con, pytest.raises(OutcomeHasNoData, match="binary_counts|counts"):
        released_statistics(con, protocol)


def test_the_public_tier_reads_the_released_counts_and_names_a_suppressed_wave(tmp_path):
    from analysis.plan import ReleasedCounts
    from flows.statistics import released_statistics
    from flows.warehouse import open_warehouse

    protocol = _protocol()
    with open_warehouse(tmp_path / "w.duckdb") as con:
        con.execute("INSERT INTO releases (release_id, study_id, created_at, mechanism, accounting, rho, epsilon, "
                    "delta, min_cell_size, queries, values_sha256, opendp_version, opendp_features) VALUES "
                    "('r1', 's1', now(), 'gaussian', 'zcdp', 0.01, 1.0, 1e-6, 10, '[]', 'x', '0.16', 'contrib')")
        for arm in ("control", "coach"):
            for wave, suppressed in (("w1", arm == "coach"), ("w2", False)):
                for stat, value in (("n", 100.0), ("events", 20.0), ("non_events", 80.0)):
                    con.execute("INSERT INTO release_values VALUES (?,?,?,?,?,?,?,?,?,?)",
                                ["r1", "s1", "binary_counts:screen", "screen", arm, wave, stat,
                                 None if suppressed else value, 5.0, suppressed])
        released = released_statistics(con, protocol)["screen"]
    assert isinstance(released, ReleasedCounts) and released.waves == ("w1", "w2")
    assert set(released.unusable) == {"w1"} and "suppressed" in released.unusable["w1"]
    assert set(released.cells) == {("control", "w2"), ("coach", "w2")}
    cell = released.cells[("coach", "w2")]
    assert (cell.events, cell.non_events, cell.noise_sd_events, cell.n) == (20.0, 80.0, 5.0, 100.0)
