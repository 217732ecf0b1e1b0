"""Studies for the report tests, made by the project's simulator and pipeline (inline orchestration).

- ``study``: 240 simulated participants, the primary outcome (WHO-5) and one lower-is-better secondary (PHQ-2), both
  telemetry metrics, a budget of epsilon 16, a fast sampler (1 chain, 200 draws); the pipeline ingests, scores, gates, analyses (trusted tier)
  and makes the two planned DP releases; then the public tier's noise-aware model is fitted to the releases and
  stored, as ``flourish analyze --tier public`` does. About a minute, once per session.
- ``sparse``: 90 participants, no telemetry metric, a minimum cell size of 40 (so most released counts are
  suppressed); ingest, score, gates and releases only (no analysis). About 15 seconds.

Screenshots and written reports go to ``reports-artifacts/`` at the repository root (ignored by git), so they are kept
after the run: the paths are printed by the browser test.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support import REPO
from tests.support.spine import KEY

ARTIFACTS = REPO / "reports-artifacts"


@dataclass(frozen=True)
class Study:
    root: Path
    study: Path
    warehouse: Path
    landing: Path


def _edit(study: Path, **changes) -> None:
    data = yaml.safe_load(study.read_text())
    data["analysis"].update({"chains": 1, "draws": 200, "tune": 200, "rhat_max": 1.2, "ess_bulk_min": 20})
    for key, value in changes.items():
        if key in ("min_cell_size", "epsilon"):
            data["privacy"][key] = value
        else:
            data[key] = value
    study.write_text(yaml.safe_dump(data, sort_keys=False))


def _pipeline(root: Path, participants: int, seed: int, analyze: str, **changes) -> Study:
    from flows.pipeline import study_flow
    from flows.simulation import simulate

    simulate(root / "sim", participants, seed=seed, truth_draws=2_000, bad_rows=0.01)
    study = root / "sim" / "study.yaml"
    _edit(study, **changes)
    (root / "k.key").write_text(KEY.decode())
    warehouse = root / "w.duckdb"
    record = study_flow.fn(str(study), str(warehouse), str(root / "sim" / "landing"), str(root / "k.key"),
                           analyze=analyze)
    failed = [s for s in record["stages"] if s["state"] == "failed"]
    assert not failed, failed
    return Study(root, study, warehouse, root / "sim" / "landing")


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Study:
    import os

    os.environ["FLOURISH_ORCHESTRATOR"] = "inline"
    root = tmp_path_factory.mktemp("reports-study")
    from flows.simulation.field_study import protocol

    phq2 = next(o for o in protocol().secondary_outcomes if o.name == "phq2.total")
    # epsilon 16: noise small enough that no paired-moments cell of the release is suppressed, so the public model
    # always has its input (at epsilon 4 and 240 participants one cell in a few runs falls below the cell size)
    s = _pipeline(root, 240, 4, "always", secondary_outcomes=[phq2.model_dump(mode="json", exclude_none=True)],
                  epsilon=16.0)
    from analysis.public import fit_public
    from flows.analysis_flows import run_analysis
    from flows.study import load_study
    from flows.warehouse import open_warehouse

    with open_warehouse(s.warehouse, create=False) as con:
        run_analysis(con, load_study(s.study), tier="public", store=True, fit=fit_public)
    return s


@pytest.fixture(scope="session")
def sparse(tmp_path_factory) -> Study:
    import os

    os.environ["FLOURISH_ORCHESTRATOR"] = "inline"
    root = tmp_path_factory.mktemp("reports-sparse")
    return _pipeline(root, 90, 11, "never", surrogates=[], min_cell_size=40)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
