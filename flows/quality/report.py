"""What a quality run found: frozen values, and the error a critical failure raises.

A :class:`QualityReport` holds one :class:`ExpectationResult` per rule, in the rules' order. Counts say
their unit (``unit``: scores, responses, participants, ...); ``examples`` are a few unexpected values or
cells with how many rows each stands for, never a participant id or pseudonym (the frames they come from
have no participant column: ``flows.quality.frames``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from flows.quality.rules import Severity
from schemas.errors import FlourishError


@dataclass(frozen=True)
class ExpectationResult:
    name: str
    family: str
    expectation_type: str
    table: str
    column: str
    severity: Severity
    success: bool
    observed: Any
    checked_count: int | None
    unexpected_count: int | None
    unit: str
    examples: tuple[Mapping[str, Any], ...]
    rule: Mapping[str, Any]
    description: str
    error: str | None = None

    @property
    def failed(self) -> bool:
        return not self.success

    def headline(self) -> str:
        """``score_in_range[who5.percent] (3 of 1,200 scores)``: the name and, when counted, how many broke it."""
        if self.error:
            return f"{self.name} (could not run: {self.error})"
        if self.unexpected_count and self.checked_count is not None:
            return f"{self.name} ({self.unexpected_count:,} of {self.checked_count:,} {self.unit})"
        if isinstance(self.observed, Mapping) and "p_value" in self.observed:
            return f"{self.name} (p = {self.observed['p_value']:.3g})"
        if isinstance(self.observed, Mapping) and self.observed.get("completeness") is not None:
            return f"{self.name} ({self.observed['completeness']:.0%})"
        return self.name


@dataclass(frozen=True)
class QualityReport:
    run_id: str
    study_id: str
    checked_at: datetime
    as_of: datetime
    run_seconds: float
    results: tuple[ExpectationResult, ...]
    gx_version: str

    @property
    def critical_failures(self) -> tuple[ExpectationResult, ...]:
        return tuple(r for r in self.results if r.failed and r.severity == "critical")

    @property
    def warnings(self) -> tuple[ExpectationResult, ...]:
        return tuple(r for r in self.results if r.failed and r.severity == "warning")

    @property
    def notes(self) -> tuple[ExpectationResult, ...]:
        return tuple(r for r in self.results if r.failed and r.severity == "info")

    @property
    def passed(self) -> bool:
        """No critical expectation failed: the pipeline may go on to analysis and release."""
        return not self.critical_failures

    @property
    def verdict(self) -> str:
        if not self.passed:
            return "failed"
        return "passed with warnings" if self.warnings else "passed"

    def result(self, name: str) -> ExpectationResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"run {self.run_id} has no expectation {name!r}")

    def raise_for_critical(self) -> None:
        """Raise :class:`QualityGateFailed` when a critical expectation failed."""
        if not self.passed:
            raise QualityGateFailed(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "study_id": self.study_id, "checked_at": self.checked_at.isoformat(),
            "as_of": self.as_of.isoformat(), "run_seconds": self.run_seconds, "verdict": self.verdict,
            "gx_version": self.gx_version,
            "counts": {"expectations": len(self.results), "critical_failed": len(self.critical_failures),
                       "warnings_failed": len(self.warnings), "info_failed": len(self.notes)},
            "expectations": [{**asdict(r), "examples": [dict(e) for e in r.examples], "rule": dict(r.rule)}
                             for r in self.results],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


class QualityGateFailed(FlourishError):
    """A critical data-quality expectation failed: analysis and release must not run on this warehouse.

    The message is one sentence naming every failed critical expectation; ``report`` holds the whole run
    (stored in ``quality_results`` before this is raised)."""

    def __init__(self, report: QualityReport):
        self.report = report
        failed = report.critical_failures
        names = "; ".join(r.headline() for r in failed)
        noun = "expectation" if len(failed) == 1 else "expectations"
        super().__init__(
            f"data-quality gate of study {report.study_id} failed in run {report.run_id}: {len(failed)} critical "
            f"{noun} failed: {names}")
