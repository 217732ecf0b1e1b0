"""Ingest benchmark: ``flourish ingest`` on whole simulated studies against DuckDB's ``read_json`` of the same files.

    .venv/bin/python benchmarks/ingest.py [--participants 2500] [--repeats 3] [--baseline REV ...] [--quick]

1. Whole study (issue 15). ``flourish simulate`` writes two landing folders, 1x and 4x participants (every
   record kind: consents, assignments, responses with nested items, events, prompts). Each is ingested by a fresh
   ``flourish ingest ... --json`` process (``FLOURISH_ORCHESTRATOR=inline``: Prefect's server start is a fixed
   cost of its own, README "Orchestration"), timed from outside, so Python's start and every import count;
   and loaded, in the same run, by a fresh process that runs DuckDB's ``read_json`` with its defaults on each
   kind's files into a table of a new DuckDB file. Medians of ``--repeats`` processes per size. The marginal
   rate is (rows at 4x - rows at 1x) / (median seconds at 4x - median seconds at 1x): the cost of one more row,
   with every fixed cost cancelled; the fixed start-up is what the 1x time has left over, printed apart.
   Target: Flourish's marginal rate >= 0.5 x read_json's.
2. Events only (the earlier benchmark, kept so its ratio can be compared): the 4x study's consents,
   assignments and events, ingested by ``ingest_batch`` in a fresh process with the clock started after the
   imports, against DuckDB's bare ``read_json`` of the same event files. Events/s. "The imports" include pandas,
   which pyarrow imports on its first use (``pa.array`` does): code whose own imports pull pandas in would
   otherwise have that cost (0.25-0.7 s here) outside the clock and code whose imports do not inside it.
3. Before and after, same run: with ``--baseline REV`` every Flourish measurement is repeated, interleaved,
   with the code of commit REV (exported with ``git archive``), so a change is read as a same-run ratio.
   ``--baseline`` may be given more than once (say ``--baseline main --baseline fe8b6b4``): each is measured
   in the same run, under its own name (one baseline alone is named ``before``).
4. Memory: the peak RSS of the whole-study ingest processes at 1x and 4x (DuckDB is capped at 2 GB).

The machine is shared and noisy: read medians and same-run ratios, not single figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = "benchmark-key-0123456789abcdef"
KINDS = ("consents", "assignments", "responses", "scores", "events", "prompts")  # every kind the simulator writes

READ_JSON_RUN = """
import duckdb, glob, json, sys
con = duckdb.connect(sys.argv[2])
con.execute("SET memory_limit = '2GB'")
con.execute("SET enable_progress_bar = false")
rows = 0
for kind in %r:
    files = sorted(glob.glob(f"{sys.argv[1]}/{kind}*.jsonl"))
    if files:  # read_json with its defaults: the schema detected
        con.execute(f"CREATE TABLE {kind} AS SELECT * FROM read_json({files})")
        rows += con.execute(f"SELECT count(*) FROM {kind}").fetchall()[0][0]
con.close()
print(json.dumps({"rows": rows}))
""" % (KINDS,)

EVENTS_FLOURISH = """
import json, sys, time
import instruments, flows.study  # imported before the clock starts, as duckdb is for the read_json runs
import pandas  # pyarrow imports it on first use; some versions of the code import it with flows.study, others not
from flows.ingest import ingest_batch
from schemas.protocol import load_protocol
protocol = load_protocol(sys.argv[1])
t = time.perf_counter()
rec = ingest_batch(sys.argv[2], protocol, sys.argv[3], sys.argv[4].encode())
print(json.dumps({"seconds": time.perf_counter() - t, "events": rec.stored["events"], "balanced": rec.balanced}))
"""

EVENTS_READ_JSON = """
import duckdb, glob, json, sys, time
files = sorted(glob.glob(sys.argv[1] + "/events-*.jsonl"))
con = duckdb.connect(sys.argv[2])
con.execute("SET memory_limit = '2GB'")
con.execute("SET enable_progress_bar = false")
t = time.perf_counter()
con.execute(f"CREATE TABLE events AS SELECT * FROM read_json({files})")
n = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
con.close()
print(json.dumps({"seconds": time.perf_counter() - t, "events": n}))
"""


@dataclass(frozen=True)
class Timed:
    seconds: float  # wall clock of the whole process
    rows: int
    peak_rss_mib: float
    out: dict


def _env(code_root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code_root), "FLOURISH_ORCHESTRATOR": "inline",
            "FLOURISH_PSEUDONYM_KEY": KEY}


def _timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and stdout of one fresh process."""
    t = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed: {err[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, out


STRIP_UNKNOWN = """
import sys, yaml
from pydantic import ValidationError
from schemas.protocol import StudyProtocol
data = yaml.safe_load(open(sys.argv[1]))
for _ in range(100):
    try:
        StudyProtocol.model_validate(data)
        break
    except ValidationError as exc:
        extra = [e["loc"] for e in exc.errors() if e["type"] == "extra_forbidden"]
        if not extra:
            raise
        for loc in extra:
            node = data
            for k in loc[:-1]:
                node = node[k]
            node.pop(loc[-1], None)
yaml.safe_dump(data, open(sys.argv[2], "w"), sort_keys=False)
"""


def _study_for(code: Path, study: Path) -> Path:
    """The study file a baseline's code can read: an older commit refuses the protocol fields added since (response
    windows, outcome kinds, ...) as unknown keys, so its copy leaves out exactly those its own contract refuses."""
    if code == ROOT:
        return study
    older = study.with_name(f"study-{code.name}.yaml")
    if not older.exists():
        _timed([sys.executable, "-c", STRIP_UNKNOWN, str(study), str(older)], code, _env(code))
    return older


def _ingest(code: Path, study: Path, landing: Path, warehouse: Path) -> Timed:
    study = _study_for(code, study)
    seconds, rss, out = _timed([sys.executable, "-m", "flows.cli", "ingest", str(landing), "--study", str(study),
                                "--warehouse", str(warehouse), "--json"], code, _env(code))
    rec = json.loads(out.strip().splitlines()[-1])
    assert rec["read"] == sum(rec["stored"].values()) + sum(rec["quarantined"].values()), rec
    return Timed(seconds, rec["read"], rss, rec)


def _read_json(landing: Path, database: Path) -> Timed:
    seconds, rss, out = _timed([sys.executable, "-c", READ_JSON_RUN, str(landing), str(database)], ROOT, _env(ROOT))
    return Timed(seconds, json.loads(out.strip().splitlines()[-1])["rows"], rss, {})


def _in_process(code: Path, script: str, *args: str) -> dict:
    _, _, out = _timed([sys.executable, "-c", script, *args], code, _env(code))
    return json.loads(out.strip().splitlines()[-1])


def _simulate(base: Path, participants: int, seed: int) -> tuple[Path, Path]:
    out = base / f"sim-{participants}"
    _timed([sys.executable, "-m", "flows.cli", "simulate", "--out", str(out), "--participants", str(participants),
            "--seed", str(seed)], ROOT, _env(ROOT))
    return out / "study.yaml", out / "landing"


def _export(rev: str, into: Path) -> Path:
    """The tree of commit ``rev`` (git archive), to run the same measurements with the code before a change."""
    into.mkdir(parents=True)
    archive = into / "tree.tar"
    with archive.open("wb") as fh:
        subprocess.run(["git", "archive", rev], cwd=ROOT, stdout=fh, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()
    return into


def _marginal(small: list[Timed], large: list[Timed]) -> tuple[float, float]:
    """(rows per second of one more row, fixed seconds) from the medians at two sizes."""
    t1, t4 = statistics.median(r.seconds for r in small), statistics.median(r.seconds for r in large)
    rows1, rows4 = small[0].rows, large[0].rows
    rate = (rows4 - rows1) / (t4 - t1)
    return rate, t1 - rows1 / rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--participants", type=int, default=2_500, help="the 1x study; the 4x study has four times as many")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", action="append", default=[],
                    help="a commit whose code is measured too, interleaved (before/after); may be repeated")
    ap.add_argument("--quick", action="store_true", help="1 repeat, 500 participants (a smoke run, not the figure)")
    args = ap.parse_args()
    if args.quick:
        args.participants, args.repeats = 500, 1
    with tempfile.TemporaryDirectory(prefix="flourish-bench-") as tmp:
        base = Path(tmp)
        t = time.perf_counter()
        sizes = {"1x": _simulate(base, args.participants, seed=1), "4x": _simulate(base, 4 * args.participants, seed=2)}
        print(f"simulated {args.participants:,} and {4 * args.participants:,} participants in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        codes = {"after": ROOT}
        for i, rev in enumerate(args.baseline):
            codes["before" if len(args.baseline) == 1 else rev] = _export(rev, base / f"baseline-{i}")
        events = base / "events-4x"  # consents, assignments and events of the 4x study: the earlier benchmark
        events.mkdir()
        for p in sizes["4x"][1].iterdir():
            if p.name.startswith(("consents", "assignments", "events-")):
                shutil.copy(p, events / p.name)

        whole = {(c, s): [] for c in codes for s in sizes}
        dk = {s: [] for s in sizes}
        ev = {c: [] for c in codes}
        ev_dk = []
        n = 0
        for i in range(args.repeats):
            for s, (study, landing) in sizes.items():
                for c, code in codes.items():
                    n += 1
                    whole[c, s].append(_ingest(code, study, landing, base / f"w{n}.duckdb"))
                dk[s].append(_read_json(landing, base / f"d{n}.duckdb"))
                print(f"  run {i + 1} {s}: " + ", ".join(f"flourish {c} {whole[c, s][-1].seconds:.1f} s"
                                                          for c in codes)
                      + f", read_json {dk[s][-1].seconds:.1f} s ({dk[s][-1].rows:,} rows)", flush=True)
            for c, code in codes.items():
                n += 1
                ev[c].append(_in_process(code, EVENTS_FLOURISH, str(_study_for(code, sizes["4x"][0])), str(events),
                                         str(base / f"e{n}.duckdb"), KEY))
            ev_dk.append(_in_process(ROOT, EVENTS_READ_JSON, str(events), str(base / f"ed{n}.duckdb")))

        print()
        print(f"whole study: {whole['after', '1x'][0].rows:,} rows at 1x, {whole['after', '4x'][0].rows:,} at 4x; "
              f"medians of {args.repeats} fresh processes a size")
        dk_rate, dk_fixed = _marginal(dk["1x"], dk["4x"])
        print(f"  read_json (defaults)    : marginal {dk_rate:>10,.0f} rows/s, fixed start-up {dk_fixed:5.1f} s")
        rates = {}
        for c in codes:
            rate, fixed = _marginal(whole[c, "1x"], whole[c, "4x"])
            rates[c] = rate
            print(f"  flourish ingest {c:<7} : marginal {rate:>10,.0f} rows/s, fixed start-up {fixed:5.1f} s, "
                  f"ratio to read_json {rate / dk_rate:.2f}   (target >= 0.50)")
        for c in codes:
            if c != "after":
                print(f"  after / {c:<7}         : marginal rate x{rates['after'] / rates[c]:.2f} (same run)")
        for c in codes:
            rss1 = statistics.median(r.peak_rss_mib for r in whole[c, "1x"])
            rss4 = statistics.median(r.peak_rss_mib for r in whole[c, "4x"])
            print(f"  peak RSS {c:<7}: {rss1:,.0f} MiB at 1x, {rss4:,.0f} MiB at 4x (ratio {rss4 / rss1:.2f})")
        print()
        n_events = ev_dk[0]["events"]
        dk_ev = statistics.median(r["events"] / r["seconds"] for r in ev_dk)
        print(f"events only ({n_events:,} events, clock after imports):")
        print(f"  read_json bare          : {dk_ev:>10,.0f} events/s")
        for c in codes:
            assert all(r["balanced"] and r["events"] == n_events for r in ev[c]), ev[c]
            rate = statistics.median(r["events"] / r["seconds"] for r in ev[c])
            print(f"  flourish {c:<7}        : {rate:>10,.0f} events/s, ratio to read_json {rate / dk_ev:.2f}")


if __name__ == "__main__":
    main()
