"""Fixtures for the spine tests: a small protocol, a key, and a landing-folder writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.protocol import StudyProtocol

KEY = b"spine-test-key-0123456789"


@pytest.fixture
def protocol() -> StudyProtocol:
    return StudyProtocol.model_validate({
        "study_id": "s1",
        "title": "Spine test study",
        "arms": [{"name": "control", "control": True}, {"name": "guidance", "features": {"consented_guidance": True}}],
        "waves": [{"name": "baseline", "day": 0, "instruments": ["who5"]},
                  {"name": "m1", "day": 30, "instruments": ["who5"]}],
        "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "m1", "mcid": 10},
        "secondary_outcomes": [{"name": "clinic.total", "source": "external", "wave": "m1",
                                "lower_bound": 0, "upper_bound": 63}],
        "privacy": {"epsilon": 1.0},
        "baseline_covariates": [{"name": "drug", "kind": "categorical", "levels": ["No", "Yes"]}, {"name": "age"}],
    })


def consent(pid: str, scopes=("telemetry", "surveys"), granted="2026-01-01T00:00:00Z", withdrawn=None) -> dict:
    return {"participant_id": pid, "consent_version": "v1", "scopes": list(scopes), "granted_at": granted,
            "withdrawn_at": withdrawn}


def assignment(pid: str, arm: str = "control") -> dict:
    return {"participant_id": pid, "study_id": "s1", "arm": arm, "assigned_at": "2026-01-01T01:00:00+01:00"}


def response(rid: str, pid: str, wave: str = "baseline", items=None, **over) -> dict:
    r = {"response_id": rid, "participant_id": pid, "study_id": "s1", "instrument": "who5",
         "instrument_version": "1", "wave": wave, "submitted_at": "2026-01-02T09:00:00+00:00",
         "items": items if items is not None else {f"WHO5_{i}": 3 for i in range(1, 6)}}
    r.update(over)
    return r


def event(eid: str, pid: str, ts: str = "2026-01-03T10:00:00-05:00", **over) -> dict:
    e = {"event_id": eid, "participant_id": pid, "study_id": "s1", "ts": ts, "session_id": "s-1", "type": "message"}
    e.update(over)
    return e


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows may be dicts (serialized) or str/bytes (written verbatim, for malformed lines)."""
    with path.open("wb") as fh:
        for r in rows:
            if isinstance(r, bytes):
                fh.write(r + b"\n")
            elif isinstance(r, str):
                fh.write(r.encode("utf-8") + b"\n")
            else:
                fh.write(json.dumps(r).encode("utf-8") + b"\n")
    return path
