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


def _effects(rows):
    return {(r["outcome"], r["arm"], r["wave"], r["method"]): (r["estimate"], r["sd"]) for r in rows
            if r["estimate"] is not None}


@pytest.mark.slow
def test_the_partitioned_plan_fits_the_same_primary_rows_as_the_warehouse(tmp_path):
    """`flourish scaleout export` then `flourish scaleout analyze --task-runner dask`: the primary model's rows
    (here the MMRM and its ML cross-check) equal those `flourish analyze` fits from the warehouse, to rounding
    (the warehouse sums in another order), and the in-process reduction gives the Dask one exactly."""
    import json

    import yaml
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.simulation import simulate
    from tests.support.spine import KEY

    simulate(tmp_path / "sim", 300, seed=5, truth_draws=2_000)
    study = tmp_path / "sim" / "study.yaml"
    data = yaml.safe_load(study.read_text())
    data["secondary_outcomes"], data["surrogates"] = [], []
    data["analysis"].update({"subgroups": []})
    study.write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp_path / "k.key").write_text(KEY.decode())
    wh = tmp_path / "w.duckdb"
    run = CliRunner()
    assert run.invoke(app, ["ingest", str(tmp_path / "sim" / "landing"), "--study", str(study), "--warehouse",
                            str(wh), "--key-file", str(tmp_path / "k.key")]).exit_code == 0
    assert run.invoke(app, ["score", str(study), "--warehouse", str(wh)]).exit_code == 0
    whole = run.invoke(app, ["analyze", str(study), "--warehouse", str(wh), "--exploratory", "--json"])
    assert whole.exit_code == 0, whole.output
    exported = run.invoke(app, ["scaleout", "export", str(study), "--warehouse", str(wh), "--out",
                                str(tmp_path / "parts"), "--buckets", "4"])
    assert exported.exit_code == 0, exported.output
    rows = {}
    for runner in ("process", "dask"):
        res = run.invoke(app, ["scaleout", "analyze", str(study), "--partitions", str(tmp_path / "parts"),
                               "--task-runner", runner, "--json"])
        assert res.exit_code == 0, res.output
        rows[runner] = _effects(json.loads(res.stdout))
    assert rows["process"] == rows["dask"]
    reference = _effects(json.loads(whole.stdout))
    primary = {k: v for k, v in reference.items() if k in rows["dask"]}
    assert {k[3] for k in primary} >= {"mmrm_reml_us", "ml_random_intercept"}
    for k, (est, sd) in primary.items():
        assert rows["dask"][k][0] == pytest.approx(est, rel=1e-6, abs=1e-9), k
        assert rows["dask"][k][1] == pytest.approx(sd, rel=1e-6, abs=1e-9), k


def test_the_partitioned_plan_refuses_another_studys_partitions(partitioned, tmp_path):
    from flows.scaleout import partitioned_plan_statistics

    root, protocol, _ = partitioned
    other = protocol.model_copy(update={"study_id": "another-study"})
    with pytest.raises(ScaleOutError, match="another-study"):
        partitioned_plan_statistics(root, other)
    with pytest.raises(ScaleOutError, match="process or dask"):
        partitioned_plan_statistics(root, protocol, task_runner="threads")
