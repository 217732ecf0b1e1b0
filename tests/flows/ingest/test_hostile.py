"""Hostile landing folders (the hardening audit, ../shared/research/hardening-findings.md, defects D3, D7, D16, D17,
D19): one bad row never sinks a file or the batch, nothing of a row's content reaches an error message, and no raw
participant id reaches the warehouse or the quarantine folder, whatever the files hold or are called."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from flows.ingest import IngestError, ingest_batch, quarantine_dir
from privacy.pseudonym import pseudonymize

from tests.support import REPO
from tests.support.spine import KEY, consent, event, response, write_jsonl

RAW = "u-6349ab2fca057cb01cd396d5"  # the audit's participant id


def _warehouse_bytes(wh: Path) -> bytes:
    con = duckdb.connect(str(wh))
    con.execute("CHECKPOINT")
    con.close()
    return b"".join(p.read_bytes() for p in (wh, Path(str(wh) + ".wal")) if p.exists())


def _folder_bytes(folder: Path) -> bytes:
    if not folder.exists():
        return b""
    return b"".join(p.name.encode() + p.read_bytes() for p in folder.rglob("*") if p.is_file())


def _text_columns(wh: Path) -> str:
    """Every text value of every table, one string (what a SQL scan for a raw id sees)."""
    con = duckdb.connect(str(wh), read_only=True)
    try:
        out = []
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
                                    ).fetchall():
            out += [str(v) for row in con.execute(f'SELECT * FROM "{table}"').fetchall() for v in row]
        return "\n".join(out)
    finally:
        con.close()


# -- D3: no raw id in messages, names or anywhere in the warehouse ------------------------------------------------

def test_a_csv_row_with_an_extra_field_and_a_latin1_byte_costs_that_row_and_copies_nothing(tmp_path, protocol):
    """D3a/D7 (case csvlatin): the whole file was one unreadable_file row whose message held the CSV parser's copy
    of the row, raw id included; the five good rows were lost."""
    land = tmp_path / "landing"
    land.mkdir()
    header = b"participant_id,study_id,arm,assigned_at,stratum\n"
    good = [b"a%d,s1,control,2026-01-01T00:00:00Z,north\n" % i for i in range(5)]
    bad = b"u-secret-raw-id-42,s1,control,2026-01-01T00:00:00Z,Z\xfcrich,extra\n"
    (land / "assignments.csv").write_bytes(header + b"".join(good[:3]) + bad + b"".join(good[3:]))
    wh = tmp_path / "w.duckdb"
    rec = ingest_batch(land, protocol, wh, KEY)
    assert rec.read == 6 and rec.stored["assignments"] == 5 and sum(rec.quarantined.values()) == 1, rec.as_json()
    assert "u-secret-raw-id-42" not in _text_columns(wh)
    assert b"u-secret-raw-id-42" not in _warehouse_bytes(wh) + _folder_bytes(quarantine_dir(land))


def test_the_same_row_past_the_csv_readers_first_block_does_not_sink_the_batch(tmp_path, protocol):
    """D3a/D7 (case csvlatin2): after 8 MB the whole batch was refused, and under Prefect the parser's message with
    the raw id reached Prefect's database and stderr."""
    land = tmp_path / "landing"
    land.mkdir()
    header = b"participant_id,study_id,arm,assigned_at,stratum\n"
    many = b"".join(b"a%d,s1,control,2026-01-01T00:00:00Z,north\n" % i for i in range(200_000))
    bad = b"u-secret-raw-id-42,s1,control,2026-01-01T00:00:00Z,Z\xfcrich,extra\n"
    (land / "assignments.csv").write_bytes(header + many + bad + b"b1,s1,control,2026-01-01T00:00:00Z,\n")
    wh = tmp_path / "w.duckdb"
    rec = ingest_batch(land, protocol, wh, KEY)
    assert rec.stored["assignments"] == 200_001 and sum(rec.quarantined.values()) == 1, rec.as_json()
    assert "u-secret-raw-id-42" not in _text_columns(wh)


def test_a_csv_without_a_header_row_is_refused_and_its_first_row_is_not_lost(tmp_path, protocol):
    """D3b (case noheader2): the first row became the header, its values the field names quoted in every other
    row's message (a raw id in the warehouse), and the row itself vanished (read 2 of 3)."""
    land = tmp_path / "landing"
    land.mkdir()
    rows = [f"{pid},s1,control,2026-01-01T00:00:00Z,\n" for pid in (RAW, "u-second", "u-third")]
    (land / "assignments.csv").write_text("".join(rows), encoding="utf-8")
    wh = tmp_path / "w.duckdb"
    rec = ingest_batch(land, protocol, wh, KEY)
    assert rec.read == 3 and rec.quarantined == {"malformed_csv": 3}, rec.as_json()
    con = duckdb.connect(str(wh), read_only=True)
    assert [r[0] for r in con.execute("SELECT line FROM quarantine ORDER BY line").fetchall()] == [1, 2, 3]
    con.close()
    text = _text_columns(wh)
    assert all(pid not in text for pid in (RAW, "u-second", "u-third"))


def test_a_participant_id_in_a_folder_or_file_name_is_not_stored(tmp_path, protocol):
    """D3c (case pidpath): events/<raw id>/2026-03.jsonl put the raw id in batch_files and quarantine.source_file,
    so no erasure could ever finish. The name keeps its place with the pseudonym instead."""
    land = tmp_path / "landing"
    (land / "events" / RAW).mkdir(parents=True)
    write_jsonl(land / "consents.jsonl", [consent(RAW)])
    write_jsonl(land / "events" / RAW / "2026-03.jsonl", [event("e1", RAW), event("e2", RAW), "{broken"])
    write_jsonl(land / f"responses-{RAW}.jsonl", [response("r1", RAW), response("r2", RAW, wave="m24")])
    wh = tmp_path / "w.duckdb"
    rec = ingest_batch(land, protocol, wh, KEY)
    assert rec.stored["events"] == 2 and rec.stored["responses"] == 1, rec.as_json()
    assert all(RAW not in f.name for f in rec.files) and RAW not in json.dumps(rec.as_json())
    assert RAW not in _text_columns(wh)
    assert RAW.encode() not in _warehouse_bytes(wh) + _folder_bytes(quarantine_dir(land))
    pseudonym = pseudonymize(RAW, KEY)
    assert f"events/{pseudonym}/2026-03.jsonl" in {f.name for f in rec.files}


# -- D7: one bad row never sinks a file or the batch, on either path ------------------------------------------------

@pytest.mark.parametrize("key", ["*", "\\", "", 'WHO5_1\\"', "$.WHO5_1", "WHO5_1\\", "\u0000"])
def test_a_hostile_item_key_is_an_unknown_item_not_a_crash(tmp_path, protocol, key):
    """D7 (case itemkeys): a key such as * or \\ became part of a JSON path and crashed the batch."""
    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent("p1")])
    write_jsonl(land / "responses.jsonl", [response("r1", "p1"), response("r2", "p1", items={"WHO5_1": 3, key: 1})])
    for fast in (True, False):
        rec = ingest_batch(land, protocol, tmp_path / f"w-{fast}.duckdb", KEY, fast_path=fast)
        assert rec.stored["responses"] == 1 and rec.quarantined == {"unknown_item": 1}, rec.as_json()


def _long_line_landing(tmp_path: Path, size: int) -> Path:
    land = tmp_path / f"landing-{size}"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent("p1")])
    with (land / "events.jsonl").open("wb") as fh:
        for i in range(3):
            fh.write(json.dumps(event(f"e{i}", "p1")).encode() + b"\n")
        fh.write(b'{"event_id": "huge", "participant_id": "p1", "session_id": "')
        chunk = b"x" * (1 << 20)
        for _ in range(size >> 20):
            fh.write(chunk)
        fh.write(b'"}\n' + json.dumps(event("e9", "p1")).encode() + b"\n")
    return land


def test_a_line_over_16_mib_is_quarantined_alike_on_both_paths(tmp_path, protocol):
    """D7 (case hugeline): the fast path crashed (read_json's maximum_object_size), the exact path ran out of memory."""
    land = _long_line_landing(tmp_path, 17 << 20)
    for fast in (True, False):
        rec = ingest_batch(land, protocol, tmp_path / f"w-{fast}.duckdb", KEY, fast_path=fast)
        assert rec.stored["events"] == 4 and rec.quarantined == {"row_too_large": 1}, rec.as_json()


@pytest.mark.slow
def test_a_100_mib_line_is_quarantined_within_bounded_memory(tmp_path, protocol):
    """D7: the row is refused without ever being held whole; the process's peak memory grows by far less than
    the line (measured against the same batch with a short line)."""
    script = ("import resource, sys, json; from flows.ingest import ingest_batch; from schemas.protocol import "
              "StudyProtocol; p = StudyProtocol.model_validate(json.loads(sys.argv[1])); "
              "rec = ingest_batch(sys.argv[2], p, sys.argv[3], sys.argv[4].encode()); "
              "print(json.dumps({'q': rec.quarantined, 'rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))")
    peaks = {}
    for size in (1 << 20, 100 << 20):
        land = _long_line_landing(tmp_path, size)
        proc = subprocess.run([sys.executable, "-c", script, protocol.model_dump_json(), str(land),
                               str(tmp_path / f"w{size}.duckdb"), KEY.decode()], cwd=REPO, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        peaks[size] = out["rss"] / 1024
        shutil.rmtree(land)
    assert out["q"] == {"row_too_large": 1}
    assert peaks[100 << 20] - peaks[1 << 20] < 60, peaks  # MiB: a bounded prefix, never the 100 MiB row


def test_a_csv_field_over_8_mib_costs_its_row_not_the_batch(tmp_path, protocol):
    """D7 (case hugecsv): straddling object straddles two block boundaries, the whole batch refused."""
    land = tmp_path / "landing"
    land.mkdir()
    header = b"participant_id,study_id,arm,assigned_at,stratum\n"
    rows = [b"a1,s1,control,2026-01-01T00:00:00Z,north\n", b"a2,s1,control,2026-01-01T00:00:00Z," + b"y" * (9 << 20)
            + b"\n", b"a3,s1,control,2026-01-01T00:00:00Z," + b"z" * (17 << 20) + b"\n",
            b"a4,s1,control,2026-01-01T00:00:00Z,south\n"]
    (land / "assignments.csv").write_bytes(header + b"".join(rows))
    rec = ingest_batch(land, protocol, tmp_path / "w.duckdb", KEY)
    assert rec.stored["assignments"] == 2 and rec.quarantined == {"row_too_large": 1, "schema_violation": 1}, \
        rec.as_json()


# -- D16: re-ingest after an erasure scrub ------------------------------------------------------------------------

def test_reingest_after_an_erasure_scrub_reads_nothing_again(tmp_path, protocol):
    """D16: the scrub rewrote the landing files (new SHA-256), and re-running the ingest read them all again:
    630k duplicate and withdrawn rows added to quarantine."""
    from flows.privacy_flows import erase_participant

    study = tmp_path / "study"
    land = study / "landing"
    land.mkdir(parents=True)
    pids = [RAW, "u-other-1", "u-other-2"]
    write_jsonl(land / "consents.jsonl", [consent(p) for p in pids])
    write_jsonl(land / "events.jsonl", [event(f"e{i}", p) for i, p in enumerate(pids * 3)])
    write_jsonl(land / "responses.jsonl", [response(f"r{i}", p) for i, p in enumerate(pids)])
    wh = study / "warehouse" / "w.duckdb"
    ingest_batch(land, protocol, wh, KEY)
    erase_participant(wh, RAW, KEY, "erasure_request", study_folder=study)
    assert RAW.encode() not in (land / "events.jsonl").read_bytes()  # the scrub did rewrite the files
    con = duckdb.connect(str(wh), read_only=True)
    quarantined = con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0]
    con.close()
    rec = ingest_batch(land, protocol, wh, KEY)
    assert rec.read == 0 and sorted(rec.as_json()["files_skipped"]) == ["consents.jsonl", "events.jsonl",
                                                                         "responses.jsonl"]
    con = duckdb.connect(str(wh), read_only=True)
    assert con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0] == quarantined
    con.close()
    # a file changed after the scrub is new input again
    write_jsonl(land / "events-more.jsonl", [event("e-new", "u-other-1")])
    assert ingest_batch(land, protocol, wh, KEY).stored["events"] == 1


# -- D17: read-only folders and corrupt files: one sentence, before the work -------------------------------------

def _as_unprivileged(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` as this root user without the capabilities that ignore file permissions (the audit's setpriv)."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to make permissions bite")
    caps = "-dac_override,-dac_read_search,-fowner"
    return subprocess.run(["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", sys.executable, "-c", code,
                           *args], cwd=REPO, capture_output=True, text=True, timeout=300)


INGEST_REPORTING = """
import json, sys
from flows.ingest import ingest_batch
from schemas.errors import FlourishError
from schemas.protocol import StudyProtocol
seen = []
try:
    ingest_batch(sys.argv[2], StudyProtocol.model_validate(json.loads(sys.argv[1])), sys.argv[3], b"%s",
                 progress=lambda name, rows: seen.append(rows), **json.loads(sys.argv[4]))
    print(json.dumps({"ok": True}))
except FlourishError as exc:
    print(json.dumps({"error": str(exc), "rows_before": sum(seen)}))
""" % KEY.decode()


def _hostile_small_landing(tmp_path: Path) -> Path:
    land = tmp_path / "drop" / "landing"
    land.mkdir(parents=True)
    write_jsonl(land / "consents.jsonl", [consent("p1")])
    write_jsonl(land / "events.jsonl", [event("e1", "p1"), "{not json"])  # a row for the quarantine folder
    return land


def test_a_read_only_warehouse_folder_is_one_sentence_before_the_work(tmp_path, protocol):
    """D17: the ingest ran to the end and then failed its COMMIT (the WAL cannot be created) with a traceback."""
    land = _hostile_small_landing(tmp_path)
    first = tmp_path / "first"
    first.mkdir()
    write_jsonl(first / "consents.jsonl", [consent("p0")])
    (tmp_path / "wh").mkdir()
    ingest_batch(first, protocol, tmp_path / "wh" / "w.duckdb", KEY)
    os.chmod(tmp_path / "wh", 0o555)
    try:
        proc = _as_unprivileged(INGEST_REPORTING, protocol.model_dump_json(), str(land),
                                str(tmp_path / "wh" / "w.duckdb"), "{}")
    finally:
        os.chmod(tmp_path / "wh", 0o755)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.get("rows_before") == 0 and "cannot be written" in out["error"], out


def test_a_read_only_landing_parent_is_one_sentence_and_the_quarantine_folder_can_live_elsewhere(tmp_path, protocol):
    """D17: a drop box whose parent is read-only failed with PermissionError after the work, and there was no way
    to put the quarantine folder anywhere else."""
    land = _hostile_small_landing(tmp_path)
    os.chmod(land.parent, 0o555)
    try:
        proc = _as_unprivileged(INGEST_REPORTING, protocol.model_dump_json(), str(land), str(tmp_path / "w1.duckdb"),
                                "{}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out.get("rows_before") == 0 and "quarantine folder" in out["error"], (out, proc.stderr[-2000:])
        elsewhere = tmp_path / "q"
        proc = _as_unprivileged(INGEST_REPORTING, protocol.model_dump_json(), str(land), str(tmp_path / "w2.duckdb"),
                                json.dumps({"quarantine_dir": str(elsewhere)}))
    finally:
        os.chmod(land.parent, 0o755)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"ok": True}, proc.stderr[-2000:]
    assert len(list(elsewhere.iterdir())) == 1


def test_a_corrupt_warehouse_is_one_sentence(tmp_path, protocol):
    """D17: random bytes inside the warehouse gave a traceback ending in a secondary TransactionException."""
    land = _hostile_small_landing(tmp_path)
    wh = tmp_path / "w.duckdb"
    ingest_batch(land, protocol, wh, KEY)
    data = bytearray(wh.read_bytes())
    for offset in range(len(data) // 3, len(data), 4096):  # every block after the header
        data[offset:offset + 64] = os.urandom(64)
    wh.write_bytes(bytes(data))
    write_jsonl(land / "events-2.jsonl", [event("e2", "p1")])
    with pytest.raises(IngestError) as caught:
        ingest_batch(land, protocol, wh, KEY)
    assert str(caught.value).count("\n") == 0 and "warehouse" in str(caught.value)


# -- D19: symbolic links -------------------------------------------------------------------------------------------

def test_symlinks_are_not_followed_and_every_one_is_counted(tmp_path, protocol):
    """D19 (case symlinks): events-passwd.jsonl -> /etc/passwd was read (24 lines into quarantine), broken and looping
    links were skipped without a word."""
    land = tmp_path / "landing"
    land.mkdir()
    outside = tmp_path / "outside.jsonl"
    write_jsonl(outside, [event("e-out", "p1")])
    write_jsonl(land / "consents.jsonl", [consent("p1")])
    write_jsonl(land / "events.jsonl", [event("e1", "p1")])
    (land / "events-outside.jsonl").symlink_to(outside)
    (land / "events-passwd.jsonl").symlink_to("/etc/passwd")
    (land / "events-broken.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    (land / "events-loop.jsonl").symlink_to(land / "events-loop.jsonl")
    (land / "events-a.jsonl").symlink_to(land / "events-b.jsonl")
    (land / "events-b.jsonl").symlink_to(land / "events-a.jsonl")
    (land / "events-dirloop").symlink_to(land, target_is_directory=True)
    (land / "events-inside.jsonl").symlink_to(land / "events.jsonl")
    rec = ingest_batch(land, protocol, tmp_path / "w.duckdb", KEY)
    links = {f.name: f for f in rec.files if f.name not in ("consents.jsonl", "events.jsonl")}
    assert sorted(links) == ["events-a.jsonl", "events-b.jsonl", "events-broken.jsonl", "events-dirloop",
                             "events-inside.jsonl", "events-loop.jsonl", "events-outside.jsonl", "events-passwd.jsonl"]
    assert all(f.read == 1 and dict(f.quarantined) == {"unreadable_file": 1} and "link" in f.unreadable_message
               for f in links.values()), links
    assert rec.stored["events"] == 1 and rec.balanced
    assert b"root:" not in _folder_bytes(quarantine_dir(land)) + _warehouse_bytes(tmp_path / "w.duckdb")
    again = ingest_batch(land, protocol, tmp_path / "w.duckdb", KEY)
    assert again.read == 0  # the links are remembered like files: counted once


# -- the acceptance property: hostile folders finish, reconcile, and leave no raw id ------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

IDS = ["u-6349ab2fca057cb01cd396d5", "u-41835ef9bc91727e79a8cb5d", "o'brien@example.org", "u-[/]-x"]
CONSENTED = IDS[:3]  # IDS[3] never consents: its rows are refused as no_consent, pseudonymized
NAME_TAILS = ["", "-'quote", '-"dq', "-[br]", "-a[/]x", "-\x1b[31mred\x1b[0m", "-;$(touch PWNED)", "-%s", "-tab\t",
              "-ünï", "-a b", "-{id}"]
FOLDERS = [None, "{id}", "sub'q", "sub[", "\x1b[0m"]


def _hostile_line(kind: str, pid: str, i: int) -> bytes:
    line = {
        "valid": json.dumps(event(f"e{i}", pid)),
        "malformed": '{"participant_id": "%s", "event_id": "x%d", broken' % (pid, i),
        "naive": json.dumps(event(f"e{i}", pid, ts="2026-01-03T10:00:00")),
        "unknown_study": json.dumps(event(f"e{i}", pid, study_id="s2")),
        "id_as_key": json.dumps({**event(f"e{i}", "u-41835ef9bc91727e79a8cb5d"), pid: 1}),
        "item_keys": json.dumps(response(f"r{i}", pid, items={"*": 1, "\\": 2, "": 3})),
        "nested": '{"participant_id": "%s", "x": %s1%s}' % (pid, "[" * 2000, "]" * 2000),
        "nul": '{"participant_id": "%s\\u0000"}' % pid,
        "garbage": "\x00\x01\x02 %s \xfe" % pid,
    }[kind]
    data = line.encode("utf-8", "surrogateescape")
    return data + b"\xff\xfe" if kind == "garbage" else data


@st.composite
def _hostile_folder(draw) -> list[tuple[str, bytes]]:
    """(relative path, bytes) of a landing folder: the consents, then files of events (and a response) mixing
    valid rows of consented participants with the audit's hostile rows, under hostile names."""
    files = [("consents.jsonl", b"".join(json.dumps(consent(p)).encode() + b"\n" for p in CONSENTED))]
    for n in range(draw(st.integers(1, 4))):
        pid = draw(st.sampled_from(IDS))
        tail = draw(st.sampled_from(NAME_TAILS)).replace("{id}", draw(st.sampled_from(CONSENTED)))
        folder = draw(st.sampled_from(FOLDERS))
        folder = folder.replace("{id}", pid if pid in CONSENTED else CONSENTED[0]) if folder else None
        fmt = draw(st.sampled_from(["jsonl", "jsonl", "csv", "csv_no_header"]))
        if fmt == "jsonl":
            kinds = draw(st.lists(st.sampled_from(["valid", "valid", "malformed", "naive", "unknown_study",
                                                   "id_as_key", "item_keys", "nested", "nul", "garbage"]),
                                  min_size=1, max_size=6))
            body = b"".join(_hostile_line(k, draw(st.sampled_from(IDS)), 100 * n + i) + b"\n"
                            for i, k in enumerate(kinds))
            name = f"events{tail}.jsonl" if not any(k == "item_keys" for k in kinds) else f"responses{tail}.jsonl"
            if name.startswith("responses"):  # a responses file holds responses only
                body = b"".join(_hostile_line("item_keys", pid, 100 * n + i) + b"\n" for i in range(len(kinds)))
        else:
            header = b"" if fmt == "csv_no_header" else b"participant_id,study_id,arm,assigned_at,stratum\n"
            rows = [f"{p},s1,control,2026-01-01T00:00:00Z,north\n".encode() for p in CONSENTED]
            if draw(st.booleans()):  # the audit's csvlatin row: an extra field and a Latin-1 byte
                rows.insert(1, f"{pid},s1,control,2026-01-01T00:00:00Z,Z".encode() + b"\xfcrich,extra\n")
            body, name = header + b"".join(rows), f"assignments{tail}.csv"
        files.append(((f"{folder}/" if folder else "") + name, body))
    if draw(st.booleans()):  # the same bytes again under another name: duplicates
        files.append(("events-again.jsonl", files[-1][1]) if files[-1][0].endswith(".jsonl") else files[-1])
    return files


def _raw_ids_in(data: bytes) -> list[str]:
    return [i for i in IDS if i.encode() in data or json.dumps(i)[1:-1].encode() in data]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(folder=_hostile_folder(), fast=st.booleans())
def test_a_hostile_landing_folder_finishes_reconciles_and_leaves_no_raw_id(tmp_path_factory, protocol, folder, fast):
    """Issue 16's acceptance: random landing folders mixing valid rows with the audit's hostile ones (rows that are
    not JSON or not UTF-8, nested 2,000 deep, with NUL, hostile item keys, a raw id as a key; CSV rows with an
    extra field and a Latin-1 byte; header-less CSV; file and folder names with quotes, brackets, escape codes,
    shell text and raw ids; a file twice). The ingest finishes, read = stored + quarantined, and a byte scan of
    the warehouse file and the quarantine folder finds no raw participant id. (Prefect's database: the slow test
    below.)"""
    tmp = tmp_path_factory.mktemp("hostile")
    land = tmp / "landing"
    land.mkdir()
    for rel, body in folder:
        (land / rel).parent.mkdir(parents=True, exist_ok=True)
        (land / rel).write_bytes(body)
    wh = tmp / "w.duckdb"
    rec = ingest_batch(land, protocol, wh, KEY, fast_path=fast)
    assert rec.balanced and rec.read == sum(f.read for f in rec.files)
    assert _raw_ids_in(_warehouse_bytes(wh)) == []
    assert _raw_ids_in(_folder_bytes(quarantine_dir(land))) == []
    assert _raw_ids_in(json.dumps(rec.as_json()).encode()) == []


def test_a_key_that_may_be_a_participant_id_is_not_named_in_the_payload(tmp_path, protocol):
    """A record keyed by participant ids (an unknown field per participant): the payload names unknown fields so a
    partner sees what is wrong, but never a participant's raw id, known or not yet known to the batch."""
    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent("p1"), consent(RAW)])
    write_jsonl(land / "events.jsonl", [{**event("e1", "p1"), RAW: 1, "alice.smith@example.org": 2, "colour": 3,
                                         "bob@example.org": 4},
                                        event("e2", "alice.smith@example.org")])
    wh = tmp_path / "w.duckdb"
    rec = ingest_batch(land, protocol, wh, KEY)
    assert rec.quarantined == {"no_consent": 1, "schema_violation": 1}
    con = duckdb.connect(str(wh), read_only=True)
    payload = json.loads(con.execute("SELECT payload FROM quarantine WHERE reason = 'schema_violation'").fetchone()[0])
    con.close()
    # RAW consented, alice's id among the batch's rows; bob is no one the batch knows, and not a field name either
    assert payload["unknown_fields"] == [pseudonymize(RAW, KEY), pseudonymize("alice.smith@example.org", KEY),
                                         "colour", "(a key that is not a field name)"]
    assert all(n not in _text_columns(wh) for n in (RAW, "alice.smith", "bob@example"))


@pytest.mark.slow
def test_under_prefect_no_raw_id_reaches_its_database_or_the_terminal(tmp_path, protocol):
    """D3a under Prefect (the default orchestration): the CSV parser's copy of a row, raw id included, reached
    Prefect's flow and task states, its log and its events, and stderr. The same hostile folder through
    flourish ingest with a fresh Prefect home: a byte scan of that home (its database included), stdout and stderr
    finds no raw id."""
    from schemas.protocol import dump_protocol

    land = tmp_path / "landing"
    (land / "events" / IDS[0]).mkdir(parents=True)
    write_jsonl(land / "consents.jsonl", [consent(p) for p in CONSENTED])
    header = b"participant_id,study_id,arm,assigned_at,stratum\n"
    many = b"".join(b"a%d,s1,control,2026-01-01T00:00:00Z,north\n" % i for i in range(200_000))
    (land / "assignments-latin.csv").write_bytes(
        header + many + f"{IDS[1]},s1,control,2026-01-01T00:00:00Z,Z".encode() + b"\xfcrich,extra\n")
    (land / "assignments-noheader.csv").write_bytes(f"{IDS[2]},s1,control,2026-01-01T00:00:00Z,\n".encode())
    (land / "events" / IDS[0] / f"2026-03-{IDS[0]}.jsonl").write_bytes(
        b"".join(_hostile_line(k, IDS[0], i) + b"\n" for i, k in enumerate(
            ["valid", "malformed", "nul", "garbage", "id_as_key", "unknown_study"])))
    study = tmp_path / "study.yaml"
    study.write_text(dump_protocol(protocol))
    home = tmp_path / "prefect-home"
    env = {**os.environ, "FLOURISH_ORCHESTRATOR": "prefect", "PREFECT_HOME": str(home),
           "FLOURISH_PSEUDONYM_KEY": KEY.decode()}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "ingest", str(land), "--study", str(study),
                           "--warehouse", str(tmp_path / "w.duckdb")], cwd=REPO, capture_output=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prefect orchestration" in proc.stderr.decode()
    assert list(home.rglob("*.db")), "Prefect kept no database here"
    assert _raw_ids_in(_folder_bytes(home)) == []
    assert _raw_ids_in(proc.stdout + proc.stderr) == []
    assert _raw_ids_in(_warehouse_bytes(tmp_path / "w.duckdb") + _folder_bytes(quarantine_dir(land))) == []


def _embedding_batch(land: Path, new_records: int = 0) -> None:
    """D3d (case embedded): a partner who builds other fields from the participant's raw id: an event id, a session
    id, a feature, a response id, a prompt id. ``p1`` is shorter than 8 characters: its "embedding" is left alone
    (contract.embeds_id_sql)."""
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent(RAW), consent("p1")])
    write_jsonl(land / "events.jsonl", [event(f"{RAW}-evt-1", RAW), event("e2", RAW, session_id=f"s-{RAW}"),
                                        event("e3", RAW, feature=f"{RAW}/{RAW}"), event("e4", RAW),
                                        event("e5", "p1", feature="p1p1p1p1p1")]
                + [event(f"{RAW}-new-{i}", RAW) for i in range(new_records)])
    write_jsonl(land / "responses.jsonl", [response(f"r{i}-{RAW}", RAW) for i in range(1 + new_records)])
    write_jsonl(land / "prompts.jsonl", [{"prompt_id": f"q{i}-{RAW}-baseline", "participant_id": RAW, "study_id": "s1",
                                          "wave": "baseline", "schedule_version": "2026.1",
                                          "scheduled_at": "2026-01-02T08:00:00+00:00", "timezone": "Europe/London"}
                                         for i in range(1 + new_records)])


def _rows(wh: Path) -> dict:
    con = duckdb.connect(str(wh), read_only=True)
    try:
        return {t: con.execute(f"SELECT * EXCLUDE (batch_id) FROM {t} ORDER BY ALL").fetchall()
                for t in ("events", "responses", "prompts")} | {
            "quarantine": con.execute("SELECT record_kind, reason, participant, payload FROM quarantine "
                                      "ORDER BY ALL").fetchall()}
    finally:
        con.close()


def test_a_participant_id_inside_another_field_is_replaced_by_the_pseudonym_on_both_paths(tmp_path, protocol):
    """D3d: the raw id inside an event id, a session id, a feature, a response id or a prompt id was stored as it
    is (a byte scan of the warehouse found it; the reconciliation only warned). Each occurrence is now replaced
    by the participant's pseudonym at the door, by both paths alike: the rows are kept, their keys stay unique and
    the same for every delivery of the record, and a re-sent record is still a duplicate."""
    pseudonym = pseudonymize(RAW, KEY)
    land, again = tmp_path / "landing", tmp_path / "again"
    _embedding_batch(land)
    _embedding_batch(again, new_records=1)  # the same records again, and a new one of each kind
    rows = {}
    for fast in (True, False):
        wh = tmp_path / f"w-{fast}.duckdb"
        rec = ingest_batch(land, protocol, wh, KEY, fast_path=fast)
        assert rec.quarantined == {} and rec.stored == {"consents": 2, "assignments": 0, "responses": 1,
                                                         "events": 5, "prompts": 1}
        assert rec.as_json()["warnings"] == {"participant_id_replaced_in_other_fields": 5}
        assert RAW.encode() not in _warehouse_bytes(wh)
        con = duckdb.connect(str(wh), read_only=True)
        try:
            assert con.execute("SELECT event_id, session_id, feature FROM events ORDER BY event_id").fetchall() == [
                (f"{pseudonym}-evt-1", "s-1", None), ("e2", f"s-{pseudonym}", None),
                ("e3", "s-1", f"{pseudonym}/{pseudonym}"), ("e4", "s-1", None), ("e5", "s-1", "p1p1p1p1p1")]
            assert con.execute("SELECT response_id FROM responses").fetchall() == [(f"r0-{pseudonym}",)]
            assert con.execute("SELECT prompt_id FROM prompts").fetchall() == [(f"q0-{pseudonym}-baseline",)]
        finally:
            con.close()
        # the same records delivered again (in files with other bytes): duplicates, whichever path reads them
        rec = ingest_batch(again, protocol, wh, KEY, fast_path=fast)
        assert rec.stored == {"consents": 0, "assignments": 0, "responses": 1, "events": 1, "prompts": 1}, fast
        assert rec.quarantined == {"duplicate": 5 + 1 + 1}  # the consents file is the same file: skipped
        assert rec.as_json()["warnings"] == {"participant_id_replaced_in_other_fields": 4 + 2 + 2}
        assert RAW.encode() not in _warehouse_bytes(wh) and RAW not in _text_columns(wh)
        rows[fast] = _rows(wh)
    assert rows[True] == rows[False]


def test_a_record_embedding_its_participant_id_is_still_a_duplicate_after_rekey(tmp_path, protocol):
    """Key rotation rewrites the old pseudonym inside a participant's other text fields too (privacy/rekey.py), so
    a record re-sent after a rekey, pseudonymized under the new key at the door, still meets its stored key; and
    erasing the participant leaves no byte of the raw id or either pseudonym."""
    from flows.privacy_flows import erase_participant, rekey_warehouse

    new_key = b"another-spine-key-9876543210"
    land, again = tmp_path / "landing", tmp_path / "again"
    _embedding_batch(land)
    _embedding_batch(again, new_records=1)
    wh = tmp_path / "w.duckdb"
    ingest_batch(land, protocol, wh, KEY)
    rekey_warehouse(wh, KEY, new_key, [RAW, "p1"])
    copies = {fast: tmp_path / f"w-{fast}" / "w.duckdb" for fast in (True, False)}
    for fast, copy in copies.items():
        copy.parent.mkdir()
        shutil.copy(wh, copy)
        rec = ingest_batch(again, protocol, copy, new_key, fast_path=fast)
        assert rec.stored["events"] == 1 and rec.quarantined == {"duplicate": 5 + 1 + 1}, fast
    for copy in copies.values():  # each erasure scrubs the landing folders too: after both ingests
        receipt = erase_participant(copy, RAW, new_key)
        assert receipt.rows_deleted["events"] == 5 and not receipt.residual_files
        data = _warehouse_bytes(copy)
        assert RAW.encode() not in data and pseudonymize(RAW, new_key).encode() not in data
        assert pseudonymize(RAW, KEY).encode() not in data


def test_a_key_that_equals_another_once_the_id_is_replaced_is_a_duplicate_on_both_paths(tmp_path, protocol):
    """The fast path hashes record keys before the raw id inside them is replaced, the exact path de-duplicates
    after: ``<raw id>-evt-1`` and ``<pseudonym>-evt-1`` (a partner holding the key) differ before and are one
    key after. A key holding a pseudonym's form keeps its file off the fast path, so both paths agree."""
    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent(RAW)])
    write_jsonl(land / "events.jsonl", [event(f"{RAW}-evt-1", RAW), event(f"{pseudonymize(RAW, KEY)}-evt-1", RAW),
                                        event("e2", RAW)])
    rows = {}
    for fast in (True, False):
        rec = ingest_batch(land, protocol, tmp_path / f"w-{fast}.duckdb", KEY, fast_path=fast)
        assert rec.stored["events"] == 2 and rec.quarantined == {"duplicate": 1}, fast
        rows[fast] = _rows(tmp_path / f"w-{fast}.duckdb")
    assert rows[True] == rows[False]
