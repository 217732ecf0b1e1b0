"""Erasure and files, through ``flourish erase``: no SQL from a path (D2), atomic from the user's point of view
(D2), every landing format scrubbed row by row and no source file deleted (D6), the study's landing and
quarantine folders covered by default and the proof honest about what it did not check (D9)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.warehouse import connect
from privacy.pseudonym import pseudonymize
from tests.support.privacy import KEY, fill

RAW = "raw-0004"
OTHERS = ["raw-0001", "raw-0002"]


@pytest.fixture(scope="module")
def app():
    from flows import cli

    return cli.app


def _key(tmp_path: Path) -> Path:
    key_file = tmp_path / "pseudonym.key"
    key_file.write_bytes(KEY)
    return key_file


def _study(folder: Path) -> Path:
    db = folder / "w.duckdb"
    con = connect(db)
    fill(con, 6)
    con.execute("CHECKPOINT")
    con.close()
    return db


def _erase(app, db: Path, key_file: Path, *extra: str):
    return CliRunner().invoke(app, ["erase", RAW, "--warehouse", str(db), "--key-file", str(key_file), "--json", *extra])


def _rows(raw_ids: list[str]) -> list[dict]:
    return [{"participant_id": r, "study_id": "study-a", "ts": "2026-01-03T10:00:00+00:00", "note": f"n-{r}"}
            for r in raw_ids]


# ---- D2: paths never become SQL; a failure leaves things as before or finishes on re-run ------------------

def test_a_parquet_file_named_with_sql_is_scrubbed_and_no_other_file_is_written(app, tmp_path):
    """D2: `events-x' (FORMAT csv) --.parquet` turned the COPY into a CSV export of other participants' raw ids."""
    folder = tmp_path / "S2"
    db = _study(folder)
    landing = folder / "landing"
    landing.mkdir()
    hostile = landing / "events-x' (FORMAT csv) --.parquet"
    pq.write_table(pa.Table.from_pylist(_rows([RAW, *OTHERS])), hostile)
    r = _erase(app, db, _key(tmp_path), "--study-folder", str(folder))
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in landing.iterdir()) == [hostile.name]
    assert [row["participant_id"] for row in pq.read_table(hostile).to_pylist()] == OTHERS
    assert json.loads(r.stdout)["residual_files"] == []


def test_a_warehouse_path_with_an_apostrophe_is_erased_and_compacted(app, tmp_path):
    """D2: `o'brien/wh/w.duckdb` crashed the compaction after the rows were deleted, leaving the pseudonym's bytes."""
    folder = tmp_path / "o'brien" / "wh"
    db = _study(folder)
    r = _erase(app, db, _key(tmp_path))
    assert r.exit_code == 0, r.output
    assert pseudonymize(RAW, KEY).encode() not in db.read_bytes()
    assert json.loads(r.stdout)["compacted"] is True


def test_a_file_that_cannot_be_rewritten_refuses_the_erasure_before_any_change(app, tmp_path):
    """D2: a damaged Parquet file holding the participant is found before the rows are touched: nothing changes."""
    folder = tmp_path / "S"
    db = _study(folder)
    damaged = folder / "landing" / "events-damaged.parquet"
    damaged.parent.mkdir()
    damaged.write_bytes(b"PAR1 not really parquet " + RAW.encode() + b" PAR1")
    before = damaged.read_bytes()
    r = _erase(app, db, _key(tmp_path))
    assert r.exit_code == 2 and "cannot be read as Parquet" in r.stderr and "nothing was changed" in r.stderr
    assert RAW not in r.stderr and "Traceback" not in r.output
    assert damaged.read_bytes() == before
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM assignments").fetchone()[0] == 6
        assert con.execute("SELECT count(*) FROM tombstones").fetchone()[0] == 0


def test_an_erasure_whose_file_step_fails_is_finished_by_running_it_again(app, tmp_path, monkeypatch):
    """D2: after the rows are erased a file step fails: one sentence says so, and the same command finishes it."""
    import privacy.scrub as scrub

    folder = tmp_path / "S"
    db = _study(folder)
    (folder / "landing").mkdir()
    landing_file = folder / "landing" / "events-1.jsonl"
    landing_file.write_text("".join(json.dumps(r) + "\n" for r in _rows([RAW, *OTHERS])))
    real = scrub._scrub_records

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scrub, "_scrub_records", disk_full)
    r = _erase(app, db, _key(tmp_path))
    assert r.exit_code == 2 and "rows are erased" in r.stderr and "run the same erase again" in r.stderr, r.output
    assert json.loads(r.stdout)["erased"] is False
    monkeypatch.setattr(scrub, "_scrub_records", real)
    r = _erase(app, db, _key(tmp_path))
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["residual_files"] == [] and "landing/events-1.jsonl" in out["files_rewritten"]
    assert RAW not in landing_file.read_text() and landing_file.read_text().count("participant_id") == 2


# ---- D6: every landing format is scrubbed row by row; source data are never deleted ----------------------

def _write(path: Path, raw_ids: list[str]) -> None:
    rows = _rows(raw_ids)
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix in (".csv", ".tsv"):
        delimiter = "," if path.suffix == ".csv" else "\t"
        rows[-1]["note"] = 'a note over\ntwo lines, with "quotes"'  # a quoted value holding a line break
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter=delimiter, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        path.write_text(buf.getvalue())
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _read(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix in (".csv", ".tsv"):
        return list(csv.DictReader(io.StringIO(path.read_text()), delimiter="," if path.suffix == ".csv" else "\t"))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".parquet"])
def test_every_landing_format_is_scrubbed_row_by_row_and_none_is_deleted(app, tmp_path, suffix):
    """D6: a partner's `events-partner.json` with 2,003 rows was deleted because it held 3 of the participant's."""
    folder = tmp_path / "S3"
    db = _study(folder)
    (folder / "landing").mkdir()
    partner = folder / "landing" / f"events-partner{suffix}"
    _write(partner, [OTHERS[0], RAW, OTHERS[1]])
    expected = [r for r in _read(partner) if r["participant_id"] != RAW]
    r = _erase(app, db, _key(tmp_path), "--study-folder", str(folder))
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["files_deleted"] == [] and out["files_rewritten"] == [f"landing/{partner.name}"]
    assert _read(partner) == expected and len(expected) == 2


# ---- D9: the default erase covers the study's landing folders, and says what it did not cover -------------

def _ingested_study(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The README's layout: demo-out/warehouse/w.duckdb beside demo-out/study/landing (ingested, with one bad line
    of the participant sealed in the quarantine folder beside the landing folder, named by its pseudonym)."""
    from flows.ingest import ingest_batch, quarantine_dir
    from tests.support.privacy import ingest_protocol, write_landing

    landing = write_landing(tmp_path / "demo-out" / "study" / "landing", [RAW, *OTHERS])
    with (landing / "events-1.jsonl").open("a") as fh:
        fh.write('{"participant_id": "' + RAW + '", "broken\n')
    db = tmp_path / "demo-out" / "warehouse" / "w.duckdb"
    ingest_batch(landing, ingest_protocol(), db, KEY)
    sealed = [p.read_bytes() for p in quarantine_dir(landing).iterdir()]
    assert any(pseudonymize(RAW, KEY).encode() in b for b in sealed) and not any(RAW.encode() in b for b in sealed)
    return db, landing, quarantine_dir(landing)


def test_the_default_erase_covers_the_recorded_landing_and_quarantine_folders(app, tmp_path):
    """D9: `erase ID --warehouse demo-out/warehouse/...` left 21 landing files and the quarantine file holding the
    raw id, and still reported no residual file."""
    from privacy.scrub import Needles, scan_bytes

    db, landing, quarantine = _ingested_study(tmp_path)
    r = _erase(app, db, _key(tmp_path))
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    needles = Needles(pseudonymize(RAW, KEY), RAW)
    assert scan_bytes(tmp_path / "demo-out", needles) == []
    assert {str(landing.resolve()), str(quarantine.resolve())} <= set(out["folders_scanned"])
    assert out["residual_files"] == [] and out["folders_missing"] == [] and out["files_deleted"] == []
    for f in landing.iterdir():  # the other participants' rows are still there
        assert all(o in f.read_text() for o in OTHERS)


def test_the_erase_proof_says_which_landing_folder_it_could_not_cover(app, tmp_path):
    """D9: the proof must not claim a folder it did not check (here the landing folder was moved away)."""
    db, landing, _ = _ingested_study(tmp_path)
    shutil.move(landing, tmp_path / "elsewhere")
    r = _erase(app, db, _key(tmp_path))
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["folders_missing"] == [str(landing.resolve())]
    text = CliRunner().invoke(app, ["erase", RAW, "--warehouse", str(db), "--key-file", str(_key(tmp_path))])
    assert text.exit_code == 0 and "NOT covered" in text.stdout and str(landing.resolve()) in text.stdout


def test_a_file_named_with_the_raw_id_is_named_without_it_in_the_receipt_and_the_log(app, tmp_path):
    """No message or log copies a raw participant id, even when a partner's path holds it."""
    folder = tmp_path / "S"
    db = _study(folder)
    named = folder / "landing" / "events" / RAW / "2026-03.jsonl"
    named.parent.mkdir(parents=True)
    named.write_text("".join(json.dumps(r) + "\n" for r in _rows([RAW, *OTHERS])))
    r = _erase(app, db, _key(tmp_path))
    assert r.exit_code == 0, r.output
    assert RAW not in r.stdout and "landing/events/[participant]/2026-03.jsonl" in json.loads(r.stdout)["files_rewritten"]
    with duckdb.connect(str(db), read_only=True) as con:
        assert RAW not in con.execute("SELECT detail FROM erasure_log").fetchone()[0]


def test_erasure_never_follows_a_symbolic_link_out_of_the_folders_it_covers(app, tmp_path):
    """A link in the study folder to a file elsewhere (a cache, /etc/passwd in hardening D19) is not rewritten or
    deleted through the link; the receipt lists it as not checked, so the proof claims nothing about it."""
    folder = tmp_path / "S"
    db = _study(folder)
    outside = tmp_path / "elsewhere" / "notes.bin"
    outside.parent.mkdir()
    outside.write_bytes(b"a note about " + RAW.encode() + b"\n")
    (folder / "cache").mkdir()
    (folder / "cache" / "linked.bin").symlink_to(outside)
    r = _erase(app, db, _key(tmp_path))
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert outside.read_bytes() == b"a note about " + RAW.encode() + b"\n"
    assert "cache/linked.bin" in out["unchecked_files"] and out["files_deleted"] == []
