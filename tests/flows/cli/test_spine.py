"""The spine's command line: JSON output scripts can read, one-sentence errors, schema export, the Prefect demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tests.support.spine import KEY, assignment, consent, event, response, write_jsonl

from tests.support import REPO as ROOT  # noqa: E402
FLOURISH = [sys.executable, "-m", "flows.cli"]


def _run(args, env_extra=None, timeout=300):
    env = {**os.environ, "FLOURISH_ORCHESTRATOR": "inline", **(env_extra or {})}
    env.pop("FLOURISH_PSEUDONYM_KEY", None)
    env.update({k: v for k, v in (env_extra or {}).items()})
    return subprocess.run(FLOURISH + args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def landing(tmp_path, protocol):
    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent("a"), consent("b")])
    write_jsonl(land / "assignments.jsonl", [assignment("a"), assignment("b", "guidance")])
    write_jsonl(land / "responses.jsonl", [response("r1", "a"), response("r2", "b", items={"WHO5_1": 8})])
    write_jsonl(land / "events.jsonl", [event("e1", "a"), "{oops"])
    study = tmp_path / "study.yaml"
    from schemas.protocol import dump_protocol
    study.write_text(dump_protocol(protocol))
    return land, study


def test_ingest_json_is_one_object_scripts_can_read(landing, tmp_path):
    land, study = landing
    proc = _run(["ingest", str(land), "--study", str(study), "--warehouse", str(tmp_path / "w.duckdb"), "--json"],
                {"FLOURISH_PSEUDONYM_KEY": KEY.decode()})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["read"] == 8
    assert out["stored"] == {"consents": 2, "assignments": 2, "responses": 1, "events": 1}
    assert out["quarantined"] == {"malformed_json": 1, "out_of_range": 1}


@pytest.mark.parametrize("args, needle", [
    (["ingest", "{land}", "--study", "{study}", "--warehouse", "{wh}"], "no pseudonym key"),
    (["ingest", "{land}/nope", "--study", "{study}", "--warehouse", "{wh}", "--key-file", "{key}"], "does not exist"),
    (["ingest", "{land}", "--study", "{land}/consents.jsonl", "--warehouse", "{wh}", "--key-file", "{key}"], "not valid YAML"),
    (["simulate", "--out", "{tmp}/s", "--participants", "100", "--formats", "xml"], "--formats"),
])
def test_errors_are_one_sentence_without_traceback(landing, tmp_path, args, needle):
    land, study = landing
    key = tmp_path / "k.key"
    key.write_text(KEY.decode())
    fill = {"land": land, "study": study, "wh": tmp_path / "w.duckdb", "key": key, "tmp": tmp_path}
    proc = _run([a.format(**fill) for a in args])
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and proc.stderr.strip().count("\n") == 0


def test_schema_export_validates_real_records(tmp_path):
    proc = _run(["schema", "export", str(tmp_path / "schemas")])
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "schemas").iterdir())
    assert names == ["assignments.schema.json", "consents.schema.json", "events.schema.json",
                     "participants.schema.json", "prompts.schema.json", "regulator_report.schema.json",
                     "responses.schema.json", "scores.schema.json", "study_protocol.schema.json"]
    schema = json.loads((tmp_path / "schemas" / "events.schema.json").read_text())
    jsonschema.validate(event("e1", "a"), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**event("e1", "a"), "colour": "red"}, schema)
    prompts = json.loads((tmp_path / "schemas" / "prompts.schema.json").read_text())
    prompt = {"prompt_id": "q1", "participant_id": "a", "study_id": "s1", "wave": "m1", "schedule_version": "v1",
              "scheduled_at": "2026-03-29T09:00:00+01:00", "timezone": "Europe/London"}
    jsonschema.validate(prompt, prompts)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**prompt, "scheduled_at": "2026-03-29T09:00:00"}, prompts)


@pytest.mark.slow
def test_demo_runs_under_prefect_and_accounts_for_every_bad_row(tmp_path):
    """The README's main job, with Prefect's real (ephemeral) server: the slow part of the suite."""
    env = {"FLOURISH_ORCHESTRATOR": "prefect", "PREFECT_HOME": str(tmp_path / "prefect-home")}
    proc = _run(["demo", "--out", str(tmp_path / "demo"), "--participants", "300"], env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "every injected bad-row kind" in proc.stdout and "is in quarantine with its reason" in proc.stdout
    assert "read = stored + quarantined" in proc.stdout
    assert "prefect orchestration" in proc.stderr
    assert (tmp_path / "demo" / "keys" / "pseudonym.key").exists()
    assert (tmp_path / "demo" / "warehouse" / "flourish.duckdb").exists()


def test_erase_scrubs_the_whole_study_folder_and_reingest_refuses(tmp_path, protocol):
    """Issue 4's erasure acceptance through the CLI: landing files, quarantine files and the warehouse
    under the study's folder hold neither the raw id nor the pseudonym afterwards."""
    from flows.ingest import ingest_batch
    from privacy.pseudonym import pseudonymize

    study = tmp_path / "study"
    land = study / "landing"
    land.mkdir(parents=True)
    write_jsonl(land / "consents.jsonl", [consent("alice@example.org"), consent("bob@example.org")])
    write_jsonl(land / "events.jsonl", [event("e1", "alice@example.org"), event("e2", "bob@example.org"),
                                        '{"participant_id": "alice@example.org", broken'])
    wh = study / "warehouse" / "w.duckdb"
    ingest_batch(land, protocol, wh, KEY)
    key = tmp_path / "k.key"
    key.write_text(KEY.decode())
    needles = [b"alice@example.org", pseudonymize("alice@example.org", KEY).encode()]
    assert any(n in p.read_bytes() for p in study.rglob("*") if p.is_file() for n in needles)
    proc = _run(["erase", "alice@example.org", "--warehouse", str(wh), "--key-file", str(key),
                 "--study-folder", str(study)])
    assert proc.returncode == 0, proc.stderr
    hits = [str(p) for p in study.rglob("*") if p.is_file() for n in needles if n in p.read_bytes()]
    assert hits == []
    assert b"bob@example.org" in (land / "consents.jsonl").read_bytes()  # others untouched
    late = tmp_path / "late"
    late.mkdir()
    write_jsonl(late / "events.jsonl", [event("e9", "alice@example.org")])
    rec = ingest_batch(late, protocol, wh, KEY)
    assert rec.quarantined == {"withdrawn": 1}


def test_partner_file_names_reach_the_terminal_escaped_and_brackets_do_not_crash(tmp_path, protocol):
    """D20: a file named with escape codes printed raw escape codes in the progress line; a path events-a[/]x.jsonl
    (a folder named events-a[) crashed the ingest in rich's markup parser, on every retry."""
    from schemas.protocol import dump_protocol

    land = tmp_path / "landing"
    (land / "events-a[").mkdir(parents=True)
    write_jsonl(land / "events-\x1b[31mRED\x1b[0m.jsonl", [event("e1", "a"), "{oops"])
    write_jsonl(land / "events-a[" / "]x.jsonl", [event("e2", "a")])
    study = tmp_path / "study.yaml"
    study.write_text(dump_protocol(protocol))
    args = ["ingest", str(land), "--study", str(study), "--warehouse", str(tmp_path / "w.duckdb")]
    for run in ("first", "again"):  # the second run lists both names as skipped
        proc = _run(args, {"FLOURISH_PSEUDONYM_KEY": KEY.decode()})
        assert proc.returncode == 0, proc.stderr[-2000:]
        shown = proc.stdout + proc.stderr
        assert "\x1b" not in shown and "Traceback" not in shown, shown
        assert "\\x1b[31mRED" in shown, (run, shown)
        if run == "again":
            assert "events-a[/]x.jsonl" in shown


def test_ingest_puts_the_quarantine_folder_where_it_is_told_and_replay_stores_late_consents(tmp_path, protocol):
    """--quarantine-dir (D17) and flourish replay (D8) through the command line, JSON for scripts."""
    from schemas.protocol import dump_protocol

    early, late = tmp_path / "early", tmp_path / "late"
    early.mkdir()
    late.mkdir()
    write_jsonl(early / "events.jsonl", [event("e1", "a"), "{oops"])
    write_jsonl(late / "consents.jsonl", [consent("a")])
    study = tmp_path / "study.yaml"
    study.write_text(dump_protocol(protocol))
    wh = tmp_path / "w.duckdb"
    env = {"FLOURISH_PSEUDONYM_KEY": KEY.decode()}
    proc = _run(["ingest", str(early), "--study", str(study), "--warehouse", str(wh), "--json",
                 "--quarantine-dir", str(tmp_path / "q")], env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["quarantined"] == {"malformed_json": 1, "no_consent": 1}
    assert len(list((tmp_path / "q").iterdir())) == 1 and not (tmp_path / "early.quarantine").exists()
    assert _run(["ingest", str(late), "--study", str(study), "--warehouse", str(wh)], env).returncode == 0
    proc = _run(["replay", "--study", str(study), "--warehouse", str(wh), "--json"])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["stored"] == {"events": 1} and out["rows_regated"] == 1
