"""Scale-out: a study's statistics computed per Parquet partition, on a Dask cluster through Prefect, and summed.

The sufficient statistics add (``a + b`` pools disjoint sets of participants, schemas/suffstats.py), so a study
too big for one machine is laid out as Parquet partitions that each hold whole participants, every partition is
reduced to its statistics where it lies, and the results are summed. Nothing here is a scheduler of its own:
partitions are Prefect tasks submitted to ``prefect_dask.DaskTaskRunner`` (a local cluster by default, an
existing one with its scheduler's address).

Layout (:func:`export_partitions`; hive-style, so any engine reads it)::

    <root>/manifest.json                             study, buckets, what was exported and when
    <root>/assignments/bucket=<k>/*.parquet          the study's assignments
    <root>/scores/bucket=<k>/wave=<w>/*.parquet      the study's scores, one folder per wave
    <root>/participant_characteristics/bucket=<k>/   the participants records' baseline characteristics
    <root>/events/bucket=<k>/month=<YYYY-MM>/*.parquet
    <root>/responses/bucket=<k>/wave=<w>/*.parquet   the study's responses (not their items) and survey prompts:
    <root>/prompts/bucket=<k>/wave=<w>/*.parquet     what judges an answer late (relations.primary_scores)

A participant's bucket is ``hash(participant) % buckets``: every row of a participant lands in one bucket, so a
bucket's statistics need no other bucket (the per-participant sums of the random-intercept and MMRM likelihoods
are complete inside it). Partition columns are written into the files too, and each table has a zero-row
``schema.parquet``, so an empty bucket still reads with the table's columns. Each bucket is read by a fresh
single-threaded DuckDB connection through the same
canonical relations and statistics SQL the warehouse path uses (views named ``scores`` and ``assignments`` over
the bucket's files), and the buckets are summed in bucket order. Single-threaded, in a fixed order: the same
floating-point sums in the same order, so the Dask result equals the one-process result exactly
(``tests/flows/test_scaleout.py``), not only to rounding.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import reduce
from operator import add
from pathlib import Path
from typing import Any

import duckdb
from prefect import flow, task

from schemas.errors import FlourishError
from schemas.protocol import StudyProtocol
from schemas.sqltext import literal, number


class ScaleOutError(FlourishError):
    """The partitioned study cannot be read or reduced as asked."""


def export_partitions(con: duckdb.DuckDBPyConnection, protocol: StudyProtocol, root: str | Path,
                      buckets: int = 16) -> Path:
    """Write the study's assignments, scores and events from the warehouse as bucketed Parquet partitions."""
    if not 1 <= buckets <= 4096:
        raise ScaleOutError(f"buckets must be between 1 and 4096, not {buckets}")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise ScaleOutError(f"{root} is not empty; export into a new folder")
    root.mkdir(parents=True, exist_ok=True)
    sid = literal(protocol.study_id)
    bucket = f"(hash(participant) % {number(buckets)})::INTEGER AS bucket"
    exports = {
        "assignments": (f"SELECT *, {bucket} FROM assignments WHERE study_id = {sid}", "bucket"),
        "scores": (f"SELECT *, {bucket} FROM scores WHERE study_id = {sid}", "bucket, wave"),
        # declared baseline covariates (participants records): the statistics read them as the warehouse path does
        "participant_characteristics": (f"SELECT *, {bucket} FROM participant_characteristics WHERE study_id = {sid}",
                                        "bucket"),
        "events": (f"SELECT *, {bucket}, strftime(ts AT TIME ZONE 'UTC', '%Y-%m') AS month FROM events "
                   f"WHERE study_id = {sid}", "bucket, month"),
        "responses": (f"SELECT *, {bucket} FROM responses WHERE study_id = {sid}", "bucket, wave"),
        "prompts": (f"SELECT *, {bucket} FROM prompts WHERE study_id = {sid}", "bucket, wave"),
    }
    counts = {}
    for name, (select, partition_by) in exports.items():
        counts[name] = con.execute(f"SELECT count(*) FROM ({select})").fetchone()[0]
        (root / name).mkdir()
        # the table's columns, with no rows: an empty bucket still reads as the right shape
        con.execute(f"COPY (SELECT * FROM ({select}) LIMIT 0) TO {literal(str(root / name / 'schema.parquet'))} "
                    "(FORMAT parquet)")
        if counts[name]:
            con.execute(f"COPY ({select}) TO {literal(str(root / name))} (FORMAT parquet, PARTITION_BY "
                        f"({partition_by}), WRITE_PARTITION_COLUMNS true, OVERWRITE_OR_IGNORE)")
    manifest = {"study_id": protocol.study_id, "buckets": buckets, "rows": counts,
                "exported_at": datetime.now(UTC).isoformat()}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return root


def _manifest(root: Path) -> dict[str, Any]:
    path = root / "manifest.json"
    if not path.is_file():
        raise ScaleOutError(f"{root} holds no manifest.json; lay the study out with export_partitions first")
    return json.loads(path.read_text(encoding="utf-8"))


PARTITIONED_TABLES = ("assignments", "scores", "events", "participant_characteristics", "responses", "prompts")


def bucket_connection(root: str | Path, bucket: int | None) -> duckdb.DuckDBPyConnection:
    """A fresh single-threaded in-memory DuckDB whose ``assignments``, ``scores`` and ``events`` are the bucket's
    files (every bucket's with ``bucket=None``): the canonical relations (schemas/warehouse/relations.py) read them
    as they read the warehouse."""
    root = Path(root)
    con = duckdb.connect(":memory:")
    con.execute("SET threads = 1")  # one order of floating-point additions: results equal wherever they run
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    for table in PARTITIONED_TABLES:
        if table == "participant_characteristics" and not (root / table).is_dir():
            # laid out before participants records existed: none to read
            con.execute("CREATE VIEW participant_characteristics AS SELECT NULL::VARCHAR AS participant, "
                        "NULL::VARCHAR AS study_id, NULL::VARCHAR AS covariate, NULL::VARCHAR AS value_text, "
                        "NULL::DOUBLE AS value_number WHERE false")
            continue
        if not (root / table / "schema.parquet").is_file():  # laid out before the table was exported
            continue
        folder = root / table if bucket is None else root / table / f"bucket={int(bucket)}"
        files = [root / table / "schema.parquet",
                 *sorted(f for f in folder.rglob("*.parquet") if f.name != "schema.parquet")]
        paths = "[" + ", ".join(literal(str(f)) for f in files) + "]"
        con.execute(f"CREATE VIEW {table} AS SELECT * EXCLUDE (bucket) FROM read_parquet({paths}, "
                    "hive_partitioning = false, union_by_name = true)")
    return con


def longitudinal_bucket(root: str, bucket: int, protocol_json: str, outcome: str):
    """The primary model's cross-products of one bucket (``flows.statistics``' statistics SQL over its files)."""
    from flows.statistics import design_statistics, design_spec, observations_sql

    protocol = StudyProtocol.model_validate_json(protocol_json)
    con = bucket_connection(root, bucket)
    try:
        covariates = list(protocol.analysis.covariates)
        source = observations_sql(protocol, outcome, covariates)
        if not con.execute(f"SELECT count(*) FROM {source}").fetchone()[0]:
            return None  # no follow-up row with a baseline in this bucket: nothing to add
        return design_statistics(con, source, design_spec(protocol, covariates), slopes=protocol.analysis.random_slopes)
    finally:
        con.close()


def _pool(parts: list[Any], what: str) -> Any:
    present = [p for p in parts if p is not None]
    if not present:
        raise ScaleOutError(f"no partition holds {what}")
    return reduce(add, present)


def statistics_in_process(root: str | Path, protocol: StudyProtocol, outcome: str,
                          reducer: Callable[[str, int, str, str], Any] = longitudinal_bucket) -> Any:
    """The statistics of every bucket, one after another in this process, summed in bucket order."""
    buckets = _manifest(Path(root))["buckets"]
    payload = protocol.model_dump_json()
    return _pool([reducer(str(root), k, payload, outcome) for k in range(buckets)], f"{outcome} statistics")


@task(name="flourish-partition-statistics", persist_result=False, cache_policy=None, retries=2)
def _bucket_task(root: str, bucket: int, protocol_json: str, outcome: str) -> Any:
    # idempotent (reads files, writes nothing), so a retry after a lost worker is safe (PrefectHQ/prefect#15442)
    return longitudinal_bucket(root, bucket, protocol_json, outcome)


def dask_task_runner(address: str | None = None, workers: int = 2):
    """Prefect's Dask task runner: an existing cluster at ``address``, else a local one of ``workers`` processes
    with one thread each (DuckDB runs single-threaded per partition)."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


def statistics_on_dask(root: str | Path, protocol: StudyProtocol, outcome: str, *, address: str | None = None,
                       workers: int = 2) -> Any:
    """The same statistics with each bucket a Prefect task on a Dask cluster; summed in bucket order."""
    buckets = _manifest(Path(root))["buckets"]
    payload = protocol.model_dump_json()

    @flow(name="flourish-partitioned-statistics", task_runner=dask_task_runner(address, workers), persist_result=False)
    def partitioned() -> list[Any]:
        futures = [_bucket_task.submit(str(root), k, payload, outcome) for k in range(buckets)]
        return [f.result() for f in futures]

    from flows.prefect_server import prefect_api

    with prefect_api():  # the server PREFECT_API_URL names (inside a pipeline run), else one for this call
        return _pool(partitioned(), f"{outcome} statistics")


# ------------------------------------------------------------------------------------------------------------
# The plan's primary models on a partitioned study (``flourish scaleout analyze``)


def _plan_waves(root: str | Path, protocol: StudyProtocol) -> dict[str, list[str]]:
    """Per outcome, the follow-up waves with a score in any bucket (one scan of the scores' partition folders):
    every bucket's statistics are then read over the same waves, so they add."""
    from flows.statistics import observed_followup_waves, require_rows

    con = bucket_connection(root, None)
    try:
        for o in protocol.outcomes:
            require_rows(con, protocol, o)
        return {o.name: observed_followup_waves(con, protocol, o) for o in protocol.outcomes}
    finally:
        con.close()


def plan_bucket(root: str, bucket: int, protocol_json: str, waves_json: str) -> dict[str, Any]:
    """One bucket's share of the primary models' statistics: per outcome the longitudinal cross-products and (when
    the plan's primary is the MMRM) the pattern statistics, over the waves every bucket uses; and the arm counts."""
    from flows.statistics import arm_counts, longitudinal_stats, mmrm_stats

    protocol = StudyProtocol.model_validate_json(protocol_json)
    waves: dict[str, list[str]] = json.loads(waves_json)
    con = bucket_connection(root, bucket)
    try:
        out: dict[str, Any] = {"arm_counts": arm_counts(con, protocol), "outcomes": {}}
        for o in protocol.outcomes:
            observed = waves[o.name]
            parts: dict[str, Any] = {"longitudinal": None, "mmrm": None}
            if observed and con.execute(f"SELECT count(*) FROM {_observations(protocol, o.name, observed)}"
                                        ).fetchone()[0]:
                parts["longitudinal"] = longitudinal_stats(con, protocol, outcome=o.name, waves=observed)
                if protocol.analysis.primary_model(len(observed)) == "mmrm":
                    parts["mmrm"] = mmrm_stats(con, protocol, outcome=o.name, waves=observed)
            out["outcomes"][o.name] = parts
        return out
    finally:
        con.close()


def _observations(protocol: StudyProtocol, outcome: str, waves: list[str]) -> str:
    from flows.statistics import observations_sql

    return observations_sql(protocol, outcome, list(protocol.analysis.covariates), waves)


@task(name="flourish-partition-plan-statistics", persist_result=False, cache_policy=None, retries=2)
def _plan_bucket_task(root: str, bucket: int, protocol_json: str, waves_json: str) -> dict[str, Any]:
    return plan_bucket(root, bucket, protocol_json, waves_json)  # reads files, writes nothing: safe to retry


def partitioned_plan_statistics(root: str | Path, protocol: StudyProtocol, *, task_runner: str = "process",
                                address: str | None = None, workers: int = 2,
                                progress: Callable[[str], None] = lambda _m: None):
    """``analysis.plan.PlanStatistics`` of a partitioned study for the plan's primary models: every bucket reduced
    (in this process, or each bucket a Prefect task on Dask with ``task_runner="dask"``) and summed in bucket order.
    The final-wave cells, subgroups and telemetry are left out (the warehouse path reads them), so ``run_plan`` on
    the result publishes the primary model's rows and its cross-check, the same code as ``flourish analyze``."""
    from analysis.plan import OutcomeStatistics, PlanStatistics, Unavailable

    if task_runner not in ("process", "dask"):
        raise ScaleOutError(f"task runner must be process or dask, not {task_runner!r}")
    root = Path(root)
    manifest = _manifest(root)
    if manifest.get("study_id") != protocol.study_id:
        raise ScaleOutError(f"{root} holds study {manifest.get('study_id')!r}, not {protocol.study_id!r}")
    buckets = int(manifest["buckets"])
    waves = _plan_waves(root, protocol)
    payload, waves_json = protocol.model_dump_json(), json.dumps(waves)
    progress(f"reducing {buckets} partitions ({task_runner})")
    if task_runner == "dask":
        @flow(name="flourish-partitioned-plan-statistics", task_runner=dask_task_runner(address, workers),
              persist_result=False)
        def partitioned() -> list[dict[str, Any]]:
            futures = [_plan_bucket_task.submit(str(root), k, payload, waves_json) for k in range(buckets)]
            return [f.result() for f in futures]

        from flows.prefect_server import prefect_api

        with prefect_api():
            parts = partitioned()
    else:
        parts = [plan_bucket(str(root), k, payload, waves_json) for k in range(buckets)]

    counts: dict[str, int] = {}
    for part in parts:
        for arm, n in part["arm_counts"].items():
            counts[arm] = counts.get(arm, 0) + n
    outcomes = []
    for o in protocol.outcomes:
        observed = tuple(waves[o.name])
        pieces = {what: [p["outcomes"][o.name][what] for p in parts if p["outcomes"][o.name][what] is not None]
                  for what in ("longitudinal", "mmrm")}
        longitudinal = (reduce(add, pieces["longitudinal"]) if pieces["longitudinal"]
                        else Unavailable(f"{o.name} has no follow-up scores in the partitions"))
        mmrm = reduce(add, pieces["mmrm"]) if pieces["mmrm"] else None
        outcomes.append(OutcomeStatistics(o.name, observed, longitudinal, mmrm=mmrm))
    return PlanStatistics(outcomes=tuple(outcomes), arm_counts=counts)
