"""Landing records: what partners drop into a landing folder, one JSON object per line.

These pydantic models are the contract's *documentation and edge check*: they give the JSON
Schema partners validate against (``flourish schema export``) and explain a rejected row in
words. The ingest's hot path checks the same rules in DuckDB, vectorized; a test keeps the two
in agreement on generated rows.

Timestamps are ISO 8601 *with* an offset (``2026-11-01T09:30:00+01:00`` or ``...Z``); a naive
timestamp is bad input because a study runs across time zones and an hour's error moves a
response across a wave window.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

SCOPES = ("telemetry", "surveys", "linkage", "aggregate_release")
EVENT_TYPES = ("session_start", "message", "feature_exposure", "feature_opt_in", "feature_opt_out", "session_end")
RECORD_KINDS = ("consents", "assignments", "responses", "scores", "events")

# ISO 8601 date-time with a mandatory offset. Shared with the SQL path (flows/ingest.py). Hours 00-23,
# minutes and seconds 00-59, offsets within a day: a cast alone would take "24:00", "+99:99" or "+24:00"
# and move the instant by hours or days.
ISO_WITH_OFFSET = (r"^\d{4}-\d{2}-\d{2}[T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,9})?)?"
                   r"(Z|[+-]([01]\d|2[0-3])(:?[0-5]\d)?)$")
_ISO = re.compile(ISO_WITH_OFFSET)

Scope = Literal["telemetry", "surveys", "linkage", "aggregate_release"]
EventType = Literal["session_start", "message", "feature_exposure", "feature_opt_in", "feature_opt_out", "session_end"]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _aware(value: object) -> object:
    """Refuse naive timestamps before pydantic parses them (AwareDatetime alone accepts dates)."""
    if isinstance(value, str) and not _ISO.match(value):
        raise ValueError("timestamp must be ISO 8601 with a UTC offset, e.g. 2026-11-01T09:30:00+00:00")
    return value


class Consent(Record):
    participant_id: str = Field(min_length=1, max_length=256)
    consent_version: str = Field(min_length=1, max_length=64)
    scopes: list[Scope]
    granted_at: AwareDatetime
    withdrawn_at: AwareDatetime | None = None

    _ts = field_validator("granted_at", "withdrawn_at", mode="before")(_aware)


class Assignment(Record):
    participant_id: str = Field(min_length=1, max_length=256)
    study_id: str = Field(min_length=1)
    arm: str = Field(min_length=1)
    assigned_at: AwareDatetime
    stratum: str | None = None

    _ts = field_validator("assigned_at", mode="before")(_aware)


class Response(Record):
    response_id: str = Field(min_length=1, max_length=256)
    participant_id: str = Field(min_length=1, max_length=256)
    study_id: str = Field(min_length=1)
    instrument: str = Field(min_length=1)
    instrument_version: str = Field(min_length=1)
    wave: str = Field(min_length=1)
    submitted_at: AwareDatetime
    items: dict[str, int | None] = Field(description="item_code -> integer answer, or null when skipped")

    _ts = field_validator("submitted_at", mode="before")(_aware)


class ExternalScore(Record):
    """An outcome scored outside Flourish (a licensed instrument, a clinic's totals)."""

    participant_id: str = Field(min_length=1, max_length=256)
    study_id: str = Field(min_length=1)
    wave: str = Field(min_length=1)
    outcome: str = Field(min_length=1)
    value: float
    scored_at: AwareDatetime

    _ts = field_validator("scored_at", mode="before")(_aware)


class Event(Record):
    event_id: str = Field(min_length=1, max_length=256)
    participant_id: str = Field(min_length=1, max_length=256)
    study_id: str = Field(min_length=1)
    ts: AwareDatetime
    session_id: str = Field(min_length=1)
    type: EventType
    feature: str | None = None
    value: float | None = None

    _ts = field_validator("ts", mode="before")(_aware)


RECORD_MODELS: dict[str, type[Record]] = {
    "consents": Consent,
    "assignments": Assignment,
    "responses": Response,
    "scores": ExternalScore,
    "events": Event,
}


def parse_timestamp(value: str) -> datetime:
    """Parse an offset-aware ISO 8601 timestamp or raise ValueError (naive ones included)."""
    _aware(value)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
