"""The scoring task replaces a study's Flourish scores, keeps external scores and other studies."""

import duckdb
import pandas as pd

from flows.scoring import score_responses
from flows.warehouse import connect


def _rows(study, participant, instrument, codes, values, wave="baseline"):
    rid = f"r-{participant}-{instrument}-{wave}"
    return [(rid, participant, study, instrument, "1", wave, c, v) for c, v in zip(codes, values)]


def _responses(con, rows):
    """The response headers the ingest writes beside the items (the scorer picks the latest per wave)."""
    heads = sorted({r[:6] for r in rows})
    con.executemany("INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?, TIMESTAMPTZ '2026-01-02 00:00:00+00', 0, 'b')",
                    [list(h) for h in heads])


def test_score_responses_replaces_only_flourish_rows(tmp_path):
    path = tmp_path / "w.duckdb"
    con = connect(path)  # the migrated warehouse, as the ingest leaves it
    rows = (_rows("s1", "p1", "who5", [f"WHO5_{i}" for i in range(1, 6)], [3, 3, 3, 2, 2])
            + _rows("s1", "p1", "phq9", [f"PHQ_{i}" for i in range(1, 10)], [0, 0, 0, 0, 0, 0, 0, 0, 1])
            + _rows("s1", "p2", "who5", [f"WHO5_{i}" for i in range(1, 6)], [5, 5, 5, 5, None])
            + _rows("s2", "q1", "who5", [f"WHO5_{i}" for i in range(1, 6)], [1, 1, 1, 1, 1]))
    con.executemany("INSERT INTO response_items VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    _responses(con, rows)
    con.close()

    first = score_responses.fn(path, "s1")
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO scores (study_id, participant, wave, outcome, value, items_answered, prorated, source) "
                "VALUES ('s1', 'p9', 'baseline', 'ext.score', 1.0, NULL, false, 'external')")
    con.close()
    again = score_responses.fn(path, "s1")  # idempotent: same rows, external row kept
    score_responses.fn(path, "s2")
    assert first == again == {"responses": 19, "scores": 6, "safety_flags": 1}

    con = duckdb.connect(str(path))
    got = con.execute("SELECT participant, outcome, value, prorated, source FROM scores WHERE study_id = 's1' "
                      "ORDER BY participant, outcome").df()
    flags = con.execute("SELECT participant, flag, basis FROM safety_flags").df()
    n_s2 = con.execute("SELECT count(*) FROM scores WHERE study_id = 's2'").fetchone()[0]
    con.close()
    lookup = got.set_index(["participant", "outcome"])
    assert lookup.loc[("p1", "who5.percent"), "value"] == 52
    assert lookup.loc[("p2", "who5.raw"), "value"] == 25 and bool(lookup.loc[("p2", "who5.raw"), "prorated"])
    assert lookup.loc[("p9", "ext.score"), "source"] == "external"
    assert (got.source == "flourish").sum() == 6
    assert flags.to_dict("records") == [{"participant": "p1", "flag": "phq9_item9_positive", "basis": "item"}]
    assert n_s2 == 2
    pd.testing.assert_index_equal(got.columns, pd.Index(["participant", "outcome", "value", "prorated", "source"]))


def test_score_responses_on_the_migrated_warehouse(tmp_path):
    from flows.warehouse import open_warehouse

    path = tmp_path / "w.duckdb"
    with open_warehouse(path) as con:
        rows = _rows("s1", "p1", "who5", [f"WHO5_{i}" for i in range(1, 6)], [3, 3, 3, 2, 2])
        con.executemany("INSERT INTO response_items VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        _responses(con, rows)
    assert score_responses.fn(path, "s1") == {"responses": 5, "scores": 2, "safety_flags": 0}
    with open_warehouse(path) as con:
        got = con.execute("SELECT outcome, value, scored_at IS NOT NULL FROM scores ORDER BY outcome").fetchall()
    assert got == [("who5.percent", 52.0, True), ("who5.raw", 13.0, True)]


def test_compute_psychometrics_writes_per_wave_and_arm(tmp_path):
    import numpy as np

    from flows.scoring import compute_psychometrics
    from flows.warehouse import open_warehouse

    rng = np.random.default_rng(3)
    path = tmp_path / "w.duckdb"
    with open_warehouse(path) as con:
        rows = []
        for p in range(40):
            trait = rng.normal()
            rows += _rows("s1", f"p{p}", "swls", [f"SWLS_{i}" for i in range(1, 6)],
                          [int(np.clip(round(4 + trait + rng.normal()), 1, 7)) for _ in range(5)])
        con.executemany("INSERT INTO response_items VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        _responses(con, rows)
        con.executemany("INSERT INTO assignments VALUES (?, 's1', ?, now(), NULL, 'b1')",
                        [(f"p{p}", "t" if p % 2 else "c") for p in range(40)])
    assert compute_psychometrics.fn(path, "s1") == 3  # baseline x (all, c, t)
    assert compute_psychometrics.fn(path, "s1") == 3  # replaced, not appended
    with open_warehouse(path) as con:
        got = con.execute("SELECT arm, n_obs, alpha > 0.5, omega > 0.5 FROM psychometrics ORDER BY arm").fetchall()
    assert got == [("all", 40, True, True), ("c", 20, True, True), ("t", 20, True, True)]
