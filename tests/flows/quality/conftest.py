"""Warehouses for the quality-gate tests.

- ``simulated``: a field study from the project's own simulator, ingested and scored by the project's own
  ingest and scoring (built once per session; each test gets a copy, so injections never leak).
- ``small``: the spine's two-arm protocol (baseline and m1 with WHO-5, an external ``clinic.total`` bounded
  0..63) with rows inserted by hand, for the rules' exact boundaries.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.warehouse import connect
from privacy.pseudonym import pseudonymize
from schemas.protocol import StudyProtocol, load_protocol
from tests.support.spine import KEY
from tests.support.spine import protocol  # noqa: F401  (a fixture: the small study's protocol)

AS_OF = datetime(2027, 9, 1, tzinfo=UTC)  # after every simulated wave window has closed
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Study:
    path: Path
    protocol: StudyProtocol
    landing: Path | None = None


def build_simulated(out: Path, participants: int, seed: int) -> Study:
    """simulate -> ingest -> score, exactly as the pipeline does it (no bad rows)."""
    from flows.ingest import ingest_batch
    from flows.scoring import score_responses
    from flows.simulation import simulate

    sim = simulate(out / "study", participants, seed, truth_draws=1_000)
    proto = load_protocol(out / "study" / "study.yaml")
    path = out / "warehouse.duckdb"
    ingest_batch(sim["landing"], proto, path, KEY)
    score_responses.fn(path, proto.study_id)
    return Study(path, proto, Path(sim["landing"]))


@pytest.fixture(scope="session")
def simulated_template(tmp_path_factory) -> Study:
    return build_simulated(tmp_path_factory.mktemp("quality-sim"), 150, seed=21)


@pytest.fixture
def simulated(simulated_template, tmp_path):
    """A private copy of the simulated warehouse and an open connection to it."""
    path = tmp_path / "warehouse.duckdb"
    shutil.copyfile(simulated_template.path, path)
    con = connect(path)
    yield Study(path, simulated_template.protocol, simulated_template.landing), con
    con.close()


def pid(i: int) -> str:
    return pseudonymize(f"raw-{i:04d}", KEY)


def fill_small(con, n: int = 40) -> list[str]:
    """n participants of study s1 (arms alternate), WHO-5 at baseline and m1 one hour after the wave's day,
    both WHO-5 scores, an external clinic.total at m1, two events each; return the pseudonyms."""
    people = [pid(i) for i in range(n)]
    for i, p in enumerate(people):
        assigned = T0 + timedelta(hours=i)
        con.execute("INSERT INTO assignments VALUES (?, 's1', ?, ?, NULL, 'b1')",
                    [p, "control" if i % 2 == 0 else "guidance", assigned])
        for wave, day in (("baseline", 0), ("m1", 30)):
            rid = f"r-{i}-{wave}"
            con.execute("INSERT INTO responses VALUES (?, ?, 's1', 'who5', '1', ?, ?, 5, 'b1')",
                        [rid, p, wave, assigned + timedelta(days=day, hours=1)])
            con.executemany("INSERT INTO response_items VALUES (?, ?, 's1', 'who5', '1', ?, ?, ?)",
                            [[rid, p, wave, f"WHO5_{k}", 3] for k in range(1, 6)])
            con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value, scored_at) "
                        "VALUES ('s1', ?, ?, 'who5.raw', 15, now()), ('s1', ?, ?, 'who5.percent', 60, now())",
                        [p, wave, p, wave])
        con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value, source, scored_at) "
                    "VALUES ('s1', ?, 'm1', 'clinic.total', 20, 'external', ?)", [p, assigned + timedelta(days=31)])
        con.executemany("INSERT INTO events VALUES (?, ?, 's1', ?, 'x', 'message', NULL, NULL, 'b1')",
                        [[f"e-{i}-{k}", p, assigned + timedelta(days=k)] for k in (1, 20)])
    return people


@pytest.fixture
def small(tmp_path, protocol):  # noqa: F811
    con = connect(tmp_path / "small.duckdb")
    people = fill_small(con)
    yield con, protocol, people
    con.close()
