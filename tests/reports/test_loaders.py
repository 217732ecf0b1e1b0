"""The bundle loaders: the public one sees only release and aggregate tables, the trusted one counts the CONSORT flow
in the warehouse, and the two flows agree up to the DP noise."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from flows.reports import PUBLIC_TABLES, load_public_bundle, public_bundle, public_connection, trusted_bundle
from flows.study import load_study
from reports.bundle import ConsortFlow, NotAvailable, ReportBundle, Safety


def test_public_connection_holds_only_release_and_aggregate_tables(study):
    protocol = load_study(study.study)
    with public_connection(study.warehouse, protocol.study_id) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        with_participant = con.execute("SELECT DISTINCT table_name FROM information_schema.columns "
                                       "WHERE column_name = 'participant'").fetchall()
        assert con.execute("SELECT count(*) FROM duckdb_databases() WHERE NOT internal").fetchone()[0] == 1
    assert tables == set(PUBLIC_TABLES)
    assert with_participant == []
    for table in ("responses", "scores", "assignments", "events", "consents", "safety_flags", "quarantine"):
        assert table not in tables


def test_public_loader_works_where_participant_tables_do_not_exist(study):
    """A fresh in-memory database with copies of the public tables only (no participant-level table at all), and the
    public loader still builds the whole bundle from it."""
    protocol = load_study(study.study)
    con = duckdb.connect(":memory:")
    con.execute(f"ATTACH '{study.warehouse}' AS wh (READ_ONLY)")
    for table in PUBLIC_TABLES:
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM wh.{table}")
    con.execute("DETACH wh")
    bundle = load_public_bundle(con, protocol)
    con.close()
    assert bundle.tier == "public" and bundle.releases and bundle.release_values
    assert {a.tier for a in bundle.analyses} == {"public"}
    assert isinstance(bundle.flow, NotAvailable) and not bundle.baseline and not bundle.availability
    assert all(r.n_obs is None for r in bundle.psychometrics)
    assert all(c.checked_count is None for c in bundle.quality.checks)


def test_a_public_bundle_refuses_exact_counts(study):
    protocol = load_study(study.study)
    trusted = trusted_bundle(study.warehouse, protocol)
    public = public_bundle(study.warehouse, protocol)
    with pytest.raises(ValueError, match="exact participant counts"):
        ReportBundle.model_validate({**public.model_dump(), "flow": trusted.flow.model_dump()})
    with pytest.raises(ValueError, match="trusted-tier analysis"):
        ReportBundle.model_validate({**public.model_dump(), "analyses": [a.model_dump() for a in trusted.analyses]})
    assert ReportBundle.model_validate_json(public.model_dump_json()) == public  # a bundle is plain data


def _warehouse_flow(study) -> dict[str, dict[str, int]]:
    """The flow recomputed in pandas from the warehouse's rows (an independent path to the same counts)."""
    con = duckdb.connect(str(study.warehouse), read_only=True)
    arms = con.execute("SELECT participant, arm, assigned_at FROM assignments").df()
    responses = con.execute("SELECT participant, wave FROM responses").df()
    con.close()
    arms = arms.sort_values(["assigned_at", "arm"]).drop_duplicates("participant")
    protocol = load_study(study.study)
    order = {w: i for i, w in enumerate(protocol.wave_names)}
    answered = responses.drop_duplicates()
    answered = answered[answered["participant"].isin(arms["participant"])]
    answered["idx"] = answered["wave"].map(order)
    last = answered.groupby("participant")["idx"].max()
    out: dict[str, dict[str, int]] = {}
    for arm, group in arms.groupby("arm"):
        lasts = group["participant"].map(last).fillna(-1)
        row = {"allocated": len(group)}
        for w, i in order.items():
            row[f"continued:{w}"] = int((lasts >= i).sum())
            row[f"answered:{w}"] = int(answered[answered["participant"].isin(group["participant"])
                                                & (answered["idx"] == i)]["participant"].nunique())
        out[arm] = row
    return out


def test_trusted_flow_counts_equal_the_warehouse_and_the_landing_files(study):
    protocol = load_study(study.study)
    flow = trusted_bundle(study.warehouse, protocol).flow
    assert isinstance(flow, ConsortFlow)
    expected = _warehouse_flow(study)
    for arm in flow.arms:
        assert arm.allocated == expected[arm.arm]["allocated"]
        entered = arm.allocated
        for w in arm.waves:
            assert w.entered == entered
            assert w.continued == expected[arm.arm][f"continued:{w.wave}"], (arm.arm, w.wave)
            assert w.answered == expected[arm.arm][f"answered:{w.wave}"], (arm.arm, w.wave)
            assert w.entered == w.continued + sum(w.exits.values())  # the invariant, per arm and wave
            entered = w.continued
    # every assignment in the landing files is allocated or was erased after withdrawing consent (the one row with
    # an arm the protocol does not have is quarantined at ingest)
    csv, jsonl = study.landing / "assignments.csv", study.landing / "assignments.jsonl"
    landing = pd.read_csv(csv) if csv.exists() else pd.read_json(jsonl, lines=True)
    landed = landing[landing["arm"].isin(protocol.arm_names)]
    assert flow.randomised + sum(flow.erased.values()) == len(landed)
    assert sum(a.allocated for a in flow.arms) == flow.randomised


def test_public_flow_equals_the_trusted_flow_up_to_the_dp_noise(study):
    """Every released count lies within 5 noise SDs of the exact count (for Gaussian noise a cell misses with
    probability 5.7e-7, so the 42 cells of a release all pass with probability > 0.99997); and the noise is real: the
    standardised differences are not all zero."""
    protocol = load_study(study.study)
    public, trusted = public_bundle(study.warehouse, protocol), trusted_bundle(study.warehouse, protocol)
    from reports.consort import public_flow

    cells = public_flow(public)
    z = []
    for arm in trusted.flow.arms:
        exact = {"allocated": arm.allocated, **{w.wave: w.answered for w in arm.waves}}
        for stage, n in exact.items():
            v = cells[arm.arm][stage]
            if v.suppressed:
                continue
            z.append((v.value - n) / v.noise_sd)
    assert len(z) >= 15
    assert max(abs(x) for x in z) < 5, z
    assert any(abs(x) > 0.01 for x in z)


def test_trusted_bundle_holds_harms_baseline_and_availability(study):
    protocol = load_study(study.study)
    b = trusted_bundle(study.warehouse, protocol)
    assert isinstance(b.safety, Safety) and b.safety.source == "warehouse" and b.safety.counts
    assert all(c.at_risk and c.n_participants <= c.at_risk for c in b.safety.counts)
    assert {r.arm for r in b.baseline} == set(protocol.arm_names)
    assert all(r.n > 0 and r.sd > 0 for r in b.baseline)
    assert {a.tier for a in b.analyses} == {"trusted", "public"}
    assert b.governance.consent_scopes and b.governance.quarantined_by_reason
    # public: safety counts are not released, and the reports say so
    assert isinstance(public_bundle(study.warehouse, protocol).safety, NotAvailable)


def test_public_safety_counts_come_from_the_latest_release_holding_them():
    from datetime import UTC, datetime, timedelta

    from flows.reports import _public_safety
    from reports.bundle import Release, ReleasedValue

    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    releases = tuple(Release(release_id=rid, created_at=t0 + timedelta(days=d), mechanism="gaussian", accounting="zcdp",
                             rho=0.1, epsilon=1.0, delta=1e-6, min_cell_size=10, queries=("safety_flags",),
                             values_sha256="x", opendp_version="0.16") for rid, d in (("rel-z", 0), ("rel-a", 30)))
    values = (ReleasedValue(release_id="rel-z", query="safety_flags", outcome=None, arm="control", wave="m1",
                            statistic="phq2_positive", value=50.0, noise_sd=2.0, suppressed=False),
              ReleasedValue(release_id="rel-a", query="safety_flags", outcome=None, arm="control", wave="m1",
                            statistic="phq2_positive", value=None, noise_sd=2.0, suppressed=True))
    safety = _public_safety(releases, values)
    assert isinstance(safety, Safety) and safety.source == "dp_release"
    assert [(c.suppressed, c.n_participants) for c in safety.counts] == [(True, None)]  # rel-a is the later one
    assert isinstance(_public_safety(releases, ()), NotAvailable)
