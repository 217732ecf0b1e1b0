"""One local Prefect server per command, gone with the command (D13), and Prefect's noise kept off the terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.spine import KEY, consent, event, write_jsonl

SERVER_MARK = "prefect.server.api.server:create_app"


def _servers() -> dict[int, int]:
    """pid -> parent pid of every Prefect API server process on the machine."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if SERVER_MARK.encode() in cmdline:
            found[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "FLOURISH_ORCHESTRATOR": "prefect", "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "FLOURISH_PSEUDONYM_KEY": KEY.decode()}
    env.pop("PREFECT_API_URL", None)
    return env


def _landing(tmp_path: Path, protocol, rows: int = 200_000) -> tuple[Path, Path]:
    from schemas.protocol import dump_protocol

    land = tmp_path / "landing"
    land.mkdir()
    write_jsonl(land / "consents.jsonl", [consent("a")])
    write_jsonl(land / "events.jsonl", [event(f"e{i}", "a") for i in range(rows)])
    study = tmp_path / "study.yaml"
    study.write_text(dump_protocol(protocol))
    return land, study


@pytest.mark.slow
def test_killing_a_command_takes_its_prefect_server_with_it(tmp_path, protocol):
    """D13: after `kill -9` of an ingest under Prefect, its server (about 230 MB) stayed alive with ppid 1."""
    land, study = _landing(tmp_path, protocol)
    before = set(_servers())
    cmd = subprocess.Popen([sys.executable, "-m", "flows.cli", "ingest", str(land), "--study", str(study),
                            "--warehouse", str(tmp_path / "w.duckdb")], cwd=REPO, env=_env(tmp_path),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    mine: set[int] = set()
    while not mine and time.monotonic() < deadline and cmd.poll() is None:
        mine = {pid for pid, ppid in _servers().items() if pid not in before and ppid == cmd.pid}
        time.sleep(0.2)
    assert mine, "the command started no Prefect server of its own"
    os.kill(cmd.pid, signal.SIGKILL)
    cmd.wait()
    deadline = time.monotonic() + 30
    while mine & set(_servers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not mine & set(_servers()), "the Prefect server outlived its command"


@pytest.mark.slow
def test_a_failing_flow_prints_one_sentence_and_no_traceback(tmp_path, protocol):
    """D13: a refused batch under Prefect printed 139 lines, 5 tracebacks logged by Prefect, before the sentence."""
    land, study = _landing(tmp_path, protocol, rows=3)
    blocker = tmp_path / "warehouse-is-a-folder"
    blocker.mkdir()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "ingest", str(land), "--study", str(study),
                           "--warehouse", str(blocker)], cwd=REPO, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "warehouse" in errors[0], proc.stderr
