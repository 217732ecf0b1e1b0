"""Survey prompts through the ingest: stored, or quarantined with their reason, alike on both paths; the
reconciliation stays exact (rows read = stored + quarantined)."""

from __future__ import annotations

import duckdb
import pytest

from flows.ingest import ingest_batch
from flows.ingest.replay import replay

from tests.support.spine import KEY, assignment, consent, write_jsonl

GOOD = {"prompt_id": "q1", "participant_id": "p1", "study_id": "s1", "wave": "m1", "schedule_version": "2026.1",
        "scheduled_at": "2026-02-01T09:00:00+00:00", "sent_at": "2026-02-01T10:00:05+01:00",
        "timezone": "Europe/London"}


def _prompt(**over) -> dict:
    return {k: v for k, v in {**GOOD, **over}.items() if v is not None}


BAD = [
    (_prompt(prompt_id="q-order", sent_at="2026-02-01T08:59:59Z"), "timestamp_order"),
    (_prompt(prompt_id="q-order2", opened_at="2026-02-01T09:30:00Z", started_at="2026-02-01T09:29:00Z"),
     "timestamp_order"),
    (_prompt(prompt_id="q-expired", sent_at=None, expired_at="2026-02-01T08:00:00Z"), "timestamp_order"),
    (_prompt(prompt_id="q-naive", scheduled_at="2026-02-01T09:00:00"), "naive_timestamp"),
    (_prompt(prompt_id="q-tz", timezone="Mars/Olympus"), "schema_violation"),
    (_prompt(prompt_id="q-tz2", timezone="+01:00"), "schema_violation"),
    (_prompt(prompt_id="q-noscheduled", scheduled_at=None, sent_at=None), "schema_violation"),
    (_prompt(prompt_id="q-consent", participant_id="p2"), "no_consent"),  # p2 consented to telemetry only
    (_prompt(prompt_id="q-inst", instrument="swls"), "unknown_instrument"),
    (_prompt(prompt_id="q-wave", wave="m24"), "unknown_wave"),
    (_prompt(), "duplicate"),  # q1 again
]


@pytest.mark.parametrize("fast", [True, False])
def test_each_bad_prompt_is_quarantined_with_its_reason_and_the_rest_stored(tmp_path, protocol, fast):
    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent("p1", scopes=("surveys",)), consent("p2", scopes=("telemetry",))])
    write_jsonl(land / "assignments.jsonl", [assignment("p1")])
    good = [_prompt(), _prompt(prompt_id="q-wave-level-done", opened_at="2026-02-01T09:10:00Z",
                               started_at="2026-02-01T09:10:00Z", completed_at="2026-02-03T12:00:00Z",
                               expired_at="2026-02-03T09:00:00Z"),  # completed after expiry: a late answer
            _prompt(prompt_id="q-who5", instrument="who5", timezone="America/New_York")]
    write_jsonl(land / "prompts.jsonl", good + [row for row, _ in BAD])
    rec = ingest_batch(land, protocol, tmp_path / "w.duckdb", KEY, fast_path=fast)
    assert rec.balanced and rec.read == 3 + len(good) + len(BAD)
    assert rec.stored["prompts"] == len(good)
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    try:
        got = con.execute("SELECT line, reason, message FROM quarantine WHERE record_kind = 'prompts' ORDER BY line"
                          ).fetchall()
        stored = con.execute("SELECT prompt_id, instrument, timezone FROM prompts ORDER BY prompt_id").fetchall()
    finally:
        con.close()
    assert [(line, reason) for line, reason, _ in got] == [(len(good) + i + 1, r) for i, (_, r) in enumerate(BAD)]
    assert got[0][2] == "field sent_at is before scheduled_at"
    assert stored == [("q-wave-level-done", None, "Europe/London"), ("q-who5", "who5", "America/New_York"),
                      ("q1", None, "Europe/London")]


def test_a_prompt_before_its_consent_is_replayed_once_the_consent_arrives(tmp_path, protocol):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    write_jsonl(first / "prompts.jsonl", [_prompt()])
    wh = tmp_path / "w.duckdb"
    assert ingest_batch(first, protocol, wh, KEY).quarantined == {"no_consent": 1}
    write_jsonl(second / "consents.jsonl", [consent("p1", scopes=("surveys",))])
    ingest_batch(second, protocol, wh, KEY)
    assert replay(wh, protocol).stored == {"prompts": 1}


# The fast path vouches for prompt files too (runs of whole files and chunks): it must store exactly what the exact
# path stores, whichever one bad row a file holds, and a file of clean prompts must take it.
def _prompt_landing(root, name: str, rows: list[dict], consents: bool = True):
    land = root / name
    land.mkdir()
    if consents:
        write_jsonl(land / "consents.jsonl", [consent("p1", scopes=("surveys",)), consent("p2", scopes=("telemetry",))])
    write_jsonl(land / "prompts.jsonl", rows)
    return land


def _prompt_tables(wh) -> dict:
    con = duckdb.connect(str(wh), read_only=True)
    try:
        return {"prompts": con.execute("SELECT * EXCLUDE (batch_id) FROM prompts ORDER BY ALL").fetchall(),
                "quarantine": con.execute("SELECT source_file, line, reason, message, participant FROM quarantine "
                                          "ORDER BY ALL").fetchall()}
    finally:
        con.close()


@pytest.mark.parametrize("bad", range(len(BAD)), ids=[row["prompt_id"] + "-" + reason for row, reason in BAD])
def test_a_prompt_file_with_one_bad_row_is_stored_alike_by_both_paths(tmp_path, protocol, bad):
    outcomes = []
    for fast in (True, False):
        rows = [_prompt(), _prompt(prompt_id="q-who5", instrument="who5", timezone="America/New_York"), BAD[bad][0]]
        wh = tmp_path / f"w-{fast}.duckdb"
        recs = [ingest_batch(_prompt_landing(tmp_path, f"a-{fast}", rows), protocol, wh, KEY, fast_path=fast),
                ingest_batch(_prompt_landing(tmp_path, f"b-{fast}", [_prompt(prompt_id="q-late")] + rows[:1],
                                             consents=False), protocol, wh, KEY, fast_path=fast)]
        assert all(r.balanced for r in recs)
        outcomes.append(([(r.stored, r.quarantined) for r in recs], _prompt_tables(wh)))
    assert outcomes[0] == outcomes[1]
    stored, quarantined = outcomes[0][0][1]
    assert stored["prompts"] == 1 and quarantined == {"duplicate": 1}  # the second batch repeats q1


def test_clean_prompt_files_take_the_fast_path(tmp_path, protocol, monkeypatch):
    import flows.ingest.fastpath as fastpath

    runs: list[str] = []
    real = fastpath.try_run

    def spy(con, run, *args, **kwargs):
        outcome = real(con, run, *args, **kwargs)
        runs.extend(f.name for f, _ in run if outcome.stored)
        return outcome

    monkeypatch.setattr(fastpath, "try_run", spy)
    rows = [_prompt(), _prompt(prompt_id="q-who5", instrument="who5", timezone="America/New_York")]
    rec = ingest_batch(_prompt_landing(tmp_path, "landing", rows), protocol, tmp_path / "w.duckdb", KEY)
    assert runs == ["prompts.jsonl"]
    assert rec.stored["prompts"] == 2 and rec.quarantined == {}
