"""The trusted statistics, the ANCOVA reader and the DP release read the same value for every participant x
wave x outcome, whatever rows the warehouse holds (DESIGN.md: trusted and public results differ only by noise).

The scores table is filled with the cases that used to split the readers (house review P2): a Flourish score
and an external one for the same participant x wave x outcome, several external ones with different times or
none, NaN values, and participants with a second (conflicting) assignment. The paired moments of each reader
must be equal; with bounds wider than the data the DP release's exact (pre-noise) values clip nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.statistics import final_wave_cells, paired_moments
from flows.warehouse import connect
from privacy.release import Bounds, exact_values, plan_paired
from schemas.protocol import StudyProtocol
from schemas.suffstats import PAIRED_STATISTICS, NoisyPairedMoments

T0 = datetime(2026, 1, 5, tzinfo=UTC)
PROTOCOL = StudyProtocol.model_validate({
    "study_id": "tiers", "title": "tiers",
    "arms": [{"name": "control", "control": True}, {"name": "coach"}],
    "waves": [{"name": "baseline", "day": 0, "instruments": ["who5"]}, {"name": "m1", "day": 30, "instruments": ["who5"]},
              {"name": "m3", "day": 90, "instruments": ["who5"]}],
    "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "m3"},
    "privacy": {"epsilon": 1.0},
})
OUTCOME = PROTOCOL.primary_outcome

score_row = st.tuples(
    st.integers(0, 7),                                         # participant
    st.sampled_from(["baseline", "m1", "m3"]),                 # wave
    st.sampled_from(["flourish", "external"]),                 # source
    st.one_of(st.floats(0, 100), st.just(float("nan"))),      # value
    st.one_of(st.none(), st.integers(0, 5)),                   # scored_at (days), or none
    st.sampled_from(["b1", "b2", None]),                       # batch
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(score_row, min_size=1, max_size=60), reassigned=st.sets(st.integers(0, 7), max_size=3))
def test_every_reader_sees_the_same_score(tmp_path_factory, rows, reassigned):
    con = connect(tmp_path_factory.mktemp("tiers") / "w.duckdb")
    try:
        for i in range(8):
            arm = "control" if i % 2 == 0 else "coach"
            con.execute("INSERT INTO assignments VALUES (?, 'tiers', ?, ?, NULL, 'b1')", [f"p{i}", arm, T0])
            if i in reassigned:  # a later, conflicting assignment: the first one is the participant's arm
                other = "coach" if arm == "control" else "control"
                con.execute("INSERT INTO assignments VALUES (?, 'tiers', ?, ?, NULL, 'b2')",
                            [f"p{i}", other, T0 + timedelta(days=1)])
        for pid, wave, source, value, day, batch in rows:
            con.execute(
                "INSERT INTO scores (study_id, participant, wave, outcome, value, source, scored_at, batch_id) "
                "VALUES ('tiers', ?, ?, 'who5.percent', ?, ?, ?, ?)",
                [f"p{pid}", wave, value, source, None if day is None else T0 + timedelta(days=day), batch])

        trusted = paired_moments(con, PROTOCOL, outcome=OUTCOME.name)
        query = plan_paired(PROTOCOL, OUTCOME.name, Bounds(-1.0, 101.0, OUTCOME.name))
        centred = dict(zip(((k.arm, k.wave, k.statistic) for k in query.keys), exact_values(con, PROTOCOL, query)))
        released = {}  # the release sums values centred at the bounds' midpoint: back to the values themselves
        for arm, wave in {(a, w) for a, w, _ in centred}:
            cell = NoisyPairedMoments(**{s: centred[(arm, wave, s)] for s in PAIRED_STATISTICS}, center=query.center)
            released |= {(arm, wave, s): v for s, v in cell.uncentred().items()}
        for (arm, wave), cell in trusted.items():
            for stat in PAIRED_STATISTICS:
                assert released[(arm, wave, stat)] == getattr(cell, stat) or abs(
                    released[(arm, wave, stat)] - getattr(cell, stat)) <= 1e-9 * max(1.0, abs(getattr(cell, stat)))
        for (arm, wave, stat), value in centred.items():  # a cell the release has and the trusted tier lacks is empty
            if (arm, wave) not in trusted:
                assert value == 0.0
        if any(r[1] == "baseline" and r[3] == r[3] for r in rows):
            observed = final_wave_cells(con, PROTOCOL, OUTCOME).completers
            for arm, cell in observed.items():
                if cell.n:
                    assert cell.paired == trusted[(arm, "m3")]
                else:
                    assert (arm, "m3") not in trusted
    finally:
        con.close()
