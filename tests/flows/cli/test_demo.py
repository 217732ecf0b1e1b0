"""`flourish demo` writes only into a folder it made (D12)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import REPO


def _demo(out, *extra):
    env = {**os.environ, "FLOURISH_ORCHESTRATOR": "inline"}
    return subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--out", str(out), "--participants", "20",
                           "--no-analyze", *extra], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)


def test_demo_refuses_a_folder_it_did_not_make_and_deletes_nothing(tmp_path):
    """D12: `demo --out DIR` deleted DIR/study and DIR/warehouse (a user's protocol and warehouse) without asking."""
    out = tmp_path / "userdir"
    (out / "study").mkdir(parents=True)
    (out / "warehouse").mkdir()
    (out / "study" / "my-real-study.yaml").write_text("study_id: mine\n")
    (out / "warehouse" / "production.duckdb").write_bytes(b"precious")
    proc = _demo(out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not made by flourish demo" in proc.stderr
    assert (out / "study" / "my-real-study.yaml").read_text() == "study_id: mine\n"
    assert (out / "warehouse" / "production.duckdb").read_bytes() == b"precious"


def test_demo_reruns_in_its_own_folder(tmp_path):
    out = tmp_path / "demo"
    assert _demo(out).returncode == 0
    proc = _demo(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # issue 18: the demo ends by writing the three reports and printing their paths
    for name in ("dashboard.html", "trial-report.html", "regulator-report.html", "regulator-report.json"):
        assert (out / "reports" / name).is_file(), name
        assert str(out / "reports" / name) in proc.stdout.replace("\n", ""), name
