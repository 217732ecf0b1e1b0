"""The landing contract as SQL: the checks of ``schemas/records.py``'s field forms and of the study protocol.

Nothing here is written by hand per record kind: the checks are generated from
``schemas.records.field_specs`` (the pydantic models' own field forms), so the ingest refuses exactly
what the published contract refuses (``tests/schemas/test_contracts.py`` holds the two to the same
answer on generated lines). Both the exact path (``stage.py``) and the fast path (``fastpath/verify.py``)
read a landing line through :func:`parse_sql` and :func:`unpack_sql` into the same columns, and hold them to these checks:

- ``t_i`` / ``v_i``: the JSON type and the text of field ``i`` (1-based, in the model's field order), NULL
  when the key is absent;
- ``n_keys``: the line's keys, repeats included; ``n_known``: the fields present (a line with an unknown or
  a repeated key has ``n_keys > n_known``);
- consents only: ``scope_types`` / ``scope_values``, the JSON types and texts of the ``scopes`` elements.

A check is ``(condition, reason, message)``: the first whose condition holds gives a row its reason. A
message names fields and the protocol's values, never a value of the row (it may be another
participant's raw id, or anything a partner typed). Item answers of responses are checked against the
instrument registry's bounds (:class:`ItemBounds`): the exact path row by row (``stage.py``), the fast path
by :func:`items_ok`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from schemas.protocol import StudyProtocol
from schemas.records import INTEGER, ISO_WITH_OFFSET, NAIVE_TS, NUMBER, ORDER_RULES, TEXT_CHARS, FieldSpec, field_specs
from schemas.sqltext import ident, literal, number, varchar_list

TS_MIN = "TIMESTAMPTZ '0001-01-01 00:00:00+00'"
TS_MAX = "TIMESTAMPTZ '9999-12-31 23:59:59.999999+00'"
# the time field of each kind: the consent gate compares it with the participant's consents
TIME_FIELD = {"consents": "granted_at", "assignments": "assigned_at", "participants": "recorded_at",
              "responses": "submitted_at", "scores": "scored_at", "events": "ts", "prompts": "scheduled_at"}
# the consent scope a record needs in force at its time (consents and assignments need none)
CONSENT_SCOPE = {"events": "telemetry", "responses": "surveys", "scores": "surveys", "participants": "surveys",
                 "prompts": "surveys"}
_SAFE_CODE = re.compile(r"^[A-Za-z0-9_]{1,64}$")


Check = tuple[str, str, str]
"""A check ``(condition, reason, message)``: SQL over the unpacked line columns, true when the row fails; a SQL
expression giving the reason code; one giving the message (no value of the row). A plain tuple rather than an
object, so that ``tests/test_sql_text.py`` follows each part from where it is written to the query using it."""


@dataclass(frozen=True)
class ItemBounds:
    """The answers each instrument version allows: ``(instrument, version) -> ((item_code, min, max), ...)``."""

    items: Mapping[tuple[str, str], tuple[tuple[str, int, int], ...]]

    @classmethod
    def from_registry(cls) -> ItemBounds:
        import instruments

        out: dict[tuple[str, str], list[tuple[str, int, int]]] = {}
        for inst, version, code, lo, hi in instruments.item_bounds():
            out.setdefault((inst, version), []).append((code, int(lo), int(hi)))
        return cls({k: tuple(v) for k, v in out.items()})

    def values_sql(self) -> str:
        """The bounds as a relation ``(instrument, version, item_code, min_value, max_value)``."""
        rows = [f"({literal(i)}, {literal(v)}, {literal(c)}, {number(lo)}, {number(hi)})"
                for (i, v), items in self.items.items() for c, lo, hi in items]
        if not rows:
            return "(SELECT NULL::VARCHAR, NULL::VARCHAR, NULL::VARCHAR, NULL::BIGINT, NULL::BIGINT WHERE false)"
        return f"(VALUES {', '.join(rows)})"

    def versions(self) -> list[str]:
        """``instrument || chr(31) || version`` of every known instrument version."""
        return [f"{i}\x1f{v}" for i, v in self.items]


def specs(kind: str) -> tuple[FieldSpec, ...]:
    return field_specs(kind)


def index(kind: str) -> dict[str, int]:
    """Field name -> its 1-based position ``i`` in ``t_i`` / ``v_i``."""
    return {s.name: i for i, s in enumerate(specs(kind), start=1)}


def paths_sql(kind: str) -> str:
    """The JSON paths of the kind's fields, as one SQL list (one parse of a line reads them all)."""
    return "[" + ", ".join(literal("$." + s.name) for s in specs(kind)) + "]"


def parse_sql(kind: str, raw: str, guard: str | None = None, canonical: bool = False) -> str:
    """The select list parsing a JSON text column ``raw`` once per access path into the lists ``t``, ``v`` (types
    and texts of the kind's fields) and ``keys`` (every key, repeats included); NULL unless ``guard`` holds.

    ``canonical``: ``raw`` is a line as DuckDB's ``read_json`` hands it back (minified, written by one JSON writer);
    its keys are not listed (a third parse), its length ``raw_bytes`` is taken instead (:func:`unpack_sql`)."""
    paths = paths_sql(kind)
    exprs = {"t": f"json_type({raw}, {paths})", "v": f"json_extract_string({raw}, {paths})"}
    exprs |= {"raw_bytes": f"strlen({raw}::VARCHAR)"} if canonical else {"keys": f"json_keys({raw})"}
    if guard:
        exprs = {k: f"CASE WHEN {guard} THEN {e} END" for k, e in exprs.items()}
    return ", ".join(f"{e} AS {k}" for k, e in exprs.items())


def unpack_sql(kind: str, raw: str, canonical: bool = False) -> str:
    """The select list unpacking :func:`parse_sql`'s lists into the scalar columns the checks read.

    ``canonical`` (the fast path's runs): ``n_keys`` is ``n_known`` when the line is exactly as long as a minified
    object holding only the fields found, each once (``{"name":value,...}``, a string's value counted with its
    quotes and no escapes), and one more otherwise. An unknown or repeated key makes the line longer, and so does a
    string the writer escaped: such a line is not vouched for (fast_ok) and the exact path, which lists the keys,
    decides. Sufficient, never wrong the other way: the line cannot be shorter than that object."""
    n = len(specs(kind))
    cols = [f"t[{i}] AS t_{i}, v[{i}] AS v_{i}" for i in range(1, n + 1)]
    if canonical:
        sizes = []  # the bytes a field found takes in the minified object: "name": and its value
        for i, name_bytes in enumerate((len(spec.name) + 3 for spec in specs(kind)), start=1):
            text = f"CASE t[{i}] WHEN 'VARCHAR' THEN strlen(v[{i}]) + 2 WHEN 'NULL' THEN 4 ELSE strlen(v[{i}]) END"
            sizes.append(f"coalesce({number(name_bytes)} + {text}, 0)")
        commas = "greatest(list_count(t) - 1, 0)"
        cols.append(f"list_count(t) + (raw_bytes <> 2 + {commas} + {' + '.join(sizes)})::INTEGER AS n_keys, "
                    "list_count(t) AS n_known")
    else:
        cols.append("len(keys) AS n_keys, list_count(t) AS n_known")
    if kind == "consents":
        s = index(kind)["scopes"]
        cols.append(f"CASE WHEN t[{s}] = 'ARRAY' THEN json_type({raw}, '$.scopes[*]') END AS scope_types")
        cols.append(f"CASE WHEN t[{s}] = 'ARRAY' THEN json_extract_string({raw}, '$.scopes[*]') END AS scope_values")
    return ", ".join(cols)


def ts_ok(v: str) -> str:
    """SQL: the text ``v`` is a timestamp of the contract (ISO 8601 with an offset) at an instant in years
    1..9999 in UTC; false (never NULL) otherwise."""
    return (f"coalesce(regexp_full_match({v}, {literal(ISO_WITH_OFFSET)}) "
            f"AND try_cast({v} AS TIMESTAMPTZ) BETWEEN {TS_MIN} AND {TS_MAX}, false)")


def number_ok(t: str, v: str) -> str:
    """SQL: a finite number, as a JSON number or as text matching the contract's NUMBER (spaces around it
    ignored, as ``schemas.records`` ignores them)."""
    return (f"CASE WHEN {t} IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN coalesce(isfinite(try_cast({v} AS DOUBLE)), false) "
            f"WHEN {t} = 'VARCHAR' THEN coalesce(regexp_full_match(trim({v}), {literal(NUMBER)}) "
            f"AND isfinite(try_cast(trim({v}) AS DOUBLE)), false) ELSE false END")


def integer_ok(t: str, v: str) -> str:
    """SQL: an item answer of the contract: a JSON integer, a JSON number with no fraction, or text matching
    INTEGER (spaces around it ignored)."""
    return (f"CASE WHEN {t} IN ('BIGINT', 'UBIGINT') THEN true "
            f"WHEN {t} = 'DOUBLE' THEN coalesce(isfinite(try_cast({v} AS DOUBLE)) "
            f"AND try_cast({v} AS DOUBLE) = trunc(try_cast({v} AS DOUBLE)), false) "
            f"WHEN {t} = 'VARCHAR' THEN coalesce(regexp_full_match(trim({v}), {literal(INTEGER)}), false) ELSE false END")


def item_value_sql(v: str) -> str:
    """SQL: the integer an item answer's text stands for (as both paths store it)."""
    return f"try_cast(try_cast(trim({v}) AS DOUBLE) AS BIGINT)"


def _missing(t: str) -> str:
    return f"({t} IS NULL OR {t} = 'NULL')"


def contract_checks(kind: str) -> list[Check]:
    """The field forms' checks, in field order, after the line's shape (unknown or repeated keys)."""
    checks = [("n_keys > n_known", "'schema_violation'",
                    literal("a field is unknown or repeated (the contract's fields are "
                            + ", ".join(s.name for s in specs(kind)) + ")"))]
    for i, s in enumerate(specs(kind), start=1):
        t, v = f"t_{i}", f"v_{i}"
        present = f"NOT {_missing(t)}"
        if s.required:
            checks.append((_missing(t), "'schema_violation'", literal(f"missing required field {s.name}")))
        if s.form == "text":
            checks.append((f"{present} AND {t} <> 'VARCHAR'", "'schema_violation'",
                                literal(f"field {s.name} must be a string")))
            # bytes bound characters from above: characters are counted only when the byte length is out of range
            checks.append((
                f"{present} AND CASE WHEN strlen({v}) BETWEEN 1 AND {number(s.max_chars)} THEN false "
                f"ELSE length({v}) = 0 OR length({v}) > {number(s.max_chars)} END",
                "'schema_violation'", literal(f"field {s.name} must be 1..{s.max_chars} characters")))
        elif s.form == "timestamp":
            checks.append((f"{present} AND {t} <> 'VARCHAR'", "'schema_violation'",
                                literal(f"field {s.name} must be an ISO 8601 timestamp string")))
            naive = f"coalesce(regexp_full_match({v}, {literal(NAIVE_TS)}), false)"
            checks.append((
                f"{present} AND NOT {ts_ok(v)}",
                f"CASE WHEN {naive} THEN 'naive_timestamp' ELSE 'schema_violation' END",
                f"CASE WHEN {naive} THEN {literal(f'field {s.name} has no UTC offset')} ELSE "
                f"{literal(f'field {s.name} is not an ISO 8601 timestamp with an offset in the years 1-9999')} END"))
        elif s.form == "number":
            checks.append((f"{present} AND NOT ({number_ok(t, v)})", "'schema_violation'",
                                literal(f"field {s.name} must be a finite number")))
        elif s.form == "enum":
            checks.append((f"{present} AND ({t} <> 'VARCHAR' OR NOT list_contains({varchar_list(s.values)}, {v}))",
                                "'schema_violation'", literal(f"field {s.name} must be one of {', '.join(s.values)}")))
        elif s.form == "scopes":
            checks.append((
                f"{present} AND NOT ({scopes_ok(t, s)})", "'schema_violation'",
                literal(f"field {s.name} must be a list of scope names ({', '.join(s.values)})")))
        elif s.form == "items":
            checks.append((f"{present} AND {t} <> 'OBJECT'", "'schema_violation'",
                                literal(f"field {s.name} must be an object of item code -> integer or null")))
        elif s.form == "characteristics":
            checks.append((f"{present} AND NOT ({characteristics_ok(t, v)})", "'schema_violation'",
                           literal(f"field {s.name} must be an object of covariate name -> number, text of "
                                   f"1..{TEXT_CHARS} characters, or null")))
        elif s.form == "timezone":
            checks.append((f"{present} AND ({t} <> 'VARCHAR' OR NOT list_contains({varchar_list(s.values)}, {v}))",
                                "'schema_violation'", literal(f"field {s.name} must be an IANA time zone name")))
        else:  # pragma: no cover - field_specs knows no other form
            raise AssertionError(s.form)
    checks += [(cond, "'timestamp_order'", literal(f"field {later} is before {earlier}"))
               for cond, earlier, later in _order_conditions(kind)]
    return checks


def characteristics_ok(t: str, v: str) -> str:
    """SQL: an object whose values are finite JSON numbers, JSON strings of 1..TEXT_CHARS characters, or null (the
    form ``schemas.records.Characteristics``). Values are read with the ``$.*`` wildcard, never through a path built
    from a key; repeated keys are the staging's (stage.check_characteristics)."""
    pairs = f"list_zip(json_type({v}, '$.*'), json_extract_string({v}, '$.*'))"
    bad = (f"list_filter({pairs}, lambda x: NOT (x[1] IN ('BIGINT', 'UBIGINT', 'HUGEINT', 'NULL') "
           f"OR (x[1] = 'DOUBLE' AND coalesce(isfinite(try_cast(x[2] AS DOUBLE)), false)) "
           f"OR (x[1] = 'VARCHAR' AND length(x[2]) BETWEEN 1 AND {TEXT_CHARS})))")
    return f"{t} = 'OBJECT' AND len({bad}) = 0"


def _order_conditions(kind: str) -> list[tuple[str, str, str]]:
    """``(condition, earlier, later)`` per pair of :data:`schemas.records.ORDER_RULES`: true when both times are
    present and the later one is before the earlier one (read after the field checks, so both are valid)."""
    idx = index(kind)
    out = []
    for earlier, later in ORDER_RULES.get(kind, ()):
        a, b = int(idx[earlier]), int(idx[later])
        out.append((f"NOT {_missing(f't_{a}')} AND NOT {_missing(f't_{b}')} "
                    f"AND try_cast(v_{b} AS TIMESTAMPTZ) < try_cast(v_{a} AS TIMESTAMPTZ)", earlier, later))
    return out


def scopes_ok(t: str, s: FieldSpec) -> str:
    return (f"{t} = 'ARRAY' AND len(list_filter(scope_types, lambda x: x <> 'VARCHAR')) = 0 "
            f"AND len(list_filter(scope_values, lambda x: NOT list_contains({varchar_list(s.values)}, x))) = 0")


def protocol_checks(kind: str, protocol: StudyProtocol, bounds: ItemBounds) -> list[Check]:
    """The protocol's checks of a record that passed the contract: its study, arm, wave, instrument, outcome."""
    idx = index(kind)
    v = {n: f"v_{i}" for n, i in idx.items()}
    checks: list[Check] = []
    if "study_id" in idx:
        checks.append((f"{v['study_id']} <> {literal(protocol.study_id)}", "'unknown_study'",
                            literal(f"study_id is not this study's id ({protocol.study_id})")))
    if kind == "assignments":
        checks.append((f"NOT list_contains({varchar_list(protocol.arm_names)}, {v['arm']})", "'unknown_arm'",
                            literal(f"arm is not one of {', '.join(protocol.arm_names)}")))
    if "wave" in idx:
        checks.append((f"NOT list_contains({varchar_list(protocol.wave_names)}, {v['wave']})", "'unknown_wave'",
                            literal(f"wave is not one of {', '.join(protocol.wave_names)}")))
    if kind == "prompts":  # a prompt for one instrument names one the study administers; absent: the whole wave
        checks.append((f"{v['instrument']} IS NOT NULL AND NOT list_contains("
                            f"{varchar_list(protocol.instruments())}, {v['instrument']})", "'unknown_instrument'",
                            literal(f"instrument is not one administered by study {protocol.study_id} "
                                    f"({', '.join(protocol.instruments())})")))
    if kind == "responses":
        checks.append((f"NOT list_contains({varchar_list(protocol.instruments())}, {v['instrument']})",
                            "'unknown_instrument'",
                            literal(f"instrument is not one administered by study {protocol.study_id} "
                                    f"({', '.join(protocol.instruments())})")))
        checks.append((
            f"NOT list_contains({varchar_list(bounds.versions())}, {v['instrument']} || chr(31) || {v['instrument_version']})",
            "'unknown_instrument'", literal("instrument_version is not a version of the instrument Flourish knows")))
    if kind == "scores":
        outcomes = [o.name for o in protocol.outcomes]
        own = [o.name for o in protocol.outcomes if o.source == "flourish"]
        checks.append((f"NOT list_contains({varchar_list(outcomes)}, {v['outcome']})", "'unknown_outcome'",
                            literal(f"outcome is not one named in the protocol ({', '.join(outcomes)})")))
        # Flourish scores these from the responses; a second, external value for the same participant x wave would
        # make the readers choose (schemas.warehouse.relations.SCORE_PRECEDENCE), so it is refused at the door
        checks.append((f"list_contains({varchar_list(own)}, {v['outcome']})", "'scored_by_flourish'",
                            literal("outcome is scored by Flourish from the responses (protocol source: flourish); "
                                    "an external score for it is refused")))
        # a binary outcome without a cut-off is an event indicator: 0 or 1, nothing else
        binary = [o.name for o in protocol.outcomes if o.source == "external" and o.binary and o.cutoff is None]
        if binary:
            checks.append((
                f"list_contains({varchar_list(binary)}, {v['outcome']}) "
                f"AND coalesce(try_cast(trim({v['value']}) AS DOUBLE) NOT IN (0, 1), true)", "'out_of_range'",
                literal(f"value of a binary outcome ({', '.join(binary)}) must be 0 or 1")))
    return checks


# Fields whose value passed the protocol's checks is one of the protocol's own values (its study, arms, waves,
# instruments, their versions, outcomes): the study's vocabulary, which the readers join on, not a partner's text.
PROTOCOL_VALUED = frozenset({"study_id", "arm", "wave", "instrument", "instrument_version", "outcome"})
EMBEDDED_ID_MIN_CHARS = 8
"""A participant id shorter than this is not looked for inside other fields: its appearing in a word is chance
(``p1`` in ``p1p1p1``), and replacing it there would rewrite text that never named the participant."""


def id_carrying_fields(kind: str) -> list[str]:
    """The stored text fields in which a partner may have written the row's own participant id (an event id, a
    session id, a feature, a response or prompt id, a consent version, a stratum): every text field but the
    participant id itself and the protocol-valued ones (:data:`PROTOCOL_VALUED`)."""
    return [s.name for s in specs(kind)
            if s.form == "text" and s.name != "participant_id" and s.name not in PROTOCOL_VALUED]


def embeds_id_sql(kind: str) -> str:
    """SQL over the unpacked line: an id-carrying field (:func:`id_carrying_fields`) holds the row's own participant
    id of at least :data:`EMBEDDED_ID_MIN_CHARS` characters (an ``event_id`` made from it, say). The contract cannot
    refuse it (the field is valid text); both paths store the field with the id replaced by the pseudonym
    (:func:`without_raw_id_sql`), and the reconciliation counts the rows so the partner can be told."""
    i = index(kind)["participant_id"]
    idx = index(kind)
    others = [f"(t_{idx[n]} = 'VARCHAR' AND contains(v_{idx[n]}, v_{i}))" for n in id_carrying_fields(kind)]
    if not others:
        return "false"
    return (f"coalesce(t_{i} = 'VARCHAR' AND strlen(v_{i}) >= {number(EMBEDDED_ID_MIN_CHARS)} "
            f"AND ({' OR '.join(others)}), false)")


def without_raw_id_sql(value: str, raw_id: str, pseudonym: str) -> str:
    """SQL: the text ``value`` with every occurrence of the participant's ``raw_id`` (at least
    :data:`EMBEDDED_ID_MIN_CHARS` characters) replaced by its ``pseudonym``; ``value`` as it is otherwise.

    Why replace rather than refuse or count (hardening D3d): a partner who builds an event id from the participant
    id sends valid records, and the warehouse must never hold a raw id. The pseudonym is what the participant id
    itself becomes, so the field keeps its meaning and stays distinct per participant, and it is the same for every
    delivery of the record under the same key: a record sent again still meets its stored key (a duplicate), and
    ``privacy/rekey.py`` rewrites the old pseudonym inside a participant's text fields to the new one, so it still
    does after a key rotation. The stored text may then be longer than the contract's limit (a pseudonym has 64
    characters); the limit bounds what a partner sends, not what Flourish writes. ``contains`` first: most rows hold
    no id, and ``replace`` would copy every one of them."""
    return (f"CASE WHEN strlen({raw_id}) >= {number(EMBEDDED_ID_MIN_CHARS)} AND contains({value}, {raw_id}) "
            f"THEN replace({value}, {raw_id}, {pseudonym}) ELSE {value} END")


def all_checks(kind: str, protocol: StudyProtocol, bounds: ItemBounds) -> list[Check]:
    return contract_checks(kind) + protocol_checks(kind, protocol, bounds)


def items_ok(t_items: str, items: str, instrument: str, version: str, bounds: ItemBounds) -> str:
    """SQL: a response's ``items`` (of JSON type ``t_items``; ``items`` its text as DuckDB writes it back,
    minified, keys unescaped, numbers normalised) is an object that passes every item check of the exact
    path. One regular expression an instrument version: its codes in their defined order, each at most once
    (so no code repeats), each answered by a JSON integer of its range or null. Sufficient, not necessary:
    items in another order, an answer written ``3.0`` or ``"3"``, or an instrument whose codes are not plain
    names or whose range has more than 1,000 values, are left to the exact path. A CASE branch is evaluated for
    its own rows only, so a row meets only its own instrument's expression."""
    branches = []
    for (inst, ver), items_of in bounds.items.items():
        if not all(_SAFE_CODE.match(code) for code, _, _ in items_of) or any(hi - lo > 1000 for _, lo, hi in items_of):
            continue
        parts = [f'(?:{"," if i else ""}"{code}":(?:null|{"|".join(str(v) for v in range(lo, hi + 1))}))?'
                 for i, (code, lo, hi) in enumerate(items_of)]
        # a present code after absent ones has no comma before it: every code's comma is optional, which admits
        # no text DuckDB writes that is not a valid object of these codes
        pattern = r"\{" + "".join(p.replace("(?:,", "(?:,?", 1) for p in parts) + r"\}"
        branches.append(f"WHEN {t_items} = 'OBJECT' AND {instrument} = {literal(inst)} AND {version} = {literal(ver)} "
                        f"THEN regexp_full_match({items}, {literal(pattern)})")
    if not branches:
        return "false"
    return f"coalesce(CASE {' '.join(branches)} ELSE false END, false)"


def fast_ok(kind: str, protocol: StudyProtocol, bounds: ItemBounds) -> str:
    """SQL: the unpacked line passes every check of :func:`all_checks` (and, for a response, every item check).

    One sufficient condition a field instead of the exact path's two or three (a string over its limit in
    bytes but not in characters, or a number written as a string, is left to the exact path); the protocol's
    checks are the exact path's own. ``tests/flows/ingest/test_fastpath.py`` holds it to the exact path."""
    idx = index(kind)
    ok = []
    for i, s in enumerate(specs(kind), start=1):
        t, v = f"t_{i}", f"v_{i}"
        if s.form == "text":
            cond = f"{t} = 'VARCHAR' AND strlen({v}) BETWEEN 1 AND {number(s.max_chars)}"
        elif s.form == "timestamp":
            cond = f"{t} = 'VARCHAR' AND {ts_ok(v)}"
        elif s.form == "enum":
            cond = f"{t} = 'VARCHAR' AND list_contains({varchar_list(s.values)}, {v})"
        elif s.form == "number":
            cond = f"{t} IN ('BIGINT', 'UBIGINT', 'DOUBLE') AND coalesce(isfinite(try_cast({v} AS DOUBLE)), false)"
        elif s.form == "scopes":
            cond = scopes_ok(t, s)
        elif s.form == "items":
            cond = items_ok(t, v, f"v_{idx['instrument']}", f"v_{idx['instrument_version']}", bounds)
        elif s.form == "characteristics":  # the fast path never vouches for them: the exact path checks each key
            cond = "false"
        elif s.form == "timezone":
            cond = f"{t} = 'VARCHAR' AND list_contains({varchar_list(s.values)}, {v})"
        else:  # pragma: no cover
            raise AssertionError(s.form)
        ok.append(f"({_missing(t)} OR ({cond}))" if not s.required else f"({cond})")
    ok.append("n_keys = n_known")
    ok += [f"NOT coalesce({cond}, false)" for cond, _, _ in _order_conditions(kind)]
    ok += [f"NOT coalesce({condition}, false)" for condition, _, _ in protocol_checks(kind, protocol, bounds)]
    return "coalesce(" + " AND ".join(ok) + ", false)"


def typed_sql(kind: str, raw_id: str, pseudonym: str) -> list[str]:
    """The select list typing a staged line's fields as the clean tables store them (the participant id
    excluded: it is pseudonymized by a join; ``raw_id`` and ``pseudonym`` are its SQL before and after, and the
    id-carrying fields are stored :func:`without_raw_id_sql`)."""
    carrying = set(id_carrying_fields(kind))
    out = []
    for i, s in enumerate(specs(kind), start=1):
        v = f"v_{i}"
        if s.name == "participant_id":
            continue
        if s.form == "timestamp":
            out.append(f"try_cast({v} AS TIMESTAMPTZ) AS {ident(s.name)}")
        elif s.form == "number":
            out.append(f"try_cast(trim({v}) AS DOUBLE) AS {ident(s.name)}")
        elif s.form == "scopes":
            out.append(f"scope_values AS {ident(s.name)}")
        elif s.form in ("items", "characteristics"):
            out.append(f"CASE WHEN t_{i} = 'OBJECT' THEN {v}::JSON END AS {ident(s.name)}")
        elif s.name in carrying:
            out.append(f"{without_raw_id_sql(v, raw_id, pseudonym)} AS {ident(s.name)}")
        else:
            out.append(f"{v} AS {ident(s.name)}")
    return out
