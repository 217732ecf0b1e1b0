"""Property: a clean simulated study (the project's simulator, ingest and scoring) passes every critical
expectation, whatever its size and seed.

Sizes start at 240: ``flows.simulation.simulate`` fails (numpy ``zfill`` of an empty array in ``_iso``) when no
simulated participant withdraws, which is likely below a few hundred participants (2% withdraw). The examples
are derandomized so CI sees the same ones every run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.quality import run_quality_gates
from flows.warehouse import connect
from tests.flows.quality.conftest import AS_OF, build_simulated


@settings(max_examples=3, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(participants=st.integers(min_value=240, max_value=420), seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_clean_simulated_data_passes_every_critical_expectation(participants, seed):
    with tempfile.TemporaryDirectory() as tmp:
        study = build_simulated(Path(tmp), participants, seed)
        con = connect(study.path)
        try:
            report = run_quality_gates(con, study.protocol, run_id=f"p-{seed}", as_of=AS_OF, raise_on_critical=False)
        finally:
            con.close()
    critical = [r for r in report.results if r.severity == "critical"]
    assert critical and all(r.success for r in critical), [r.headline() for r in report.critical_failures]
    assert report.passed
