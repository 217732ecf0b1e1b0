"""Landing records: what partners drop into a landing folder, one JSON object per line. The ONE contract.

The pydantic models below are the whole landing contract. Each field is written with one of a handful of
*field forms* (:data:`Id`, :func:`Text`, :data:`Timestamp`, :data:`Number`, an event type, :data:`Scopes`,
:data:`Items`), annotated types that carry both the pydantic validation and a :class:`Form` marker.
:func:`field_specs` reads the markers back as :class:`FieldSpec` values, and the ingest generates its
vectorised SQL from them (``flows/ingest/contract.py``); a field written with any other type is refused by
:func:`field_specs`, so the models, the JSON Schema partners validate against (``flourish schema export``)
and the ingest cannot drift apart. ``tests/schemas/test_contracts.py`` feeds the same generated lines, valid
and invalid of every kind, to :func:`parse_line` and to the ingest and holds them to the same answer.

:func:`parse_line` is the contract for one landing line: strict JSON (RFC 8259: no ``NaN``, no trailing
comma, no repeated key at any depth, valid Unicode), at most :data:`MAX_ROW_BYTES`, then the model.

Scalars are read as JSON types, not coerced: a text field needs a JSON string, a number a JSON number
(``true`` is not 1). Two lax forms are part of the contract because CSV holds only text: a number may be
written as a string matching :data:`NUMBER`, an item answer as a string matching :data:`INTEGER` (a
numeric string's surrounding spaces, and only spaces, are ignored).

Timestamps are ISO 8601 *with* an offset (``2026-11-01T09:30:00+01:00`` or ``...Z``) at an instant in the
years 1 to 9999 in UTC; a naive timestamp is bad input because a study runs across time zones and an hour's
error moves a response across a wave window. Digits past microseconds are dropped (as DuckDB does).
"""

from __future__ import annotations

import json
import math
import re
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (AwareDatetime, BaseModel, BeforeValidator, ConfigDict, StringConstraints, ValidationError,
                      WithJsonSchema, model_validator)
from pydantic_core import PydanticCustomError
from pydantic.fields import FieldInfo

SCOPES = ("telemetry", "surveys", "linkage", "aggregate_release")
EVENT_TYPES = ("session_start", "message", "feature_exposure", "feature_opt_in", "feature_opt_out", "session_end")
RECORD_KINDS = ("consents", "assignments", "participants", "responses", "scores", "events", "prompts")

MAX_ROW_BYTES = 16 << 20
"""A landing row (a JSON line, a CSV line) is at most 16 MiB, DuckDB's own default ``maximum_object_size``;
a longer row is refused whole (``row_too_large``) and never held in memory whole."""

ID_CHARS = 256
TEXT_CHARS = 1024

# ISO 8601 date-time with a mandatory offset. Hours 00-23, minutes and seconds 00-59, offsets within a day:
# a cast alone would take "24:00", "+99:99" or "+24:00" and move the instant by hours or days.
ISO_WITH_OFFSET = (r"^(\d{4})-(\d{2})-(\d{2})[T ]([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d)(?:\.(\d{1,9}))?)?"
                   r"(Z|([+-])([01]\d|2[0-3])(?::?([0-5]\d))?)$")
NAIVE_TS = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?$"
NUMBER = r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$"
INTEGER = r"^-?\d+(\.0*)?$"
_ISO = re.compile(ISO_WITH_OFFSET)
_NUMBER = re.compile(NUMBER)
_INTEGER = re.compile(INTEGER)

Scope = Literal["telemetry", "surveys", "linkage", "aggregate_release"]
EventType = Literal["session_start", "message", "feature_exposure", "feature_opt_in", "feature_opt_out", "session_end"]

FormName = Literal["text", "timestamp", "number", "enum", "scopes", "items", "characteristics", "timezone"]

TIME_ZONES: tuple[str, ...] = tuple(sorted(zoneinfo.available_timezones() - {"localtime", "posixrules", "Factory"}))
"""The IANA time zone names a landing record may give (the tz database this Python reads, less the names that are
files of the database rather than zones). ``tests/schemas/test_prompts.py`` holds DuckDB's ICU to knowing each, so
the warehouse relations that compute a local time from a stored name never meet one they cannot read."""


@dataclass(frozen=True)
class Form:
    """The marker a field form carries in its ``Annotated`` metadata; :func:`field_specs` reads it."""

    name: FormName
    max_chars: int | None = None


@dataclass(frozen=True)
class FieldSpec:
    """One field of a record kind, as the ingest's SQL needs it (flows/ingest/contract.py)."""

    name: str
    form: FormName
    required: bool
    max_chars: int | None = None  # text: 1..max_chars characters (Unicode code points)
    values: tuple[str, ...] = ()  # enum: the allowed values; scopes: the allowed scope names; timezone: TIME_ZONES


# -- the field forms -------------------------------------------------------------------------------------

def _json_string(value: object) -> str:
    """A JSON string of valid Unicode (no lone surrogate: it has no UTF-8 form, and DuckDB refuses it)."""
    if not isinstance(value, str):
        raise ValueError("must be a JSON string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode") from None
    return value


def Text(max_chars: int) -> Any:  # noqa: N802 - a type factory, read like a type
    """A JSON string of 1..``max_chars`` characters."""
    return Annotated[str, BeforeValidator(_json_string), StringConstraints(min_length=1, max_length=max_chars),
                     Form("text", max_chars)]


Id = Text(ID_CHARS)


def parse_timestamp(value: object) -> datetime:
    """An offset-aware ISO 8601 timestamp of the contract as a datetime, or ValueError (naive ones included).

    The instant must lie in the years 1 to 9999 in UTC; digits past microseconds are dropped."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 timestamp string")
    m = _ISO.match(value)
    if not m:
        raise ValueError("must be ISO 8601 with a UTC offset, e.g. 2026-11-01T09:30:00+00:00")
    year, month, day, hour, minute, second, fraction, zone, sign, off_h, off_m = m.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        local = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro)
    except ValueError:
        raise ValueError("is not a calendar date and time") from None
    offset = timedelta(0) if zone == "Z" else (1 if sign == "+" else -1) * timedelta(hours=int(off_h),
                                                                                   minutes=int(off_m or 0))
    try:
        utc = local - offset  # an instant before year 1 or after year 9999 in UTC overflows here
    except OverflowError:
        raise ValueError("is outside the years 1 to 9999 in UTC") from None
    return utc.replace(tzinfo=timezone.utc).astimezone(timezone(offset))


Timestamp = Annotated[AwareDatetime, BeforeValidator(parse_timestamp), Form("timestamp"),
                      WithJsonSchema({"type": "string", "pattern": ISO_WITH_OFFSET})]


def _number(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    if isinstance(value, str):
        text = value.strip(" ")
        if not _NUMBER.match(text):
            raise ValueError("must be a number")
        value = float(text)
    if not isinstance(value, (int, float)):
        raise ValueError("must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("must be a finite number") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


Number = Annotated[float, BeforeValidator(_number), Form("number"),
                   WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "pattern": NUMBER}]})]


def _integer(value: object) -> int:
    """An item answer: a JSON integer, a number with no fraction (``3.0``), or a string matching INTEGER."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not true or false")
    if isinstance(value, str):
        text = value.strip(" ")
        if not _INTEGER.match(text):
            raise ValueError("must be an integer")
        return int(text.split(".")[0])
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise ValueError("must be an integer")


Integer = Annotated[int, BeforeValidator(_integer),
                    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string", "pattern": INTEGER}]})]
ItemCode = Annotated[str, BeforeValidator(_json_string)]

def _time_zone(value: object) -> str:
    """An IANA time zone name (``Europe/London``), as a JSON string."""
    value = _json_string(value)
    if value not in _TIME_ZONE_SET:
        raise ValueError("must be an IANA time zone name such as Europe/London")
    return value


_TIME_ZONE_SET = frozenset(TIME_ZONES)
TimeZoneName = Annotated[str, BeforeValidator(_time_zone), Form("timezone", 64),
                         WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 64,
                                         "description": "IANA time zone name, e.g. Europe/London"})]

Scopes = Annotated[list[Scope], Form("scopes")]
Items = Annotated[dict[ItemCode, Integer | None], Form("items")]


def _characteristic(value: object) -> float | str | None:
    """A baseline characteristic's value: a finite JSON number, a JSON string of 1..TEXT_CHARS characters (a level
    of a categorical covariate, or a number written as text, as CSV writes it), or null (not recorded)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = _json_string(value)
        if not 1 <= len(text) <= TEXT_CHARS:
            raise ValueError(f"must be 1..{TEXT_CHARS} characters")
        return text
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a number, a string or null")
    return _number(value)


CharacteristicValue = Annotated[float | str | None, BeforeValidator(_characteristic),
                                WithJsonSchema({"anyOf": [{"type": "number"},
                                                          {"type": "string", "minLength": 1, "maxLength": TEXT_CHARS},
                                                          {"type": "null"}]})]
Characteristics = Annotated[dict[ItemCode, CharacteristicValue], Form("characteristics")]


# -- the records ------------------------------------------------------------------------------------------

class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Consent(Record):
    participant_id: Id
    consent_version: Text(64)
    scopes: Scopes
    granted_at: Timestamp
    withdrawn_at: Timestamp | None = None


class Assignment(Record):
    participant_id: Id
    study_id: Text(TEXT_CHARS)
    arm: Text(TEXT_CHARS)
    assigned_at: Timestamp
    stratum: Text(TEXT_CHARS) | None = None


class Participant(Record):
    """A participant's baseline characteristics (antidepressant use, episode length, age band), measured before
    randomisation and sent by a partner. Which keys are allowed, and which levels a categorical one takes, is the
    protocol's business (``baseline_covariates``): the ingest quarantines an undeclared key or a value outside the
    declared levels, naming the covariate, never the value."""

    participant_id: Id
    study_id: Text(TEXT_CHARS)
    recorded_at: Timestamp
    characteristics: Characteristics  # covariate name -> number, level (text) or null (not recorded)
    stratum: Text(TEXT_CHARS) | None = None


class Response(Record):
    response_id: Id
    participant_id: Id
    study_id: Text(TEXT_CHARS)
    instrument: Text(TEXT_CHARS)
    instrument_version: Text(TEXT_CHARS)
    wave: Text(TEXT_CHARS)
    submitted_at: Timestamp
    items: Items  # item_code -> integer answer, or null when skipped


class ExternalScore(Record):
    """An outcome scored outside Flourish (a licensed instrument, a clinic's totals)."""

    participant_id: Id
    study_id: Text(TEXT_CHARS)
    wave: Text(TEXT_CHARS)
    outcome: Text(TEXT_CHARS)
    value: Number
    scored_at: Timestamp


class Event(Record):
    event_id: Id
    participant_id: Id
    study_id: Text(TEXT_CHARS)
    ts: Timestamp
    session_id: Text(TEXT_CHARS)
    type: EventType
    feature: Text(TEXT_CHARS) | None = None
    value: Number | None = None


class Prompt(Record):
    """One survey prompt's life: when it was scheduled (under which version of the schedule), sent, opened,
    started, completed or expired, and the participant's IANA time zone when it was scheduled.

    ``instrument`` absent: the prompt is for the whole wave (every instrument the wave administers). The times
    must be in order where present (:data:`ORDER_RULES`): a prompt is not sent before it is scheduled, opened
    before it is sent, and so on; a line that breaks the order is refused as ``timestamp_order``. A prompt may be
    completed after it expired (a late answer): that order is not constrained."""

    prompt_id: Id
    participant_id: Id
    study_id: Text(TEXT_CHARS)
    wave: Text(TEXT_CHARS)
    instrument: Text(TEXT_CHARS) | None = None
    schedule_version: Text(64)
    scheduled_at: Timestamp
    sent_at: Timestamp | None = None
    opened_at: Timestamp | None = None
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    expired_at: Timestamp | None = None
    timezone: TimeZoneName

    @model_validator(mode="after")
    def _in_order(self) -> Prompt:
        for earlier, later in ORDER_RULES["prompts"]:
            a, b = getattr(self, earlier), getattr(self, later)
            if a is not None and b is not None and b < a:
                raise PydanticCustomError("timestamp_order", "{later} is before {earlier}",
                                          {"earlier": earlier, "later": later})
        return self


_PROMPT_CHAIN = ("scheduled_at", "sent_at", "opened_at", "started_at", "completed_at")
ORDER_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "prompts": tuple((a, b) for i, a in enumerate(_PROMPT_CHAIN) for b in _PROMPT_CHAIN[i + 1:])
    + (("scheduled_at", "expired_at"), ("sent_at", "expired_at")),
}
"""Per record kind, pairs of timestamp fields ``(earlier, later)`` that must not be out of order when both are
present; the model refuses such a record (``timestamp_order``) and the ingest's SQL is generated from the same
pairs (``flows/ingest/contract.py``)."""


RECORD_MODELS: dict[str, type[Record]] = {
    "consents": Consent,
    "assignments": Assignment,
    "participants": Participant,
    "responses": Response,
    "scores": ExternalScore,
    "events": Event,
    "prompts": Prompt,
}


def _spec(name: str, info: FieldInfo) -> FieldSpec:
    annotation, metadata = info.annotation, list(info.metadata)
    args = get_args(annotation)
    if type(None) in args:  # "X | None": the form is X's
        (annotation,) = [a for a in args if a is not type(None)]
    if get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        metadata += extra
    forms = [m for m in metadata if isinstance(m, Form)]
    if get_origin(annotation) is Literal:
        return FieldSpec(name, "enum", info.is_required(), values=tuple(get_args(annotation)))
    if len(forms) != 1:
        raise TypeError(f"field {name} is not written with one of the contract's field forms")
    form = forms[0]
    values = (tuple(get_args(get_args(annotation)[0])) if form.name == "scopes"
              else TIME_ZONES if form.name == "timezone" else ())
    return FieldSpec(name, form.name, info.is_required(), form.max_chars, values)


def field_specs(kind: str) -> tuple[FieldSpec, ...]:
    """The fields of a record kind in the model's order, read back from its field forms."""
    return tuple(_spec(name, info) for name, info in RECORD_MODELS[kind].model_fields.items())


# -- one landing line -------------------------------------------------------------------------------------

Refusal = Literal["malformed_json", "schema_violation", "naive_timestamp", "invalid_utf8", "row_too_large",
                  "timestamp_order"]


class LineRefused(ValueError):
    """A landing line the contract refuses, with the ingest's reason code for it."""

    def __init__(self, reason: Refusal, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise LineRefused("schema_violation", "a key is repeated in an object")
    return obj


def _no_constant(name: str) -> Any:
    raise LineRefused("malformed_json", f"{name} is not JSON")


def _valid_unicode(value: Any) -> None:
    """Lone surrogates (``"\\ud800"``) parse in Python but have no UTF-8 form: not valid JSON text."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            _json_string(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def parse_line(kind: str, line: str | bytes) -> Record:
    """The record of one landing line of ``kind``, or :class:`LineRefused` with the ingest's reason.

    The edge check the ingest's SQL mirrors: strict JSON (``json`` with NaN and Infinity refused, repeated
    keys refused at any depth, lone surrogates refused), a JSON object, then the model."""
    if isinstance(line, bytes):
        if len(line) > MAX_ROW_BYTES:
            raise LineRefused("row_too_large", f"the row is longer than {MAX_ROW_BYTES} bytes")
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise LineRefused("invalid_utf8", "the row is not valid UTF-8") from None
    elif len(line.encode("utf-8", "surrogatepass")) > MAX_ROW_BYTES:
        raise LineRefused("row_too_large", f"the row is longer than {MAX_ROW_BYTES} bytes")
    try:
        obj = json.loads(line, object_pairs_hook=_no_repeats, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, LineRefused):
            raise
        raise LineRefused("malformed_json", "the line is not JSON") from None
    try:
        _valid_unicode(obj)
    except ValueError:
        raise LineRefused("malformed_json", "the line holds a lone surrogate escape") from None
    if not isinstance(obj, dict):
        raise LineRefused("schema_violation", "a record must be a JSON object")
    try:
        return RECORD_MODELS[kind].model_validate(obj)
    except ValidationError as exc:
        if any(e["type"] == "timestamp_order" for e in exc.errors()):
            raise LineRefused("timestamp_order", "the record's times are out of order") from None
        naive = [e for e in exc.errors() if isinstance(e.get("input"), str) and re.match(NAIVE_TS, e["input"])]
        raise LineRefused("naive_timestamp" if naive else "schema_violation",
                          f"{exc.error_count()} field error(s)") from None
