"""The privacy CLI: budget --json's exact shape, refusals as one sentence (exit 2) that write nothing, erase."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.support.privacy import KEY, fill, make_protocol
from flows.warehouse import connect
from schemas.protocol import dump_protocol


@pytest.fixture(scope="module")
def app():
    from flows import cli

    return cli.app


def _study(tmp_path, **kw):
    db = tmp_path / "study" / "w.duckdb"
    con = connect(db)
    fill(con, 30)
    con.close()
    proto = tmp_path / "study.yaml"
    data = make_protocol(**kw).model_dump(mode="json")
    data["primary_outcome"]["lower_bound"], data["primary_outcome"]["upper_bound"] = 0, 100
    proto.write_text(dump_protocol(make_protocol(**kw).model_validate(data)))
    return db, proto


def test_release_then_budget_json(app, tmp_path):
    db, proto = _study(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["release", str(proto), "--warehouse", str(db), "--fraction", "0.5", "--json"])
    assert r.exit_code == 0, r.output
    # each outcome's public/trusted width ratio of its long-run interval: a number, or why not (30 participants)
    ratios = json.loads(r.stdout)["public_width_ratio"]
    assert set(ratios) == {"who5.percent", "ext.score"}
    assert all((isinstance(v, float) and v >= 1.0) or v.startswith("not available at m3") for v in ratios.values())
    r = runner.invoke(app, ["budget", "--warehouse", str(db), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert list(out) == ["study-a"] and set(out["study-a"]) == {"epsilon_total", "epsilon_spent", "releases"}
    assert out["study-a"]["epsilon_total"] == 2.0 and out["study-a"]["releases"] == 1
    assert 0 < out["study-a"]["epsilon_spent"] < 2.0
    # overrun: one sentence, exit 2, nothing written
    con = connect(db)
    before = con.execute("SELECT count(*) FROM release_values").fetchone()[0]
    con.close()
    r = runner.invoke(app, ["release", str(proto), "--warehouse", str(db), "--fraction", "0.9"])
    assert r.exit_code == 2 and "refused before any noise" in r.stderr and "Traceback" not in r.output
    con = connect(db)
    assert con.execute("SELECT count(*) FROM release_values").fetchone()[0] == before
    con.close()


def test_release_of_unbounded_outcome_is_refused(app, tmp_path):
    db, proto = _study(tmp_path)
    import yaml

    data = yaml.safe_load(proto.read_text())
    data["secondary_outcomes"][0]["upper_bound"] = None  # an external score without bounds
    proto.write_text(yaml.safe_dump(data))
    r = CliRunner().invoke(app, ["release", str(proto), "--warehouse", str(db)])
    assert r.exit_code == 2 and "ext.score" in r.stderr and "clipping bounds" in r.stderr


def test_erase_and_consent_status(app, tmp_path, monkeypatch):
    db, _ = _study(tmp_path)
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY.decode())
    runner = CliRunner()
    # the warehouse was filled directly, not by the ingest (which records consents in the ledger): sync it
    r = runner.invoke(app, ["consent", "sync", "--warehouse", str(db)])
    assert r.exit_code == 0 and "appended 60 ledger entries" in r.stdout, r.output
    r = runner.invoke(app, ["consent", "status", "--warehouse", str(db), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["scopes"]["surveys"]["active"] == 30
    r = runner.invoke(app, ["erase", "raw-0004", "--warehouse", str(db), "--key-file", str(keyfile), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["residual_files"] == [] and out["rows_deleted"]["assignments"] == 1
    r = runner.invoke(app, ["consent", "status", "--warehouse", str(db), "--json"])
    status = json.loads(r.stdout)
    assert status["chain_verified"] and status["scopes"]["surveys"]["active"] == 29 and status["redacted_entries"] == 2


def test_statement_says_releases_are_not_recalled():
    from privacy.statement import render_statement

    text = render_statement(make_protocol(mechanism="laplace", epsilon=1.0))
    assert "not recalled" in text and "Laplace" in text and "one participant" in text
    assert "{" not in text  # every placeholder filled


# ---- D24: an erase that finds no one exits non-zero, writes no tombstone, and --json says so ---------------

def _erase_unknown(app, tmp_path, *extra):
    db, _ = _study(tmp_path)
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY.decode())
    r = CliRunner().invoke(app, ["erase", "no-such-participant", "--warehouse", str(db), "--key-file", str(keyfile),
                                 *extra])
    con = connect(db)
    tombstones, log = (con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("tombstones", "erasure_log"))
    con.close()
    return r, tombstones, log, db


def test_erase_of_an_unknown_id_exits_non_zero_and_writes_no_tombstone(app, tmp_path):
    r, tombstones, log, _ = _erase_unknown(app, tmp_path)
    assert r.exit_code == 2 and "no row of this participant" in r.stderr and "no tombstone was written" in r.stderr
    assert "no-such-participant" not in r.output and "Traceback" not in r.output
    assert (tombstones, log) == (0, 0)


def test_erase_json_of_an_unknown_id_says_so(app, tmp_path):
    r, tombstones, _, _ = _erase_unknown(app, tmp_path, "--json")
    assert r.exit_code == 2
    out = json.loads(r.stdout)
    assert out["erased"] is False and "no tombstone was written" in out["error"] and tombstones == 0


def test_a_mistyped_erase_leaves_nothing_that_blocks_rekey(app, tmp_path):
    """D24 -> D11: the tombstone of `erase no-such-participant` later blocked `rekey` with the complete id list."""
    r, _, _, db = _erase_unknown(app, tmp_path)
    assert r.exit_code == 2
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"raw-{i:04d}" for i in range(30)) + "\n")
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    old.write_bytes(KEY)
    new.write_text("a-brand-new-key-0123456789")
    r = CliRunner().invoke(app, ["rekey", "--warehouse", str(db), "--old-key-file", str(old), "--new-key-file",
                                 str(new), "--ids-file", str(ids)])
    assert r.exit_code == 0 and "re-keyed 30 participants" in r.stdout, r.output


# ---- the README findings: what --fraction is a share of, and one set of budget figures ------------------------

def test_fraction_help_says_what_it_is_a_share_of(app):
    """`--fraction 0.25` spent epsilon 1.937 of 4: it is a share of rho under zCDP, and --help did not say so."""
    r = CliRunner().invoke(app, ["release", "--help"])
    text = " ".join(r.stdout.replace("\u2502", " ").split())  # the help panel's borders out
    assert r.exit_code == 0 and "share of rho_total" in text and "MORE than a quarter of epsilon" in text


def test_budget_text_and_json_agree(app, tmp_path):
    """`budget --json` said epsilon_spent 3.99999999734129 while the text said '4 of 4 spent (2.659e-09 left)'."""
    db, proto = _study(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["release", str(proto), "--warehouse", str(db)])
    assert r.exit_code == 0, r.output
    figures = json.loads(runner.invoke(app, ["budget", "--warehouse", str(db), "--json"]).stdout)["study-a"]
    text = runner.invoke(app, ["budget", "--warehouse", str(db)]).stdout
    spent, total = figures["epsilon_spent"], figures["epsilon_total"]
    assert f"epsilon_spent {spent:.12g} of epsilon_total {total:.12g} ({total - spent:.12g} left" in text, text
    assert "; 1 release\n" in text
    assert f"study: epsilon {spent:.12g} of {total:g} spent" in r.stdout  # the release says the same figure


def test_the_run_table_prints_each_planned_releases_width_ratio():
    """`flourish run` prints the primary's public/trusted width ratio for each planned release it made, and n/a for a
    release that cannot carry the public model."""
    from flows.cli.pipeline import _detail

    made = [{"after_wave": "m3", "public_width_ratio": 1.214}, {"after_wave": "m12", "public_width_ratio": "not available"}]
    text = _detail("release", "completed", {"releases": made, "epsilon_spent": 3.5, "epsilon_total": 4.0}, None)
    assert text == ("2 release(s) made; epsilon 3.5 of 4 spent; public/trusted width of the primary's last released "
                    "wave m3: 1.21x, m12: n/a")
