"""Where clean rows go: the INSERTs both paths share, so a record is stored the same way whichever path read it.

Each statement reads ``rows``, a relation of typed records (``contract.typed_sql``'s columns, the pseudonym
as ``participant``, the line as ``line``) and takes ``$batch`` (and, for consents, ``$file``) as parameters.
"""

from __future__ import annotations

from flows.ingest.contract import item_value_sql
from flows.ingest.gate import CONSENT_RECORD_HASH

TARGET = {
    "events": "events",
    "assignments": "assignments",
    "consents": "consents",
    "prompts": "prompts",
    "scores": "scores (study_id, participant, wave, outcome, value, items_answered, prorated, source, scored_at, batch_id)",
}
COLUMNS = {
    "events": "event_id, participant, study_id, ts, session_id, type, feature, value, $batch",
    "assignments": "participant, study_id, arm, assigned_at, stratum, $batch",
    "prompts": ("prompt_id, participant, study_id, wave, instrument, schedule_version, scheduled_at, sent_at, "
                "opened_at, started_at, completed_at, expired_at, timezone, $batch"),
    "scores": "study_id, participant, wave, outcome, value, NULL, false, 'external', scored_at, $batch",
    "consents": f"participant, consent_version, scopes, granted_at, withdrawn_at, {CONSENT_RECORD_HASH}, $batch, $file, line",
}


def insert_sql(kind: str, rows: str, target: str | None = None, batch: str = "$batch") -> str:
    """INSERT the records of ``rows`` (not responses: :func:`response_inserts`) into their table, or ``target``;
    ``batch`` is the batch id's SQL (a parameter, or a column of ``rows`` for a replay)."""
    return f"INSERT INTO {target or TARGET[kind]} SELECT {COLUMNS[kind].replace('$batch', batch)} FROM {rows}"


def participant_inserts(rows: str, batch: str = "$batch") -> list[str]:
    """A participants record and one row per characteristic (the text of a JSON string in ``value_text``; the number
    a JSON number or numeric text stands for in ``value_number``; both NULL for null), from ``rows`` that passed
    every check. Characteristics are read with ``json_each``, never through a path built from a key."""
    return [
        f"""INSERT INTO participant_characteristics
            SELECT s.participant, s.study_id, e.key,
                   CASE WHEN e.type = 'VARCHAR' THEN json_extract_string(e.value, '$') END,
                   CASE WHEN e.type <> 'NULL' THEN try_cast(trim(json_extract_string(e.value, '$')) AS DOUBLE) END,
                   {batch}
            FROM {rows} s, json_each(s.characteristics) AS e""",
        f"""INSERT INTO participants SELECT participant, study_id, recorded_at, stratum, {batch} FROM {rows} s""",
    ]


def response_inserts(rows: str, batch: str = "$batch") -> list[str]:
    """A response and one row per item (answered or skipped, value NULL when skipped), from ``rows`` that passed
    every check. Items are read as two lists of one parse each, the codes (``json_keys``) and the answers (the
    ``$.*`` wildcard, in the same order, NULL for a JSON null), never through a path built from a key; unnested
    side by side, they are the item rows ``json_each`` would give at about two thirds of its cost."""
    answers = f"list_transform(json_extract_string(s.items, '$.*'), lambda x: {item_value_sql('x')})"
    return [
        f"""INSERT INTO response_items
            SELECT s.response_id, s.participant, s.study_id, s.instrument, s.instrument_version, s.wave,
                   unnest(json_keys(s.items)), unnest({answers})
            FROM {rows} s""",
        f"""INSERT INTO responses
            SELECT response_id, participant, study_id, instrument, instrument_version, wave, submitted_at,
                   list_count(json_extract_string(s.items, '$.*'))::INTEGER, {batch}
            FROM {rows} s""",
    ]
