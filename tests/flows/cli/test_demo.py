"""`flourish demo` writes only into a folder it made (D12)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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


@pytest.mark.slow
def test_the_public_tier_analyses_the_demo_study(tmp_path):
    """Issue 20: `analyze --tier public` on the demo study failed twice, for different reasons (the sampled model's
    diagnostics). The demo's planned releases print their width ratios, and the public plan publishes a long-run row
    for every outcome and arm."""
    import json

    out = tmp_path / "demo"
    env = {**os.environ, "FLOURISH_ORCHESTRATOR": "inline"}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--out", str(out), "--participants", "600"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "public/trusted width of the primary's last released wave m3:" in " ".join(proc.stdout.split())
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "analyze", str(out / "study" / "study.yaml"), "--warehouse",
                           str(out / "warehouse" / "flourish.duckdb"), "--tier", "public", "--json"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    long_run = [r for r in rows if r["wave"] == "long_run"]
    assert len(long_run) == 4 * 2 and all(r["estimable"] and r["tier"] == "public" for r in long_run)
    assert all(r["lower"] < r["estimate"] < r["upper"] for r in long_run)
