"""A warehouse filled straight (no ingest) with assignments, scores and session telemetry around assignment: the
fixture of the tests that read CUPED metrics and the divergence monitor."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd


def sessions_around_assignment(rng: np.random.Generator, study_id: str, pid: list[str], assigned: list[datetime],
                               uplift: np.ndarray) -> pd.DataFrame:
    """``session_start`` events in the 14 days before and after each participant's assignment: a participant's
    rate ~ Gamma(3, 1) sessions a week, times ``uplift`` (per participant) after assignment."""
    n = len(pid)
    rate = rng.gamma(3, 1, n)
    k_pre = rng.poisson(rate * 2)  # sessions in the 14 days before assignment
    k_in = rng.poisson(rate * 2 * uplift)  # and in the 14 days after
    who = np.concatenate([np.repeat(np.arange(n), k_pre), np.repeat(np.arange(n), k_in)])
    sign = np.concatenate([-np.ones(k_pre.sum()), np.ones(k_in.sum())])
    ts = pd.Series(pd.to_datetime([assigned[i] for i in who], utc=True)) + pd.to_timedelta(
        sign * rng.uniform(0.01, 13.9, who.size), unit="D")
    return pd.DataFrame({"event_id": [f"e{j}" for j in range(who.size)], "participant": np.array(pid)[who],
                         "study_id": study_id, "ts": ts, "session_id": "s", "type": "session_start",
                         "feature": None, "value": np.nan, "batch_id": "b1"})


def write_study(path: Path, study_id: str, pid: list[str], arm, assigned: list[datetime],
                scores: list[tuple], events: pd.DataFrame) -> None:
    """Assignments, ``(study_id, participant, wave, outcome, value)`` scores and the events into a new warehouse."""
    from flows.warehouse import open_warehouse

    with open_warehouse(path) as con:
        con.executemany("INSERT INTO assignments VALUES (?, ?, ?, ?, NULL, 'b1')",
                        [(pid[i], study_id, arm[i], assigned[i]) for i in range(len(pid))])
        con.executemany("INSERT INTO scores (study_id, participant, wave, outcome, value) VALUES (?, ?, ?, ?, ?)", scores)
        con.register("ev", events)
        con.execute("INSERT INTO events SELECT event_id, participant, study_id, ts, session_id, type, "
                    "CAST(feature AS VARCHAR), value, batch_id FROM ev")
