"""Shared fixtures for the privacy tests: a small protocol and a synthetic warehouse with known pseudonyms."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from privacy.pseudonym import pseudonymize
from schemas.protocol import StudyProtocol

KEY = b"test-key-0123456789abcdef"
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def make_protocol(epsilon: float = 2.0, mechanism: str = "gaussian", min_cell_size: int = 5,
                  study_id: str = "study-a") -> StudyProtocol:
    return StudyProtocol.model_validate({
        "study_id": study_id,
        "title": "privacy test study",
        "arms": [{"name": "control", "control": True}, {"name": "coach"}],
        "waves": [
            {"name": "baseline", "day": 0, "instruments": ["who5"]},
            {"name": "m1", "day": 30, "instruments": ["who5"]},
            {"name": "m3", "day": 90, "instruments": ["who5"]},
        ],
        "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "m3"},
        "secondary_outcomes": [{"name": "ext.score", "source": "external", "lower_bound": 0, "upper_bound": 10}],
        "surrogates": [{"name": "sessions_per_week", "event_type": "session_start", "upper_bound": 20}],
        "privacy": {"epsilon": epsilon, "delta": 1e-6, "min_cell_size": min_cell_size, "mechanism": mechanism},
    })


OUTCOME_BOUNDS = {"who5.percent": (0.0, 100.0)}


def fill(con, n: int = 40, seed: int = 1, study_id: str = "study-a", raw_prefix: str = "raw-") -> dict[str, str]:
    """Insert n participants with assignments, responses, scores, events; return raw id -> pseudonym."""
    rng = random.Random(seed)
    ids = {}
    for i in range(n):
        raw = f"{raw_prefix}{i:04d}"
        p = pseudonymize(raw, KEY)
        ids[raw] = p
        arm = "control" if i % 2 == 0 else "coach"
        con.execute("INSERT INTO assignments VALUES (?,?,?,?,?,?)", [p, study_id, arm, T0, None, "b1"])
        con.execute("INSERT INTO consents VALUES (?,?,?,?,?,?,?,?,?)",
                    [p, "v1", ["surveys", "telemetry"], T0, None, f"h{i}", "b1", "consents.jsonl", i + 1])
        for w, day in (("baseline", 0), ("m1", 30), ("m3", 90)):
            rid = f"r-{i}-{w}"
            con.execute("INSERT INTO responses VALUES (?,?,?,?,?,?,?,?,?)",
                        [rid, p, study_id, "who5", "1", w, T0 + timedelta(days=day), 5, "b1"])
            con.execute("INSERT INTO response_items VALUES (?,?,?,?,?,?,?,?)",
                        [rid, p, study_id, "who5", "1", w, "WHO5_1", 3])
            con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value) VALUES (?,?,?,?,?)",
                        [study_id, p, w, "who5.percent", float(rng.randint(0, 25) * 4)])
            con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value, source) VALUES (?,?,?,?,?,?)",
                        [study_id, p, w, "ext.score", rng.uniform(0, 10), "external"])
        for k in range(rng.randint(0, 6)):
            con.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)",
                        [f"e-{i}-{k}", p, study_id, T0 + timedelta(days=k), f"s{k}", "session_start", None, None, "b1"])
    return ids


def add_extreme_participant(con, raw: str, arm: str, rng: random.Random, study_id: str = "study-a",
                            n_events: int | None = None) -> None:
    """A participant at (and beyond) the clipping bounds, with duplicate scores and extra events."""
    p = pseudonymize(raw, KEY)
    con.execute("INSERT INTO assignments VALUES (?,?,?,?,?,?)", [p, study_id, arm, T0, None, "b9"])
    con.execute("INSERT INTO assignments VALUES (?,?,?,?,?,?)", [p, study_id, "coach" if arm == "control" else "control",
                                                                 T0 + timedelta(days=1), None, "b9"])  # conflicting
    for w in ("baseline", "m1", "m3", "not-a-wave"):
        for dup in range(rng.randint(1, 3)):
            con.execute("INSERT INTO responses VALUES (?,?,?,?,?,?,?,?,?)",
                        [f"x-{raw}-{w}-{dup}", p, study_id, "who5", "1", w, T0, 5, "b9"])
            con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value, scored_at) VALUES (?,?,?,?,?,?)",
                        [study_id, p, w, "who5.percent", rng.choice([100.0, 250.0, -40.0, 0.0]), T0 + timedelta(days=dup)])
            con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value) VALUES (?,?,?,?,?)",
                        [study_id, p, w, "ext.score", rng.choice([10.0, 1e6, -5.0])])
    for k in range(rng.randint(0, 200) if n_events is None else n_events):
        con.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)",
                    [f"x-{raw}-e{k}", p, study_id, T0 + timedelta(hours=k), "s", "session_start", None, None, "b9"])


@pytest.fixture
def protocol() -> StudyProtocol:
    return make_protocol()


@pytest.fixture
def warehouse(tmp_path: Path):
    from flows.warehouse import connect

    path = tmp_path / "study-a" / "warehouse.duckdb"
    con = connect(path)
    yield path, con
    con.close()


def ingest_protocol(study_id: str = "s1") -> StudyProtocol:
    """A protocol for landing folders written with tests.support.spine's record builders (study 's1')."""
    return StudyProtocol.model_validate({
        "study_id": study_id, "title": "privacy ingest test",
        "arms": [{"name": "control", "control": True}, {"name": "guidance"}],
        "waves": [{"name": "baseline", "day": 0, "instruments": ["who5"]}],
        "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "baseline"},
        "privacy": {"epsilon": 1.0},
    })


def write_landing(folder: Path, ids: list[str], *, withdrawn: tuple[str, ...] = (), first_event: int = 0) -> Path:
    """A landing folder: a consent (withdrawn for ``withdrawn``), an assignment and an event per id."""
    from tests.support.spine import assignment, consent, event, write_jsonl

    folder.mkdir(parents=True)
    write_jsonl(folder / "consents.jsonl",
                [consent(p, withdrawn="2026-01-04T00:00:00Z" if p in withdrawn else None) for p in ids])
    write_jsonl(folder / "assignments.jsonl", [assignment(p) for p in ids])
    write_jsonl(folder / "events-1.jsonl", [event(f"e{first_event + i}", p) for i, p in enumerate(ids)])
    return folder


def make_binary_protocol(epsilon: float = 2.0, min_cell_size: int = 5, study_id: str = "study-a") -> StudyProtocol:
    """A mixed study: a binary primary sent as external 0/1 scores (``relapse``, long run at m3), a binary secondary
    from a cut-off on the WHO-5 percent score (event: <= 50) and a continuous secondary (``ext.score``)."""
    return StudyProtocol.model_validate({
        "study_id": study_id,
        "title": "binary privacy test study",
        "arms": [{"name": "control", "control": True}, {"name": "coach"}],
        "waves": [
            {"name": "baseline", "day": 0, "instruments": ["who5"]},
            {"name": "m1", "day": 30, "instruments": ["who5"]},
            {"name": "m3", "day": 90, "instruments": ["who5"]},
        ],
        "primary_outcome": {"name": "relapse", "source": "external", "kind": "binary", "wave": "m3",
                            "direction": "lower_is_better"},
        "secondary_outcomes": [
            {"name": "who5.percent", "instrument": "who5", "kind": "binary", "event_at_or_below": 50,
             "direction": "lower_is_better"},
            {"name": "ext.score", "source": "external", "lower_bound": 0, "upper_bound": 10}],
        "privacy": {"epsilon": epsilon, "delta": 1e-6, "min_cell_size": min_cell_size},
    })


def fill_binary(con, n: int = 40, seed: int = 3, study_id: str = "study-a") -> dict[str, str]:
    """:func:`fill` plus a 0/1 ``relapse`` score per participant at m1 and m3 (risk 0.3 in control, 0.2 coached)."""
    ids = fill(con, n, seed=seed, study_id=study_id)
    rng = random.Random(seed + 1)
    for i, p in enumerate(ids.values()):
        risk = 0.3 if i % 2 == 0 else 0.2
        for w in ("m1", "m3"):
            con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value, source) VALUES (?,?,?,?,?,?)",
                        [study_id, p, w, "relapse", float(rng.random() < risk), "external"])
    return ids


def add_extreme_binary_participant(con, raw: str, arm: str, rng: random.Random, study_id: str = "study-a") -> None:
    """:func:`add_extreme_participant` plus duplicate 0/1 relapse scores at every wave (and a wave not in the plan)."""
    add_extreme_participant(con, raw, arm, rng, study_id)
    p = pseudonymize(raw, KEY)
    for w in ("baseline", "m1", "m3", "not-a-wave"):
        for dup in range(rng.randint(1, 3)):
            con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value, source, scored_at) "
                        "VALUES (?,?,?,?,?,?,?)", [study_id, p, w, "relapse", float(rng.random() < 0.5), "external",
                                                   T0 + timedelta(days=dup)])
