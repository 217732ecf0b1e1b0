"""Opening the warehouse: a mistyped path is an error, not a new empty warehouse (D22)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flows.warehouse import WarehouseError, connect
from tests.support import REPO


def test_reading_commands_do_not_create_a_warehouse(tmp_path):
    """D22: `analyze --warehouse empty/w.duckdb` created empty/w.duckdb (798 KB), then said the plan is not locked."""
    from schemas.protocol import dump_protocol
    from tests.support.spine import protocol as protocol_fixture

    study = tmp_path / "study.yaml"
    study.write_text(dump_protocol(protocol_fixture.__wrapped__()))
    missing = tmp_path / "empty" / "w.duckdb"
    env = {**os.environ, "FLOURISH_ORCHESTRATOR": "inline"}
    for command in (["analyze", str(study)], ["srm", str(study)], ["preregister", str(study)]):
        proc = subprocess.run([sys.executable, "-m", "flows.cli", *command, "--warehouse", str(missing)], cwd=REPO,
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not missing.exists() and not missing.parent.exists()


def test_connect_refuses_a_folder_and_a_missing_file_when_asked_not_to_create(tmp_path):
    with pytest.raises(WarehouseError, match="does not exist"):
        connect(tmp_path / "nope.duckdb", create=False)
    with pytest.raises(WarehouseError, match="not a file"):
        connect(tmp_path)
    connect(tmp_path / "new.duckdb").close()
    assert (tmp_path / "new.duckdb").is_file()
