"""Rules to Great Expectations suites, and validation results back to :class:`ExpectationResult` values.

The code-first GX 1.x flow (research/orchestration.md D1.4) with its traps avoided: an ephemeral context
(nothing written to disk, no Data Docs), the pandas data source (its SQL source fails on DuckDB), one
suite per reduced frame, each run with ``batch_parameters={"dataframe": frame}`` and ``result_format``
COMPLETE; progress bars off, and success read from each expectation's validation result (an expectation
that raised, or has no result, is a failure: the gate fails closed). Severity is GX's own field
(``Expectation.severity``, 1.24), read back from each result's configuration.

Great Expectations is imported here only, inside the functions (about 10 s on this machine).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from flows.quality.report import ExpectationResult
from flows.quality.rules import Rule

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

MAX_EXAMPLES = 5
MAX_OBSERVED_VALUES = 20


def _gx():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GX's own deprecation notices at import are not the user's concern
        import great_expectations as gx
        import great_expectations.expectations as gxe
    return gx, gxe


def gx_version() -> str:
    gx, _ = _gx()
    return str(gx.__version__)


def _expectation(rule: Rule, gxe: Any) -> Any:
    from great_expectations.expectations.row_conditions import Column

    kwargs = dict(rule.kwargs)
    if rule.where is not None:
        kwargs["row_condition"] = Column(rule.where[0]) == rule.where[1]
    return getattr(gxe, rule.expectation)(**kwargs, severity=rule.severity, description=rule.description,
                                          meta={"flourish_rule": rule.name, "table": rule.table, "unit": rule.unit})


def expectation_suites(rules: Sequence[Rule]) -> dict[str, Any]:
    """``frame name -> gx.ExpectationSuite`` of these rules (not yet added to a context)."""
    gx, gxe = _gx()
    suites: dict[str, Any] = {}
    for rule in rules:
        suite = suites.setdefault(rule.frame, gx.ExpectationSuite(name=f"flourish-quality-{rule.frame}"))
        suite.add_expectation(_expectation(rule, gxe))
    return suites


def validate(rules: Sequence[Rule], frames: Mapping[str, pd.DataFrame]) -> list[ExpectationResult]:
    """Validate each frame against its suite; one result per rule, in the rules' order."""
    gx, _ = _gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    gx_logger = logging.getLogger("great_expectations")
    level = gx_logger.level
    gx_logger.setLevel(logging.WARNING)  # its INFO lines (stores, temporary folders) are not the user's concern
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # in memory only, and no Data Docs site at all (not even a temporary folder for one)
            config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
                                       progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False))
            context = gx.get_context(project_config=config, mode="ephemeral")
            by_rule = _run_suites(gx, context, rules, frames)
    finally:
        gx_logger.setLevel(level)
    return [_summarize(rule, frames[rule.frame], by_rule.get(rule.name)) for rule in rules]


def _run_suites(gx: Any, context: Any, rules: Sequence[Rule], frames: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """``rule name -> GX ExpectationValidationResult``: one pandas asset, suite and validation per frame."""
    source = context.data_sources.add_pandas("flourish-warehouse")
    by_rule: dict[str, Any] = {}
    for frame_name, suite in expectation_suites(rules).items():
        batch = source.add_dataframe_asset(frame_name).add_batch_definition_whole_dataframe("whole")
        suite = context.suites.add(suite)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"flourish-quality-{frame_name}", data=batch, suite=suite))
        outcome = definition.run(batch_parameters={"dataframe": frames[frame_name]}, result_format="COMPLETE")
        for r in outcome.results:
            by_rule[(r.expectation_config.meta or {}).get("flourish_rule")] = r
    return by_rule


# -- from a GX result to the house's result ----------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-able Python values (numpy scalars unwrapped, NaN to None, tuples to lists)."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _judged_columns(rule: Rule) -> list[str]:
    kw = rule.kwargs
    return [kw["column_A"], kw["column_B"]] if "column_A" in kw else [kw["column"]]


def _subset(rule: Rule, frame: pd.DataFrame) -> pd.DataFrame:
    if rule.where is not None and len(frame):
        frame = frame[frame[rule.where[0]] == rule.where[1]]
    return frame.dropna(subset=_judged_columns(rule)) if len(frame) else frame


def _observed(rule: Rule, judged: pd.DataFrame) -> Any:
    cols = _judged_columns(rule)
    if not len(judged):
        return None
    if rule.expectation == "ExpectColumnValuesToBeBetween":
        return {"min": _plain(judged[cols[0]].min()), "max": _plain(judged[cols[0]].max())}
    seen = judged.groupby(cols, sort=True, dropna=True)["n"].sum()
    items = [{"value": _plain(k[0] if len(cols) == 1 and isinstance(k, tuple) else k), "rows": int(v)}
             for k, v in seen.items()]
    return {"distinct": len(items), "values": items[:MAX_OBSERVED_VALUES]}


MEASURES = frozenset({"value", "rows_per_key", "days_outside_window", "randomized", "submissions_per_key",
                      "latest_tied", "arms_per_participant", "days_outside_period"})
"""Columns of the frames that are measurements rather than dimensions: an example shows one only when the rule
judges it (an unknown outcome's examples are per outcome and wave, not per score value)."""


def _examples(rule: Rule, unexpected: pd.DataFrame) -> tuple[dict[str, Any], ...]:
    """The unexpected cells holding most rows, each with its count and without the condition column."""
    if not len(unexpected):
        return ()
    judged = set(_judged_columns(rule))
    keep = [c for c in unexpected.columns if c != "n" and (rule.where is None or c != rule.where[0])
            and (c in judged or c not in MEASURES)]
    cells = unexpected.groupby(keep, sort=True, dropna=False)["n"].sum().reset_index()
    top = cells.sort_values("n", ascending=False, kind="stable").head(MAX_EXAMPLES)
    return tuple({**{c: _plain(row[c]) for c in keep}, "rows": int(row["n"])} for _, row in top.iterrows())


def _failed(rule: Rule, message: str) -> ExpectationResult:
    return ExpectationResult(rule.name, rule.family, _snake(rule.expectation), rule.table, rule.column, rule.severity,
                             False, None, None, None, rule.unit, (), _plain(dict(rule.kwargs)), rule.description,
                             message)


def _snake(class_name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in class_name).lstrip("_")


def _summarize(rule: Rule, frame: pd.DataFrame, result: Any) -> ExpectationResult:
    if result is None:
        return _failed(rule, "Great Expectations returned no result for this expectation")
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return _failed(rule, " ".join(str(info.get("exception_message") or "an exception").split()))
    severity = str(getattr(result.expectation_config.severity, "value", result.expectation_config.severity))
    success = bool(result.success)
    res = result.result or {}
    if rule.frame == "completeness":  # one row per wave: due participants, of whom scored (NaN share: none due)
        w = frame[frame["wave"] == rule.where[1]].iloc[0]
        observed = {"completeness": _plain(w["completeness"]), "due": int(w["due"]), "scored": int(w["scored"])}
        return ExpectationResult(rule.name, rule.family, result.expectation_config.type, rule.table, rule.column,
                                 severity, success, observed, int(w["due"]), int(w["due"] - w["scored"]), rule.unit,
                                 (), _plain(dict(rule.kwargs)), rule.description)
    if rule.frame == "prompts":  # one row per wave: prompts of record, of which answered only late (NaN: none)
        w = frame[frame["wave"] == rule.where[1]].iloc[0]
        observed = {"late_share": _plain(w["late_share"]), "prompted": int(w["prompted"]), "late": int(w["late"])}
        return ExpectationResult(rule.name, rule.family, result.expectation_config.type, rule.table, rule.column,
                                 severity, success, observed, int(w["prompted"]), int(w["late"]), rule.unit,
                                 (), _plain(dict(rule.kwargs)), rule.description)
    if rule.frame == "allocation":
        observed = None
        if len(frame):
            r = frame.iloc[0]
            observed = {"p_value": _plain(r["p_value"]), "chi_square": _plain(r["chi_square"]),
                        "counts": _plain(r["counts"])}
        checked = int(frame["participants"].sum()) if len(frame) else 0
        return ExpectationResult(rule.name, rule.family, result.expectation_config.type, rule.table, rule.column,
                                 severity, success, observed, checked, None, rule.unit, (),
                                 _plain(dict(rule.kwargs)), rule.description)
    # a histogram frame: each row stands for ``n`` warehouse rows (or keys); GX names the unexpected rows
    index: Iterable[Any] = res.get("unexpected_index_list") or []
    unexpected = frame.loc[list(index)] if len(frame) else frame
    judged = _subset(rule, frame)
    return ExpectationResult(
        rule.name, rule.family, result.expectation_config.type, rule.table, rule.column, severity, success,
        _observed(rule, judged), int(judged["n"].sum()) if len(judged) else 0,
        int(unexpected["n"].sum()) if len(unexpected) else 0, rule.unit, _examples(rule, unexpected),
        _plain(dict(rule.kwargs)), rule.description)
