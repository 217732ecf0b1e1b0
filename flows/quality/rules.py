"""A study's quality rules, generated from its protocol and the instrument definitions (no I/O, no GX).

Each :class:`Rule` is one Great Expectations expectation (its class name and keyword arguments) over one
reduced frame of :mod:`flows.quality.frames`, with a stable name, the warehouse table and column it
judges, a severity, the unit its counts count and one line a data engineer understands. Nothing here
imports Great Expectations (about 10 s): :mod:`flows.quality.validate` turns rules into suites.

Severities say what a failure does (GX's own ``severity`` field, 1.24): ``critical`` stops the pipeline
before analysis and release (:class:`flows.quality.report.QualityGateFailed`), ``warning`` is recorded and
shown, ``info`` is a count worth knowing. The defaults (:data:`DEFAULT_SEVERITY`) make critical what would
make an analysis or a release wrong or meaningless (a value off its scale, a score for an outcome or wave
the protocol does not have, two scores where the model expects one, an arm that does not exist, a broken
randomisation); and warning what the study team must look at but the preregistered plan already handles
(a late response, low completeness, telemetry outside the study period). :class:`QualitySettings` overrides
them per rule or per family, and holds the thresholds; it is the shape a future ``quality:`` section of the
protocol would take (kept out of ``StudyProtocol`` for now: any new protocol field changes every study's
preregistration hash, see ``analysis.prereg.canonical_protocol``).

Two rules are defined once here and used by everything that needs them: :func:`wave_window` (when a
response counts for its wave) and :func:`study_period` (when telemetry may happen).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from schemas.errors import FlourishError
from schemas.protocol import StudyProtocol, Wave

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")

DEFAULT_SEVERITY: dict[str, Severity] = {
    "item_code_known": "critical",
    "item_in_range": "critical",
    "score_outcome_known": "critical",
    "score_wave_known": "critical",
    "score_in_range": "critical",
    "score_unique": "critical",
    "response_wave_instrument_known": "critical",
    "response_in_wave_window": "warning",
    "response_participant_randomized": "warning",
    "response_latest_unambiguous": "warning",
    "response_resubmitted": "info",
    "assignment_arm_allowed": "critical",
    "assignment_one_arm": "critical",
    "assignment_ratio_srm": "critical",
    "completeness": "warning",
    "prompt_late_share": "warning",
    "event_in_study_period": "warning",
}
"""Every rule family and its default severity (the families are the names without ``[parameter]``)."""

COMPLETENESS_MIN = 0.70
"""Default least share of due participants with a primary-outcome score at a wave. Published longitudinal and
EMA compliance sits near 79-85% (substance-use EMA pooled 78.7%, k = 128; chronic-pain IPD 85%, n = 701:
research/orchestration.md G2); 70% is the alert line suggested there for any arm x wave."""


LATE_SHARE_MAX = 0.10
"""Default largest share of a wave's prompts answered only outside the declared response window
(``relations.compliance_table``): an alert line chosen here, not a published figure; a study sets its own with
``QualitySettings.late_share_max``."""


def _srm_threshold_default() -> float:
    from analysis.randomization import srm_test

    return float(inspect.signature(srm_test).parameters["threshold"].default)


class QualityConfigError(FlourishError, ValueError):
    """Quality settings that name an unknown rule or hold an impossible threshold."""


@dataclass(frozen=True)
class QualitySettings:
    """Overrides of the defaults. ``severity`` maps a rule name (``completeness[m12]``) or a family
    (``completeness``) to a severity; a name wins over its family. ``srm_p_min`` defaults to the threshold of
    ``analysis.randomization.srm_test`` (p < 0.0005 is a mismatch, Fabijan et al. 2019)."""

    severity: Mapping[str, Severity] = field(default_factory=dict)
    completeness_min: float = COMPLETENESS_MIN
    srm_p_min: float | None = None
    late_share_max: float = LATE_SHARE_MAX

    def __post_init__(self) -> None:
        for key, value in self.severity.items():
            if value not in SEVERITIES:
                raise QualityConfigError(f"quality severity of {key!r} must be one of {', '.join(SEVERITIES)}, not {value!r}")
            if family_of(key) not in DEFAULT_SEVERITY:
                raise QualityConfigError(
                    f"quality severity names {key!r}, which is no quality rule; the families are "
                    f"{', '.join(DEFAULT_SEVERITY)}")
        if not 0.0 <= self.late_share_max <= 1.0:
            raise QualityConfigError(f"late_share_max must be a share in [0, 1], not {self.late_share_max}")
        if not 0.0 <= self.completeness_min <= 1.0:
            raise QualityConfigError(f"completeness_min must be a share in [0, 1], not {self.completeness_min}")
        if self.srm_p_min is not None and not 0.0 < self.srm_p_min < 1.0:
            raise QualityConfigError(f"srm_p_min must be a p-value in (0, 1), not {self.srm_p_min}")

    @property
    def srm_threshold(self) -> float:
        return _srm_threshold_default() if self.srm_p_min is None else float(self.srm_p_min)

    def severity_of(self, name: str) -> Severity:
        return self.severity.get(name) or self.severity.get(family_of(name)) or DEFAULT_SEVERITY[family_of(name)]


_FAMILY = re.compile(r"^([a-z_]+)(\[.*\])?$")


def family_of(name: str) -> str:
    m = _FAMILY.match(name)
    return m.group(1) if m else name


# -- the two time rules ----------------------------------------------------------------------


@dataclass(frozen=True)
class WaveWindow:
    """When a response counts for a wave, in days since the participant's assignment (both ends inclusive)."""

    wave: str
    opens_days: float
    closes_days: float


def wave_window(wave: Wave) -> WaveWindow:
    """The one definition of a wave's response window: ``day +/- window_days`` from the participant's
    assignment (``schemas.protocol.Wave``). A baseline window therefore opens before the assignment (baseline
    answers are often collected before randomisation). When the protocol gains explicit open / expiry / grace
    windows, this function changes and every rule that uses it (window, completeness, study period) follows."""
    return WaveWindow(wave.name, float(wave.day - wave.window_days), float(wave.day + wave.window_days))


@dataclass(frozen=True)
class StudyPeriod:
    starts: datetime
    ends: datetime


def study_period(protocol: StudyProtocol, first_assigned_at: datetime, last_assigned_at: datetime) -> StudyPeriod:
    """When a study's telemetry may happen: from the first assignment minus the longest look-back (a wave
    window opening before assignment, or a surrogate's pre-assignment window, which CUPED reads:
    ``schemas.warehouse.relations.telemetry_metric``) to the last assignment plus the longest follow-up (the
    last wave window's close, or a surrogate's window)."""
    windows = [wave_window(w) for w in protocol.waves]
    surrogate_days = [float(s.window_days) for s in protocol.surrogates]
    before = min([w.opens_days for w in windows] + [-d for d in surrogate_days] + [0.0])
    after = max([w.closes_days for w in windows] + surrogate_days)
    return StudyPeriod(first_assigned_at + timedelta(days=before), last_assigned_at + timedelta(days=after))


# -- what the protocol and the instruments allow ---------------------------------------------


@dataclass(frozen=True)
class Bounds:
    lower: float | None
    upper: float | None
    source: str


def instrument_score_bounds(protocol: StudyProtocol) -> dict[str, Bounds]:
    """Every score of every instrument the protocol administers (the scoring stage writes all of them, e.g.
    ``who5.raw`` beside ``who5.percent``), with its range from the instrument's scale
    (``Instrument.score_range``), the hull over the shipped versions (scores do not record a version)."""
    import instruments

    out: dict[str, Bounds] = {}
    for name in protocol.instruments():
        versions = instruments.known_versions().get(name) or [instruments.load(name).version]
        defs = [instruments.load(name, v) for v in versions]
        for score in {s.name for d in defs for s in d.scores}:
            ranges = [d.score_range(score) for d in defs if score in {s.name for s in d.scores}]
            label = ", ".join(f"{d.name}-{d.version}" for d in defs)
            out[f"{name}.{score}"] = Bounds(min(r[0] for r in ranges), max(r[1] for r in ranges),
                                            f"scale of {label}")
    return dict(sorted(out.items()))


def score_bounds(protocol: StudyProtocol) -> dict[str, Bounds]:
    """Bounds of every known outcome that has any: instrument scores from the scale, outcomes delivered from
    outside from the protocol's declared ``lower_bound`` / ``upper_bound`` (one-sided when only one is
    declared; none when neither is)."""
    out = instrument_score_bounds(protocol)
    for o in protocol.outcomes:
        if o.source == "external" and (o.lower_bound is not None or o.upper_bound is not None):
            out[o.name] = Bounds(o.lower_bound, o.upper_bound, "declared in the protocol")
    return out


def known_outcomes(protocol: StudyProtocol) -> list[str]:
    names = set(instrument_score_bounds(protocol)) | {o.name for o in protocol.outcomes}
    return sorted(names)


def allowed_outcome_waves(protocol: StudyProtocol) -> list[tuple[str, str]]:
    """(outcome, wave) pairs a score may have: an instrument's scores at the waves that administer it; an
    outcome delivered from outside at any wave."""
    pairs = set()
    for outcome in instrument_score_bounds(protocol):
        inst = outcome.split(".", 1)[0]
        pairs |= {(outcome, w.name) for w in protocol.waves if inst in w.instruments}
    for o in protocol.outcomes:
        if o.source == "external":
            pairs |= {(o.name, w.name) for w in protocol.waves}
    return sorted(pairs)


def item_scales(protocol: StudyProtocol) -> dict[str, tuple[int, int, list[str]]]:
    """``instrument -> (lowest, highest, item codes)`` over the shipped versions, from
    ``instruments.item_bounds()``."""
    import instruments

    wanted = set(protocol.instruments())
    out: dict[str, tuple[int, int, list[str]]] = {}
    for name, _version, code, lo, hi in instruments.item_bounds():
        if name not in wanted:
            continue
        cur = out.get(name)
        if cur is None:
            out[name] = (lo, hi, [code])
        else:
            out[name] = (min(cur[0], lo), max(cur[1], hi), cur[2] if code in cur[2] else [*cur[2], code])
    return dict(sorted(out.items()))


def primary_waves(protocol: StudyProtocol) -> list[Wave]:
    """The waves that measure the primary outcome: those administering its instrument (every wave for an
    outcome delivered from outside). Completeness is judged at these."""
    p = protocol.primary_outcome
    if p.source == "external" or p.instrument is None:
        return list(protocol.waves)
    return [w for w in protocol.waves if p.instrument in w.instruments]


# -- the rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One expectation: GX class ``expectation`` with ``kwargs`` over frame ``frame`` (rows where
    ``where[0] == where[1]`` when given), judging ``table.column`` of the warehouse."""

    name: str
    frame: str
    table: str
    column: str
    expectation: str
    kwargs: Mapping[str, Any]
    severity: Severity
    unit: str
    description: str
    where: tuple[str, str] | None = None

    @property
    def family(self) -> str:
        return family_of(self.name)


def _fmt(x: float | None) -> str:
    return "-inf" if x is None else f"{x:g}"


def build_rules(protocol: StudyProtocol, settings: QualitySettings | None = None) -> tuple[Rule, ...]:
    """Every rule of the study, in a stable order (grouped by frame)."""
    s = settings or QualitySettings()
    sev = s.severity_of
    rules: list[Rule] = []

    def add(name: str, frame: str, table: str, column: str, expectation: str, kwargs: dict, unit: str,
            description: str, where: tuple[str, str] | None = None) -> None:
        rules.append(Rule(name, frame, table, column, expectation, kwargs, sev(name), unit, description, where))

    scales = item_scales(protocol)
    add("item_code_known", "item_values", "response_items", "instrument, item_code",
        "ExpectColumnPairValuesToBeInSet",
        {"column_A": "instrument", "column_B": "item_code",
         "value_pairs_set": [(i, c) for i, (_, _, codes) in scales.items() for c in codes]},
        "item answers", "every stored item answer names an item of its instrument")
    for inst, (lo, hi, _) in scales.items():
        add(f"item_in_range[{inst}]", "item_values", "response_items", "value", "ExpectColumnValuesToBeBetween",
            {"column": "value", "min_value": lo, "max_value": hi}, "item answers",
            f"{inst} item answers lie on the instrument's response scale {lo}..{hi}", ("instrument", inst))

    add("score_outcome_known", "score_values", "scores", "outcome", "ExpectColumnValuesToBeInSet",
        {"column": "outcome", "value_set": known_outcomes(protocol)}, "scores",
        "every score is of a protocol outcome or a score of an instrument the protocol administers")
    add("score_wave_known", "score_values", "scores", "outcome, wave", "ExpectColumnPairValuesToBeInSet",
        {"column_A": "outcome", "column_B": "wave", "value_pairs_set": allowed_outcome_waves(protocol)}, "scores",
        "every score is at a protocol wave that administers its instrument")
    for outcome, b in score_bounds(protocol).items():
        kwargs: dict[str, Any] = {"column": "value"}
        if b.lower is not None:
            kwargs["min_value"] = b.lower
        if b.upper is not None:
            kwargs["max_value"] = b.upper
        add(f"score_in_range[{outcome}]", "score_values", "scores", "value", "ExpectColumnValuesToBeBetween",
            kwargs, "scores", f"{outcome} scores lie in {_fmt(b.lower)}..{_fmt(b.upper)} ({b.source})",
            ("outcome", outcome))
    add("score_unique", "score_keys", "scores", "participant, wave, outcome", "ExpectColumnValuesToBeBetween",
        {"column": "rows_per_key", "min_value": 1, "max_value": 1}, "score keys",
        "one stored score per participant x wave x outcome (resubmissions are resolved before scoring)")

    pairs = sorted({(w.name, i) for w in protocol.waves for i in w.instruments})
    add("response_wave_instrument_known", "responses", "latest_responses", "wave, instrument",
        "ExpectColumnPairValuesToBeInSet",
        {"column_A": "wave", "column_B": "instrument", "value_pairs_set": pairs}, "responses",
        "every response is to an instrument its wave administers")
    add("response_in_wave_window", "responses", "latest_responses", "submitted_at",
        "ExpectColumnValuesToBeBetween", {"column": "days_outside_window", "min_value": 0, "max_value": 0},
        "responses", "the response that counts (the latest) was submitted inside its wave's window "
        "(day +/- window_days from assignment); the figure is whole days outside")
    add("response_participant_randomized", "responses", "latest_responses", "participant",
        "ExpectColumnValuesToBeInSet", {"column": "randomized", "value_set": [True]}, "responses",
        "every response is from a randomised participant (others cannot enter the analysis)")
    add("response_latest_unambiguous", "responses", "responses", "submitted_at", "ExpectColumnValuesToBeInSet",
        {"column": "latest_tied", "value_set": [False]}, "response keys",
        "no two submissions of a participant x wave x instrument share the latest time (the response id "
        "would decide which counts)")
    add("response_resubmitted", "responses", "responses", "response_id", "ExpectColumnValuesToBeBetween",
        {"column": "submissions_per_key", "min_value": 1, "max_value": 1}, "response keys",
        "resubmissions (allowed: the latest counts)")

    add("assignment_arm_allowed", "assignments", "assignments", "arm", "ExpectColumnValuesToBeInSet",
        {"column": "arm", "value_set": list(protocol.arm_names)}, "assignments",
        f"every assignment is to an arm of the protocol ({', '.join(protocol.arm_names)})")
    add("assignment_one_arm", "assignments", "assignments", "participant, arm", "ExpectColumnValuesToBeBetween",
        {"column": "arms_per_participant", "min_value": 1, "max_value": 1}, "assignments",
        "each participant is assigned to one arm")
    ratios = ", ".join(f"{a.allocation:g}" for a in protocol.arms)
    add("assignment_ratio_srm", "allocation", "study_arms", "arm", "ExpectColumnValuesToBeBetween",
        {"column": "p_value", "min_value": s.srm_threshold}, "participants",
        f"arm counts match the allocation ratios {ratios} (sample-ratio-mismatch chi-square, "
        f"p >= {s.srm_threshold:g})")

    primary = protocol.primary_outcome.name
    for w in primary_waves(protocol):
        add(f"completeness[{w.name}]", "completeness", "study_scores", "value", "ExpectColumnValuesToBeBetween",
            {"column": "completeness", "min_value": s.completeness_min}, "participants",
            f"share of randomised participants whose {w.name} window has closed with a {primary} score at "
            f"{w.name} >= {s.completeness_min:.0%}", ("wave", w.name))

    for w in protocol.waves:
        add(f"prompt_late_share[{w.name}]", "prompts", "prompts", "completed_at", "ExpectColumnValuesToBeBetween",
            {"column": "late_share", "max_value": s.late_share_max}, "prompts",
            f"share of {w.name} prompts answered only outside the wave's response window <= {s.late_share_max:.0%} "
            "(relations.compliance_table; not judged without prompts)", ("wave", w.name))

    add("event_in_study_period", "events", "events", "ts", "ExpectColumnValuesToBeBetween",
        {"column": "days_outside_period", "min_value": 0, "max_value": 0}, "events",
        "telemetry lies in the study period (first assignment minus the longest look-back to the last "
        "assignment plus the last wave's window); the figure is whole days outside")
    return tuple(rules)
