"""Exact, vectorized scoring of responses against an instrument definition.

Input format
- **Long (primary)**, as the warehouse stores it (``response_items``): one row per answered
  item with columns ``participant``, ``wave``, ``item_code``, ``value``; other columns
  (``response_id``, ``study_id``, ``instrument``, ...) are ignored. The caller passes the rows
  of one instrument administration (PHQ-2 may be scored from PHQ-9 rows: same codes).
- **Wide**: no ``item_code`` column; one column per item code plus optional ``participant``
  and ``wave`` columns (row number / empty string when absent). Columns that are neither ids
  nor item codes of the instrument are refused as unknown item codes.

A NaN value means the item was not answered. Everything else must be an integer inside the
instrument's response scale, and each (participant, wave, item) may appear once; otherwise a
:class:`~instruments.errors.ResponseError` names instrument, item, value and allowed range.

The hot path is numpy on a (respondent x item) matrix built by one scatter; there is no
Python loop over rows, only over the handful of scores of an instrument.

Missing items (per score, declared in the definition): with at most ``max_missing`` items
missing a sum is prorated as ``mean(answered) x n_items`` (the person-mean rule) and
``prorated`` is True; a mean is the mean of the answered items. With more missing there is
no score row at all: scoring never invents a value beyond the instrument's rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from instruments.errors import ResponseError
from instruments.model import Instrument
from instruments.registry import load

ID_COLUMNS = ("participant", "wave")
SCORE_COLUMNS = ["participant", "wave", "outcome", "value", "items_answered", "prorated"]
BAND_COLUMNS = ["participant", "wave", "outcome", "scheme", "band"]
SAFETY_COLUMNS = ["participant", "wave", "instrument", "flag", "observed", "op", "threshold", "basis", "source"]


def _resolve(instrument: Instrument | str, version: str | None = None) -> Instrument:
    return instrument if isinstance(instrument, Instrument) else load(instrument, version)


class ResponseMatrix:
    """Responses of one instrument as a dense (respondent x item) float matrix, NaN = missing.

    ``keys`` is a frame of (participant, wave), one row per matrix row. Built once and shared
    by :func:`score`, :func:`safety_flags` and the psychometrics helpers.
    """

    __slots__ = ("instrument", "keys", "values")

    def __init__(self, instrument: Instrument, keys: pd.DataFrame, values: np.ndarray) -> None:
        self.instrument = instrument
        self.keys = keys
        self.values = values

    def keyed(self, items: list[str]) -> np.ndarray:
        """Columns for ``items`` with reverse-keyed items recoded as ``min + max - value``."""
        inst = self.instrument
        idx = [inst.items.index(c) for c in items]
        sub = self.values[:, idx]
        rev = [k for k, c in enumerate(items) if c in inst.reverse_keyed]
        if rev:
            sub = sub.copy()
            sub[:, rev] = inst.scale_min + inst.scale_max - sub[:, rev]
        return sub

    def items_frame(self) -> pd.DataFrame:
        """Wide frame (one column per item code, raw values) for the psychometrics functions."""
        return pd.DataFrame(self.values, columns=self.instrument.items)


def response_matrix(instrument: Instrument | str, responses: pd.DataFrame, *, version: str | None = None) -> ResponseMatrix:
    """Validate ``responses`` (long or wide, see module doc) and pivot them to a matrix."""
    inst = _resolve(instrument, version)
    if "item_code" in responses.columns:
        return _from_long(inst, responses)
    return _from_wide(inst, responses)


def _where(inst: Instrument) -> str:
    return f"instrument {inst.name}-{inst.version}"


def _from_wide(inst: Instrument, wide: pd.DataFrame) -> ResponseMatrix:
    item_cols = [c for c in wide.columns if c not in ID_COLUMNS]
    unknown = [c for c in item_cols if c not in inst.items]
    if unknown:
        raise ResponseError(
            f"{_where(inst)} has no item {unknown[0]!r} (wide column); its items are {', '.join(inst.items)}",
            instrument=inst.name, item=str(unknown[0]), reason="unknown_item",
        )
    n = len(wide)
    participant = wide["participant"].astype(str).to_numpy() if "participant" in wide else np.arange(1, n + 1).astype(str)
    wave = wide["wave"].astype(str).to_numpy() if "wave" in wide else np.full(n, "", dtype=object)
    keys = pd.DataFrame({"participant": participant, "wave": wave})
    if keys.duplicated().any():
        dup = keys[keys.duplicated()].iloc[0]
        raise ResponseError(
            f"{_where(inst)}: participant {dup.participant!r} wave {dup.wave!r} appears on more than one row",
            instrument=inst.name, reason="duplicate_response",
        )
    values = np.full((n, len(inst.items)), np.nan)
    for col in item_cols:  # loop over item columns (<= 24), not rows
        values[:, inst.items.index(col)] = _check_values(inst, wide[col], np.full(n, col, dtype=object), keys)
    return ResponseMatrix(inst, keys, values)


def _from_long(inst: Instrument, long: pd.DataFrame) -> ResponseMatrix:
    missing = [c for c in (*ID_COLUMNS, "item_code", "value") if c not in long.columns]
    if missing:
        raise ResponseError(
            f"{_where(inst)}: long responses need columns participant, wave, item_code, value; missing {missing}",
            instrument=inst.name, reason="missing_columns",
        )
    codes = pd.Index(inst.items).get_indexer(long["item_code"]).astype(np.int64)
    if (codes < 0).any():
        bad = long["item_code"].to_numpy()[np.flatnonzero(codes < 0)[0]]
        raise ResponseError(
            f"{_where(inst)} has no item {bad!r}; its items are {', '.join(inst.items)}",
            instrument=inst.name, item=str(bad), reason="unknown_item",
        )
    group, keys = _factorize_keys(long["participant"], long["wave"])
    values = _check_values(inst, long["value"], long["item_code"].to_numpy(), None, group=group, group_keys=keys)
    n_items = len(inst.items)
    flat = group * n_items + codes
    counts = np.bincount(flat, minlength=len(keys) * n_items)
    if counts.max(initial=0) > 1:
        cell = int(np.argmax(counts > 1))
        g, j = divmod(cell, n_items)
        raise ResponseError(
            f"{_where(inst)}: item {inst.items[j]} answered {counts[cell]} times by participant "
            f"{keys.participant.iat[g]!r} in wave {keys.wave.iat[g]!r}",
            instrument=inst.name, item=inst.items[j], reason="duplicate_item",
        )
    matrix = np.full(len(keys) * n_items, np.nan)
    matrix[flat] = values
    return ResponseMatrix(inst, keys, matrix.reshape(len(keys), n_items))


def _factorize_keys(participant: pd.Series, wave: pd.Series) -> tuple[np.ndarray, pd.DataFrame]:
    p_codes, p_uniques = pd.factorize(participant.astype(str), sort=False)
    w_codes, w_uniques = pd.factorize(wave.astype(str), sort=False)
    combined = p_codes.astype(np.int64) * max(len(w_uniques), 1) + w_codes
    group, uniq = pd.factorize(combined, sort=True)
    keys = pd.DataFrame({
        "participant": np.asarray(p_uniques, dtype=object)[uniq // max(len(w_uniques), 1)],
        "wave": np.asarray(w_uniques, dtype=object)[uniq % max(len(w_uniques), 1)],
    })
    return group.astype(np.int64), keys


def _check_values(inst: Instrument, raw: pd.Series, item_codes: np.ndarray, keys: pd.DataFrame | None,
                  *, group: np.ndarray | None = None, group_keys: pd.DataFrame | None = None) -> np.ndarray:
    """Float values with NaN for missing; raise on non-numeric, non-integer or out-of-range."""
    allowed = f"integers {inst.scale_min}..{inst.scale_max}"
    if pd.api.types.is_bool_dtype(raw):
        values = np.full(len(raw), np.inf)  # booleans are never valid answers
    elif pd.api.types.is_numeric_dtype(raw):
        values = raw.to_numpy(dtype=float, na_value=np.nan)
    else:
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan).copy()
        not_numeric = np.isnan(values) & raw.notna().to_numpy()
        values[not_numeric] = np.inf  # reported below as not an allowed value
    answered = ~np.isnan(values)
    bad = answered & ((values != np.floor(values)) | (values < inst.scale_min) | (values > inst.scale_max))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        if group is not None and group_keys is not None:
            who = group_keys.iloc[int(group[i])]
        else:
            who = keys.iloc[i]
        shown = raw.iloc[i]
        shown = shown.item() if hasattr(shown, "item") else shown
        raise ResponseError(
            f"{_where(inst)}: item {item_codes[i]} has value {shown!r} for participant {who.participant!r} "
            f"wave {who.wave!r}; allowed {allowed} ({int(bad.sum())} bad value(s) in all)",
            instrument=inst.name, item=str(item_codes[i]), value=shown, allowed=f"{inst.scale_min}..{inst.scale_max}",
            reason="value_out_of_range",
        )
    return values


def _score_arrays(m: ResponseMatrix, score_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(value, items_answered, prorated, scored) arrays for one score over all respondents."""
    sd = m.instrument.score_def(score_name)
    sub = m.keyed(sd.items)
    n = len(sd.items)
    answered = (~np.isnan(sub)).sum(axis=1)
    total = np.nansum(sub, axis=1)
    scored = (answered > 0) & (n - answered <= sd.max_missing)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / answered
    if sd.aggregate == "sum":
        value = np.where(answered == n, total, mean * n)
    else:
        value = mean
    value = sd.multiplier * value + sd.offset
    value = np.where(scored, value, np.nan)
    return value, answered, scored & (answered < n), scored


def score(instrument: Instrument | str, responses: pd.DataFrame | ResponseMatrix, *, version: str | None = None) -> pd.DataFrame:
    """Score every respondent x wave on every score of ``instrument``.

    Returns a tidy frame ``participant, wave, outcome, value, items_answered, prorated`` with
    outcome ``"<instrument>.<score>"`` (e.g. ``who5.percent``), sorted by participant, wave,
    then the definition's score order. Respondents without enough items for a score get no
    row for it. Scoring rules and citations are in the instrument's YAML definition.
    """
    m = responses if isinstance(responses, ResponseMatrix) else response_matrix(instrument, responses, version=version)
    inst = m.instrument
    parts = []
    for sd in inst.scores:
        value, answered, prorated, scored = _score_arrays(m, sd.name)
        keep = np.flatnonzero(scored)
        parts.append(pd.DataFrame({
            "participant": m.keys.participant.to_numpy()[keep],
            "wave": m.keys.wave.to_numpy()[keep],
            "outcome": inst.outcome(sd.name),
            "value": value[keep],
            "items_answered": answered[keep].astype(np.int32),
            "prorated": prorated[keep],
            "_row": keep,
            "_score": len(parts),
        }))
    out = pd.concat(parts, ignore_index=True)
    out = out.sort_values(["_row", "_score"], kind="stable").drop(columns=["_row", "_score"]).reset_index(drop=True)
    out["outcome"] = out["outcome"].astype(object)
    return out[SCORE_COLUMNS]


def assign_bands(instrument: Instrument | str, scores: pd.DataFrame, *, version: str | None = None) -> pd.DataFrame:
    """Bands for every band scheme of ``instrument``, from a frame returned by :func:`score`.

    Upper bounds are inclusive (a value belongs to the first band whose upper is >= it).
    Returns ``participant, wave, outcome, scheme, band``.
    """
    inst = _resolve(instrument, version)
    parts = []
    for scheme in inst.bands:
        outcome = inst.outcome(scheme.score)
        rows = scores[scores["outcome"] == outcome]
        uppers = np.array([b.upper for b in scheme.bands])
        labels = np.array([b.label for b in scheme.bands], dtype=object)
        pos = np.searchsorted(uppers, rows["value"].to_numpy(), side="left")
        if (pos >= len(uppers)).any():
            v = rows["value"].to_numpy()[pos >= len(uppers)][0]
            raise ResponseError(f"{_where(inst)}: {outcome} = {v} is above every band of scheme {scheme.name}",
                                instrument=inst.name, value=v, reason="score_outside_bands")
        parts.append(pd.DataFrame({
            "participant": rows["participant"].to_numpy(), "wave": rows["wave"].to_numpy(),
            "outcome": outcome, "scheme": scheme.name, "band": labels[pos],
        }))
    if not parts:
        return pd.DataFrame(columns=BAND_COLUMNS)
    return pd.concat(parts, ignore_index=True)[BAND_COLUMNS]


def band_of(instrument: Instrument | str, score_name: str, value: float, scheme: str | None = None) -> str:
    """The band label of one score value (first scheme for that score unless ``scheme`` is given)."""
    inst = _resolve(instrument)
    schemes = [s for s in inst.bands if s.score == score_name and (scheme is None or s.name == scheme)]
    if not schemes:
        raise LookupError(f"{_where(inst)} has no band scheme for score {score_name!r}"
                          + (f" named {scheme!r}" if scheme else ""))
    for b in schemes[0].bands:
        if value <= b.upper:
            return b.label
    raise ResponseError(f"{_where(inst)}: {score_name} = {value} is above every band of scheme {schemes[0].name}",
                        instrument=inst.name, value=value, reason="score_outside_bands")


def safety_flags(instrument: Instrument | str, responses: pd.DataFrame | ResponseMatrix, *, version: str | None = None) -> pd.DataFrame:
    """Rows that must trigger the study's safety protocol (PHQ-9 item 9 > 0, PHQ-2 >= 3, GAD-2 >= 3).

    One row per participant x wave x raised flag: ``participant, wave, instrument, flag,
    observed, op, threshold, basis, source``. ``basis`` is ``item``, ``score`` or
    ``partial_sum``: a two-item screener with one item missing has no score, but if the
    answered items alone already reach the threshold (a lower bound of the sum, since the
    scale starts at 0) the flag is raised anyway. A safety screen errs towards flagging.
    """
    m = responses if isinstance(responses, ResponseMatrix) else response_matrix(instrument, responses, version=version)
    inst = m.instrument
    parts = []
    for f in inst.safety_flags:
        if f.kind == "item":
            observed = m.values[:, inst.items.index(f.target)]
            basis = np.full(len(observed), "item", dtype=object)
        else:
            observed, _, _, scored = _score_arrays(m, f.target)
            basis = np.full(len(observed), "score", dtype=object)
            sd = inst.score_def(f.target)
            if sd.aggregate == "sum" and inst.scale_min >= 0 and sd.multiplier > 0 and not inst.reverse_keyed:
                partial = sd.multiplier * np.nansum(m.keyed(sd.items), axis=1) + sd.offset
                use = ~scored
                observed = np.where(use, partial, observed)
                basis = np.where(use, "partial_sum", basis)
        with np.errstate(invalid="ignore"):
            raised = observed > f.threshold if f.op == ">" else observed >= f.threshold
        keep = np.flatnonzero(raised)
        parts.append(pd.DataFrame({
            "participant": m.keys.participant.to_numpy()[keep], "wave": m.keys.wave.to_numpy()[keep],
            "instrument": inst.name, "flag": f.name, "observed": observed[keep], "op": f.op,
            "threshold": float(f.threshold), "basis": basis[keep], "source": f.source,
        }))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SAFETY_COLUMNS})
    return pd.concat(parts, ignore_index=True)[SAFETY_COLUMNS]


def score_study(response_items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score a warehouse ``response_items`` extract holding any mix of instruments.

    Groups by ``(instrument, instrument_version)`` (a loop over instruments, not rows) and
    returns ``(scores, safety)``: the :func:`score` frame and the :func:`safety_flags`
    frame, each with ``instrument`` and ``instrument_version`` columns added.
    """
    needed = ["instrument", "instrument_version", *ID_COLUMNS, "item_code", "value"]
    missing = [c for c in needed if c not in response_items.columns]
    if missing:
        raise ResponseError(f"response_items extract lacks columns {missing}", reason="missing_columns")
    score_parts, safety_parts = [], []
    for (name, version), rows in response_items.groupby(["instrument", "instrument_version"], sort=True):
        m = response_matrix(load(str(name), str(version)), rows)
        score_parts.append(score(m.instrument, m).assign(instrument=name, instrument_version=str(version)))
        safety_parts.append(safety_flags(m.instrument, m).assign(instrument_version=str(version)))
    scores_out = (pd.concat(score_parts, ignore_index=True) if score_parts
                  else pd.DataFrame(columns=[*SCORE_COLUMNS, "instrument", "instrument_version"]))
    safety_out = (pd.concat(safety_parts, ignore_index=True) if safety_parts
                  else pd.DataFrame(columns=[*SAFETY_COLUMNS, "instrument_version"]))
    return scores_out, safety_out


def safety_counts(safety: pd.DataFrame, assignments: pd.DataFrame) -> pd.DataFrame:
    """Count flagged participants per arm x wave x flag (for the safety report to the study's
    monitoring board). ``assignments``: participant, arm; participants without an assignment
    are counted under arm ``unassigned`` rather than dropped."""
    arm_of = assignments.drop_duplicates("participant").set_index("participant")["arm"].astype(str)
    flagged = safety.assign(arm=safety["participant"].map(arm_of).fillna("unassigned"))
    out = (flagged.groupby(["arm", "wave", "instrument", "flag"], as_index=False)["participant"].nunique()
           .rename(columns={"participant": "participants_flagged"}))
    return out
