"""The README's walk-through runs as written (issue 16: it failed at 3 of 6 steps for a new user).

The block between the README's ``<!-- walkthrough -->`` markers is run line by line by bash with ``set -e`` in an
empty folder that sees the repository's virtual environment as ``.venv``: the commands a user copies are the
commands tested."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.support import REPO


def _walkthrough() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- walkthrough -->\s*```bash\n(.*?)```\s*<!-- /walkthrough -->", text, re.S)
    assert block, "the README has no walk-through block"
    return block.group(1)


def test_the_walkthrough_block_is_found_and_runs_flourish_commands():
    lines = [line for line in _walkthrough().splitlines() if line.strip()]
    assert len(lines) >= 8 and sum("$F " in line for line in lines) >= 7


@pytest.mark.slow
def test_the_readme_walkthrough_runs_as_written(tmp_path):
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOURISH_", "PREFECT_API_URL"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    script = "set -euo pipefail\n" + _walkthrough()
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert (tmp_path / "study1-analysis.json").stat().st_size > 0
    assert "Traceback" not in proc.stderr
