"""Scale-out: statistics per Parquet partition on a local Dask cluster equal the one-process statistics exactly,
and both agree with the warehouse's own statistics (to rounding: the warehouse sums in another order)."""

from __future__ import annotations

import numpy as np
import pytest

from flows.scaleout import ScaleOutError, export_partitions, statistics_in_process, statistics_on_dask
from flows.statistics import longitudinal_stats
from flows.warehouse import connect
from tests.support.privacy import fill, make_protocol


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory):
    root = tmp_path_factory.mktemp("scaleout")
    protocol = make_protocol()
    con = connect(root / "w.duckdb")
    fill(con, 200, seed=3)
    warehouse_stats = longitudinal_stats(con, protocol)
    export_partitions(con, protocol, root / "parts", buckets=5)
    con.close()
    return root / "parts", protocol, warehouse_stats


def _same(a, b) -> bool:
    ca, cb = a.cross, b.cross
    return (ca.n_obs == cb.n_obs and np.array_equal(ca.xtx, cb.xtx) and np.array_equal(ca.xty, cb.xty)
            and ca.yty == cb.yty and a.baseline == b.baseline
            and [(g.rows_per_participant, g.n_participants) for g in ca.groups]
            == [(g.rows_per_participant, g.n_participants) for g in cb.groups]
            and all(np.array_equal(g.sxsx, h.sxsx) and np.array_equal(g.sxsy, h.sxsy) and g.sysy == h.sysy
                    for g, h in zip(ca.groups, cb.groups)))


@pytest.mark.slow
def test_dask_statistics_equal_the_one_process_statistics_exactly(partitioned):
    root, protocol, warehouse_stats = partitioned
    one = statistics_in_process(root, protocol, protocol.primary_outcome.name)
    on_dask = statistics_on_dask(root, protocol, protocol.primary_outcome.name, workers=2)
    assert _same(one, on_dask)
    assert one.cross.allclose(warehouse_stats.cross)
    assert one.cross.n_obs == warehouse_stats.cross.n_obs and one.baseline.n == warehouse_stats.baseline.n


def test_every_participant_is_in_one_bucket_and_the_buckets_add_up(partitioned):
    import duckdb

    root, protocol, warehouse_stats = partitioned
    con = duckdb.connect()
    per_bucket = con.execute(
        f"SELECT count(DISTINCT bucket) FROM read_parquet('{root}/scores/*/*/*.parquet') GROUP BY participant"
    ).fetchall()
    assert {n for (n,) in per_bucket} == {1}
    one = statistics_in_process(root, protocol, protocol.primary_outcome.name)
    assert one.cross.allclose(warehouse_stats.cross)


def test_export_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "something").write_text("x")
    con = connect(tmp_path / "w.duckdb")
    try:
        with pytest.raises(ScaleOutError, match="not empty"):
            export_partitions(con, make_protocol(), tmp_path / "parts")
    finally:
        con.close()
