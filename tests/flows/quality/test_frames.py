"""The reductions agree with the house's canonical relations on every row they summarize."""

from __future__ import annotations

import math
from datetime import timedelta

from flows.quality.frames import DAY_SECONDS, response_cells
from flows.quality.rules import wave_window
from schemas.warehouse.relations import latest_responses, study_arms
from tests.flows.quality.conftest import T0, pid


def test_response_cells_judge_the_response_latest_responses_chooses(small):
    """The window rule reads the key's largest submission time; ``latest_responses`` picks the latest
    submission (then the larger id). Resubmissions earlier and later than the first answer, a tie at the latest
    time, and a participant never randomised give the same histogram either way."""
    con, protocol, people = small
    extra = [
        ("r-1-m1-late", people[1], "m1", T0 + timedelta(hours=1, days=40)),      # resubmitted after the window
        ("r-2-m1-early", people[2], "m1", T0 + timedelta(hours=2, days=1)),      # an older one, superseded
        ("r-3-m1-twin", people[3], "m1", T0 + timedelta(hours=3, days=30, minutes=60)),  # tie with r-3-m1
        ("r-x-base", pid(777), "baseline", T0),                                  # not randomised
    ]
    con.executemany("INSERT INTO responses VALUES (?, ?, 's1', 'who5', '1', ?, ?, 5, 'b2')", extra)

    cells = response_cells(con, protocol)
    ours = cells.groupby(["wave", "instrument", "randomized", "days_outside_window"], dropna=False)["n"].sum()

    windows = {w.name: wave_window(w) for w in protocol.waves}
    rows = con.execute(
        f"SELECT r.wave, r.instrument, a.participant IS NOT NULL, (epoch(r.submitted_at) - epoch(a.assigned_at)) / "
        f"{DAY_SECONDS} FROM {latest_responses('s1')} r LEFT JOIN {study_arms('s1')} a USING (participant)").fetchall()
    theirs: dict[tuple, int] = {}
    for wave, inst, randomized, offset in rows:
        w = windows[wave]
        if offset is None:
            days = float("nan")
        elif offset < w.opens_days:
            days = -float(math.ceil(w.opens_days - offset))
        elif offset > w.closes_days:
            days = float(math.ceil(offset - w.closes_days))
        else:
            days = 0.0
        key = (wave, inst, randomized, days)
        theirs[key] = theirs.get(key, 0) + 1

    def norm(d):
        return sorted((k[:3] + ("nan" if k[3] != k[3] else k[3],), v) for k, v in d.items())

    assert norm({k: int(v) for k, v in ours.items()}) == norm(theirs)
    assert int(cells["n"].sum()) == len(rows)  # one row per key, as the relation has
    assert theirs[("m1", "who5", True, 3.0)] == 1  # the late resubmission is the one judged
    assert int(cells.loc[cells["latest_tied"], "n"].sum()) == 1
    assert int(cells.loc[cells["submissions_per_key"] > 1, "n"].sum()) == 3
