"""A simulated study's prompts: late and expired ones, a compliance table that reconciles, late answers kept and
left out of the primary analysis, and the trial team's bundle carrying the table."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import duckdb
import pytest

from flows.ingest import ingest_batch
from flows.reports import load_public_bundle, load_trusted_bundle
from flows.simulation import simulate
from schemas.protocol import load_protocol
from schemas.sqltext import literal
from schemas.warehouse import relations
from reports.bundle import NotAvailable

from tests.support.spine import KEY

AS_OF = datetime(2030, 1, 1, tzinfo=UTC)  # after every simulated window closed


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim-prompts")
    simulate(out, 120, seed=21, truth_draws=2_000)
    protocol = load_protocol(out / "study.yaml")
    rec = ingest_batch(out / "landing", protocol, out / "w.duckdb", KEY)
    assert rec.balanced and rec.quarantined == {}, rec.as_json()
    con = duckdb.connect(str(out / "w.duckdb"), read_only=True)
    yield out, protocol, rec, con
    con.close()


def test_the_simulated_compliance_table_reconciles_per_arm_and_wave(study):
    out, protocol, rec, con = study
    as_of = literal(AS_OF.isoformat()) + "::TIMESTAMPTZ"
    table = con.execute(f"SELECT arm, wave, prompted, answered_in_window, late, expired, unanswered "
                        f"FROM {relations.compliance_table(protocol, as_of)}").fetchall()
    assert {(a, w) for a, w, *_ in table} == {(a, w) for a in protocol.arm_names for w in protocol.wave_names}
    for arm, wave, prompted, inw, late, expired, unanswered in table:
        assert prompted == inw + late + expired + unanswered, (arm, wave)
    # every prompt kept is a prompt of record of a randomised participant (one wave-level prompt per wave; the
    # prompts of participants who withdrew were stored, then erased with them in the same batch)
    kept = con.execute("SELECT count(*) FROM prompts").fetchone()[0]
    assert sum(r[2] for r in table) == kept and 0 < kept <= rec.stored["prompts"]
    # the late answers the simulator made are the ones counted late, wave by wave
    truth = json.loads((out / "truth.json").read_text())["late_answers_by_wave"]
    late = {w: sum(r[4] for r in table if r[1] == w) for w in protocol.wave_names}
    assert late == truth and sum(late.values()) > 0
    assert sum(r[5] for r in table) > 0  # non-responders' prompts expired
    # prompted per arm x wave is the arm's size: everyone still consenting is prompted at every wave
    arms = dict(con.execute(f"SELECT arm, count(*) FROM {relations.study_arms(protocol.study_id)} GROUP BY ALL").fetchall())
    assert all(r[2] == arms[r[0]] for r in table)


def test_late_answers_are_kept_flagged_and_left_out_of_the_primary_scores(study, tmp_path):
    out, protocol, _, con = study
    from flows.scoring import score_responses

    wh = tmp_path / "w.duckdb"
    wh.write_bytes((out / "w.duckdb").read_bytes())
    score_responses.fn(wh, protocol.study_id)
    c = duckdb.connect(str(wh), read_only=True)
    try:
        late_who5 = c.execute(f"SELECT count(*) FROM {relations.response_windows(protocol)} "
                              "WHERE late AND instrument = 'who5'").fetchone()[0]
        all_scores = c.execute(f"SELECT count(*) FROM {relations.study_scores(protocol.study_id, ['who5.percent'])}"
                               ).fetchone()[0]
        primary = c.execute(f"SELECT count(*) FROM {relations.primary_scores(protocol, ['who5.percent'])}").fetchone()[0]
    finally:
        c.close()
    assert late_who5 > 0 and primary == all_scores - late_who5
    assert relations.late_excluded(protocol)


def test_the_trusted_bundle_carries_compliance_and_the_public_one_does_not(study):
    _, protocol, _, con = study
    trusted = load_trusted_bundle(con, protocol, as_of=AS_OF)
    assert isinstance(trusted.compliance, tuple) and trusted.compliance
    assert [(c.arm, c.wave) for c in trusted.compliance][:2] == [(protocol.arm_names[0], protocol.wave_names[0]),
                                                                 (protocol.arm_names[0], protocol.wave_names[1])]
    assert all(c.prompted == c.answered + c.late + c.expired + c.unanswered for c in trusted.compliance)
    assert "prompts of record" in trusted.flow.prompted
    public = load_public_bundle(con, protocol)
    assert isinstance(public.compliance, NotAvailable) and "DP releases" in public.compliance.reason


def test_the_realistic_simulator_prompts_everyone_and_its_expired_prompts_are_its_missing_answers(tmp_path):
    """The realistic process writes one prompt per participant and wave and no late answer: per wave, the expired
    prompts are exactly the participants whose answer is missing (its truth.json's missing fraction)."""
    from flows.simulation.realistic import RealisticParams, simulate_realistic

    study = simulate_realistic(RealisticParams(n_participants=120), seed=4)
    study.write_landing(tmp_path, truth_draws=1_000)
    protocol = load_protocol(tmp_path / "study.yaml")
    rec = ingest_batch(tmp_path / "landing", protocol, tmp_path / "w.duckdb", KEY)
    assert rec.balanced and rec.quarantined == {} and rec.stored["prompts"] == 120 * len(protocol.waves)
    assert rec.warnings == {}  # no prompt or response id made from a raw participant id
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    try:
        rows = con.execute(f"SELECT wave, sum(prompted), sum(answered_in_window), sum(late), sum(expired) FROM "
                           f"{relations.compliance_table(protocol, literal(AS_OF.isoformat()) + '::TIMESTAMPTZ')} "
                           "GROUP BY wave").fetchall()
    finally:
        con.close()
    missing = study.missing_fraction()
    assert {w: (int(p), int(i + late + e), int(late), e / p) for w, p, i, late, e in rows} == {
        w: (120, 120, 0, pytest.approx(missing[w])) for w in protocol.wave_names}
