"""The instrument definition contract: what a ``defs/<name>-<version>.yaml`` file may say.

Instruments are data, not code (STYLE.md 3). This pydantic model *is* the file format; its
JSON Schema (``instrument_json_schema()``, also written to ``defs/instrument.schema.json``)
is exported from it, and every file is validated against it on load.

Conventions
- ``items`` is the questionnaire order (PERMA-Profiler is interleaved: the code says the
  position, ``item_labels`` says the domain label, e.g. ``PERMA_1: A1``).
- Every item shares one response scale ``scale_min..scale_max`` (integers).
- A score is ``transform(aggregate(keyed items))`` where aggregate is ``sum`` or ``mean``,
  reverse-keyed items are ``scale_min + scale_max - value`` and transform is
  ``multiplier * x + offset`` (WHO-5 percent = raw x 4).
- Missing items: a score is computed when at most ``max_missing`` of its items are missing;
  a sum is then prorated (mean of answered items x number of items) and flagged; with more
  missing there is no score. Nothing else is ever imputed.
- Bands: ascending list of ``(label, upper)``; a value belongs to the first band whose
  ``upper`` is >= the value (upper bounds inclusive). Prorated, non-integer sums therefore
  fall into the band above when they exceed an integer edge.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_STRICT = ConfigDict(extra="forbid", frozen=True)


class Band(BaseModel):
    model_config = _STRICT
    label: str
    upper: float = Field(description="inclusive upper bound of the band on the score's scale")


class BandScheme(BaseModel):
    """A published set of cut-offs for one score, with where it comes from."""

    model_config = _STRICT
    name: str
    score: str = Field(description="name of the score (in this instrument) the bands apply to")
    source: str
    bands: list[Band] = Field(min_length=1)

    @model_validator(mode="after")
    def _ascending(self) -> BandScheme:
        uppers = [b.upper for b in self.bands]
        if uppers != sorted(uppers) or len(set(uppers)) != len(uppers):
            raise ValueError(f"band scheme {self.name!r}: band upper bounds must strictly ascend, got {uppers}")
        return self


class Score(BaseModel):
    model_config = _STRICT
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    items: list[str] = Field(min_length=1)
    aggregate: Literal["sum", "mean"]
    multiplier: float = 1.0
    offset: float = 0.0
    max_missing: int = Field(ge=0, description="score only when at most this many of its items are missing")
    missing_rule_source: str = "declared by Flourish (no official rule)"
    description: str = ""


class SafetyFlag(BaseModel):
    """A response pattern that must trigger the study's safety protocol."""

    model_config = _STRICT
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Literal["item", "score"]
    target: str = Field(description="item code (kind: item) or score name (kind: score)")
    op: Literal[">", ">="]
    threshold: float
    source: str
    description: str = ""


class Reliability(BaseModel):
    model_config = _STRICT
    statistic: Literal["alpha", "omega", "icc", "retest_r"]
    value: float
    score: str | None = None
    note: str = ""
    citation: str


class Licence(BaseModel):
    model_config = _STRICT
    kind: Literal["free", "attribution", "non_commercial", "registration"]
    wording_allowed: bool = Field(description="may Flourish ship the item wording in this file")
    holder: str = ""
    terms: str = ""


class Instrument(BaseModel):
    """One version of one validated survey instrument."""

    model_config = _STRICT
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    title: str
    citation: str
    doi: str | None = None
    recall_period: str | None = None
    items: list[str] = Field(min_length=1, description="item codes in questionnaire order")
    item_labels: dict[str, str] = Field(default_factory=dict, description="domain labels, e.g. PERMA_1: A1")
    item_text: dict[str, str] = Field(default_factory=dict, description="wording; only when licence.wording_allowed")
    scale_min: int
    scale_max: int
    anchors: dict[int, str] = Field(default_factory=dict)
    reverse_keyed: list[str] = Field(default_factory=list)
    scores: list[Score] = Field(min_length=1)
    bands: list[BandScheme] = Field(default_factory=list)
    safety_flags: list[SafetyFlag] = Field(default_factory=list)
    reliability: list[Reliability] = Field(default_factory=list)
    licence: Licence
    notes: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Instrument:
        where = f"instrument {self.name}-{self.version}"
        if len(set(self.items)) != len(self.items):
            raise ValueError(f"{where}: duplicate item codes")
        if self.scale_min >= self.scale_max:
            raise ValueError(f"{where}: scale_min {self.scale_min} must be below scale_max {self.scale_max}")
        known = set(self.items)
        for label, codes in (
            ("item_labels", self.item_labels),
            ("item_text", self.item_text),
            ("reverse_keyed", self.reverse_keyed),
        ):
            unknown = sorted(set(codes) - known)
            if unknown:
                raise ValueError(f"{where}: {label} names unknown items {unknown}")
        if self.item_text and not self.licence.wording_allowed:
            raise ValueError(f"{where}: item wording shipped although the licence does not allow it")
        bad_anchor = [a for a in self.anchors if not self.scale_min <= a <= self.scale_max]
        if bad_anchor:
            raise ValueError(f"{where}: anchors {bad_anchor} outside {self.scale_min}..{self.scale_max}")
        names = [s.name for s in self.scores]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: duplicate score names")
        for s in self.scores:
            unknown = sorted(set(s.items) - known)
            if unknown:
                raise ValueError(f"{where}: score {s.name} uses unknown items {unknown}")
            if len(set(s.items)) != len(s.items):
                raise ValueError(f"{where}: score {s.name} repeats an item")
            if s.max_missing >= len(s.items):
                raise ValueError(f"{where}: score {s.name} max_missing must be below its {len(s.items)} items")
        for b in self.bands:
            if b.score not in names:
                raise ValueError(f"{where}: band scheme {b.name} refers to unknown score {b.score}")
        for f in self.safety_flags:
            pool = known if f.kind == "item" else set(names)
            if f.target not in pool:
                raise ValueError(f"{where}: safety flag {f.name} refers to unknown {f.kind} {f.target}")
        return self

    def outcome(self, score: str) -> str:
        """The house-wide outcome name, e.g. ``who5.percent``."""
        return f"{self.name}.{score}"

    def score_range(self, score: str) -> tuple[float, float]:
        """Smallest and largest possible value of a score (for clipping and plausibility checks)."""
        sd = self.score_def(score)
        n = len(sd.items) if sd.aggregate == "sum" else 1
        ends = sorted((sd.multiplier * n * self.scale_min + sd.offset, sd.multiplier * n * self.scale_max + sd.offset))
        return float(ends[0]), float(ends[1])

    def score_def(self, score: str) -> Score:
        for s in self.scores:
            if s.name == score:
                return s
        raise KeyError(f"{self.name}-{self.version} has no score {score!r}; it has {[s.name for s in self.scores]}")


def instrument_json_schema() -> dict:
    """JSON Schema of the definition file format, exported from the pydantic model."""
    return Instrument.model_json_schema()
