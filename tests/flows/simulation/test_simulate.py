"""The simulator: deterministic for a seed, realistic in the ways the issue names, every bad row quarantined."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import duckdb
import numpy as np
import pytest

from flows.ingest import ingest_batch
from flows.simulation import simulate, truth
from schemas.protocol import load_protocol

from tests.support.spine import KEY


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    summary = simulate(out, 600, seed=11, bad_rows=0.01, formats="mixed", truth_draws=20_000)
    return out, summary


def test_same_seed_same_files(tmp_path):
    a = simulate(tmp_path / "a", 120, seed=5, truth_draws=5_000)
    b = simulate(tmp_path / "b", 120, seed=5, truth_draws=5_000)
    simulate(tmp_path / "c", 120, seed=6, truth_draws=5_000)
    assert a["events"] == b["events"]
    assert _digest(tmp_path / "a" / "landing") == _digest(tmp_path / "b" / "landing")
    assert _digest(tmp_path / "a" / "landing") != _digest(tmp_path / "c" / "landing")


def test_every_injected_bad_row_is_quarantined_with_its_reason(small_study, tmp_path):
    out, summary = small_study
    protocol = load_protocol(out / "study.yaml")
    rec = ingest_batch(out / "landing", protocol, tmp_path / "w.duckdb", KEY)
    injected = json.loads((out / "injected.json").read_text())
    assert set(injected) >= {"malformed_json", "schema_violation", "naive_timestamp", "unknown_study",
                             "unknown_instrument", "out_of_range", "duplicate", "no_consent", "withdrawn"}
    assert rec.quarantined == injected  # exactly what was injected, nothing more
    assert rec.read == sum(rec.stored.values()) + sum(rec.quarantined.values())
    assert rec.stored["assignments"] == 600 and rec.stored["events"] == summary["events"]


def test_the_simulated_partner_builds_no_field_from_a_participant_id(tmp_path):
    """A simulator models a partner that behaves well: no prompt, response, event or session id made from the raw
    participant id (prompt ids were ``q-<raw id>-<wave>``), so the ingest replaces nothing (contract.embeds_id_sql);
    and no field but ``participant_id`` holds any participant's id, checked on every line of every file."""
    summary = simulate(tmp_path / "s", 150, seed=1, bad_rows=0.01, truth_draws=2_000)
    rec = ingest_batch(summary["landing"], load_protocol(tmp_path / "s" / "study.yaml"), tmp_path / "w.duckdb", KEY)
    assert rec.balanced and rec.warnings == {}
    _no_participant_id_outside_its_field(Path(summary["landing"]))


def _no_participant_id_outside_its_field(land: Path) -> None:
    ids = {json.loads(line)["participant_id"] for line in (land / "consents.jsonl").read_text().splitlines() if line}
    assert ids and all(re.fullmatch(r"u-[0-9a-f]{24}", i) for i in ids)  # the simulator's form of an id
    for path in land.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # an injected malformed line
            if not isinstance(record, dict):
                continue
            texts = " ".join(v for k, v in record.items() if k != "participant_id" and isinstance(v, str))
            assert not ids.intersection(re.findall(r"u-[0-9a-f]{24}", texts)), (path.name, line)


def test_study_shape_attrition_and_withdrawals(small_study, tmp_path):
    out, _ = small_study
    t = json.loads((out / "truth.json").read_text())
    protocol = load_protocol(out / "study.yaml")
    assert [w.day for w in protocol.waves] == [0, 14, 30, 91, 182, 365]
    assert protocol.control_arm == "control" and len(protocol.arms) == 3
    missing_final = t["missing_fraction_by_wave"]["m12"]
    assert 0.20 <= missing_final <= 0.40
    assert list(t["missing_fraction_by_wave"].values()) == sorted(t["missing_fraction_by_wave"].values())
    consents = (out / "landing" / "consents.jsonl").read_text().splitlines()
    withdrawals = sum(1 for line in consents if line.strip() and '"withdrawn_at":"' in line.replace(" ", ""))
    assert 0.005 <= withdrawals / 600 <= 0.05


def test_truth_effects_grow_then_plateau_within_published_range():
    t = truth(draws=60_000)
    for arm in ("guidance", "candor"):
        who5 = t["arms"][arm]["effects"]["who5.percent"]
        waves = ["w2", "m1", "m3", "m6", "m12"]
        values = [who5[w] for w in waves]
        assert values[0] < values[2] and abs(values[-1] - values[-2]) < 0.25 * values[-1]  # grows, then plateaus
        d = t["arms"][arm]["long_run_d"]["who5.percent"]
        assert 0.0 < d <= 0.3
        assert t["arms"][arm]["effects"]["phq2.total"]["m12"] < 0  # fewer depressive symptoms
    assert t["arms"]["guidance"]["long_run"]["who5.percent"] > t["arms"]["candor"]["long_run"]["who5.percent"]


def test_outcomes_correlate_like_real_instruments(small_study, tmp_path):
    out, _ = small_study
    rows = []
    for line in (out / "landing" / "responses-baseline.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        rows.append((r["participant_id"], r["instrument"], sum(v for v in r["items"].values() if v is not None)))
    con = duckdb.connect()
    con.execute("CREATE TABLE r(p VARCHAR, i VARCHAR, s DOUBLE)")
    con.executemany("INSERT INTO r VALUES (?, ?, ?)", rows)
    wide = con.execute("PIVOT r ON i USING first(s) GROUP BY p").df().dropna()
    corr = np.corrcoef(wide[["who5", "swls", "flourishing_scale", "phq2"]].to_numpy().T)
    assert 0.4 < corr[0, 1] < 0.9 and 0.4 < corr[0, 2] < 0.9  # wellbeing measures agree, not identical
    assert corr[0, 3] < -0.3  # depressive symptoms run against wellbeing


def test_early_telemetry_predicts_long_run_outcome(small_study):
    """Engagement drives early session counts and the size of a feature's effect, and is related to
    wellbeing: sessions in the first four weeks predict the 12-month WHO-5 (a usable surrogate)."""
    out, _ = small_study
    land = out / "landing"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    frame = con.execute(f"""
        WITH a AS (SELECT participant_id, arm, assigned_at::TIMESTAMPTZ AS t0 FROM read_csv('{land}/assignments.csv')),
        ev AS (SELECT participant_id, ts::TIMESTAMPTZ AS ts, type FROM read_json('{land}/events-*.jsonl',
               format='newline_delimited', columns={{'participant_id': 'VARCHAR', 'ts': 'VARCHAR', 'type': 'VARCHAR'}})),
        early AS (SELECT a.participant_id, a.arm, count(ev.ts) AS sessions FROM a LEFT JOIN ev
                  ON ev.participant_id = a.participant_id AND ev.type = 'session_start'
                  AND ev.ts < a.t0 + INTERVAL 28 DAY GROUP BY ALL),
        r AS (SELECT participant_id, instrument,
                     list_sum(list_filter(json_extract(items, '$.*')::INTEGER[], lambda x: x IS NOT NULL)) AS s
              FROM read_json('{land}/responses-m12.jsonl', format='newline_delimited',
                             columns={{'participant_id': 'VARCHAR', 'instrument': 'VARCHAR', 'items': 'JSON'}})
              WHERE instrument = 'who5')
        SELECT early.arm, early.sessions, r.s FROM early JOIN r USING (participant_id)
    """).df()
    assert len(frame) > 300
    r = np.corrcoef(frame["sessions"], frame["s"])[0, 1]
    assert r > 0.1, f"early sessions should predict 12-month WHO-5, got r = {r:.3f}"


@pytest.mark.parametrize("participants, seed", [(6, 1), (7, 2), (20, 1), (100, 1)])
def test_small_studies_simulate_and_ingest(tmp_path, participants, seed):
    """D21: `simulate` crashed for N = 6..100 (a study without a withdrawal); the smallest studies the CLI allows
    simulate, and every row they write ingests into exactly one place."""
    summary = simulate(tmp_path / "s", participants, seed=seed, bad_rows=0.02, truth_draws=2_000)
    rec = ingest_batch(summary["landing"], load_protocol(tmp_path / "s" / "study.yaml"), tmp_path / "w.duckdb", KEY)
    assert rec.balanced and rec.stored["assignments"] == participants
