"""Quiet and private by default (issue 17): a full `flourish run` under Prefect connects to nothing outside this
machine and looks no host name up, in the command's process and in the Prefect server it starts.

Every Python process of the run loads an audit hook (a `sitecustomize` on PYTHONPATH, inherited by the server
subprocess) that records each `socket.connect` and `socket.getaddrinfo` whose address is not loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from flows.simulation import simulate
from tests.support import REPO
from tests.support.spine import KEY

AUDIT = textwrap.dedent('''
    import ipaddress, os, sys

    _LOG = os.environ["FLOURISH_TEST_SOCKET_LOG"]

    def _loopback(host):
        if host in (None, "", "localhost", "localhost.localdomain"):
            return True
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def _hook(event, args):
        if event == "socket.connect":
            address = args[1]
            if isinstance(address, tuple) and not _loopback(address[0]):
                with open(_LOG, "a") as fh:
                    fh.write(f"{os.getpid()} connect {address!r}\\n")
        elif event == "socket.getaddrinfo":
            if not _loopback(args[0]):
                with open(_LOG, "a") as fh:
                    fh.write(f"{os.getpid()} getaddrinfo {args[0]!r}\\n")

    sys.addaudithook(_hook)
''')


@pytest.mark.slow
def test_a_full_run_opens_no_socket_beyond_this_machine(tmp_path):
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "sitecustomize.py").write_text(AUDIT)
    simulate(tmp_path / "sim", 90, seed=3, truth_draws=1_000)
    data = yaml.safe_load((tmp_path / "sim" / "study.yaml").read_text())
    data["analysis"].update({"chains": 1, "draws": 200, "tune": 200, "rhat_max": 1.2, "ess_bulk_min": 20})
    data["secondary_outcomes"] = []
    (tmp_path / "sim" / "study.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    log = tmp_path / "sockets.log"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "audit"), "FLOURISH_TEST_SOCKET_LOG": str(log),
           "FLOURISH_ORCHESTRATOR": "prefect", "PREFECT_HOME": str(tmp_path / "prefect"),
           "FLOURISH_PSEUDONYM_KEY": KEY.decode()}
    for var in ("PREFECT_API_URL", "DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED"):
        env.pop(var, None)  # the defaults must come from Flourish itself, not from the test's environment
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(tmp_path / "sim" / "study.yaml"),
                           "--landing", str(tmp_path / "sim" / "landing"), "--warehouse", str(tmp_path / "w.duckdb"),
                           "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout)
    assert [s["state"] for s in record["stages"]] == ["completed"] * len(record["stages"])
    assert not log.exists() or log.read_text() == "", log.read_text()
    # and the hook works: the same interpreter set-up records an outbound attempt
    probe = subprocess.run([sys.executable, "-c", "import socket\ntry:\n    socket.create_connection(('192.0.2.1', 9), "
                            "timeout=0.2)\nexcept OSError:\n    pass"], env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and "192.0.2.1" in log.read_text()
