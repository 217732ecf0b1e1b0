"""Preregistration: canonical hash, hash-chained registry, deviations instead of silent relocks."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import replace
from datetime import datetime, timezone

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.prereg import (
    GENESIS,
    PreregistrationError,
    canonical_protocol,
    lock_status,
    next_entry,
    plan_hash,
    verify_chain,
)
from schemas.protocol import StudyProtocol

PROTOCOL = {
    "study_id": "s1",
    "title": "Reflective prompts",
    "arms": [{"name": "control", "control": True}, {"name": "coach", "allocation": 2}],
    "waves": [{"name": "w0", "day": 0, "instruments": ["who5"]}, {"name": "w3", "day": 90, "instruments": ["who5"]}],
    "primary_outcome": {"name": "who5.percent", "instrument": "who5", "wave": "w3", "mcid": 10, "rope": 2},
    "privacy": {"epsilon": 1.0},
    "analysis": {"effect_shape": "constant", "subgroups": ["baseline_tercile"]},
}
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


def _shuffled(value, rng):
    """Same mapping, keys in a random order, recursively (YAML key order must not matter)."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@given(st.integers(0, 10_000), st.sampled_from([None, 2, 4]))
@settings(max_examples=30, deadline=None)
def test_hash_is_invariant_under_yaml_key_order_and_formatting(seed, indent):
    text = yaml.safe_dump(_shuffled(PROTOCOL, random.Random(seed)), sort_keys=False, indent=indent)
    assert plan_hash(StudyProtocol.model_validate(yaml.safe_load(text))) == plan_hash(StudyProtocol.model_validate(PROTOCOL))


def test_hash_is_sha256_of_canonical_json_and_sees_plan_changes():
    p = StudyProtocol.model_validate(PROTOCOL)
    text = canonical_protocol(p)
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert plan_hash(p) == hashlib.sha256(text.encode()).hexdigest()
    # defaults are explicit: writing a default value changes nothing
    explicit = {**PROTOCOL, "analysis": {**PROTOCOL["analysis"], "interval_level": 0.95}}
    assert plan_hash(StudyProtocol.model_validate(explicit)) == plan_hash(p)
    changed = {**PROTOCOL, "analysis": {**PROTOCOL["analysis"], "effect_shape": "per_wave"}}
    assert plan_hash(StudyProtocol.model_validate(changed)) != plan_hash(p)


def test_lock_then_deviation_chain_and_refusals():
    p = StudyProtocol.model_validate(PROTOCOL)
    lock = next_entry([], study_id="s1", new_plan_hash=plan_hash(p), recorded_at=T0)
    assert (lock.kind, lock.seq, lock.prev_entry_hash) == ("lock", 1, GENESIS)
    assert lock_status([lock], p).locked
    with pytest.raises(PreregistrationError, match="already locked"):
        next_entry([lock], study_id="s1", new_plan_hash=plan_hash(p), recorded_at=T0)
    with pytest.raises(PreregistrationError, match="nothing to deviate"):
        next_entry([], study_id="s1", new_plan_hash=plan_hash(p), recorded_at=T0, deviation_reason="x")
    p2 = StudyProtocol.model_validate({**PROTOCOL, "title": "Reflective prompts v2"})
    status = lock_status([lock], p2)
    assert not status.locked and "deviation" in status.explanation
    with pytest.raises(PreregistrationError, match="--deviation"):
        next_entry([lock], study_id="s1", new_plan_hash=plan_hash(p2), recorded_at=T0)
    dev = next_entry([lock], study_id="s1", new_plan_hash=plan_hash(p2), recorded_at=T0, deviation_reason="typo in title")
    assert (dev.kind, dev.seq, dev.prev_entry_hash, dev.reason) == ("deviation", 2, lock.entry_hash, "typo in title")
    verify_chain([lock, dev])
    assert lock_status([lock, dev], p2).locked and not lock_status([lock, dev], p).locked


def test_tampering_is_detected():
    p = StudyProtocol.model_validate(PROTOCOL)
    lock = next_entry([], study_id="s1", new_plan_hash=plan_hash(p), recorded_at=T0)
    dev = next_entry([lock], study_id="s1", new_plan_hash="f" * 64, recorded_at=T0, deviation_reason="r")
    with pytest.raises(PreregistrationError, match="altered"):
        verify_chain([replace(lock, plan_hash="e" * 64), dev])
    with pytest.raises(PreregistrationError, match="missing entry 1"):
        verify_chain([dev])


def test_an_optional_field_left_absent_does_not_enter_the_hash():
    """A plan locked before an optional protocol field existed keeps its hash when the field is added empty; a
    value given to it, or a changed default, changes the hash."""
    import json

    from analysis.prereg import canonical_protocol
    from flows.simulation.field_study import protocol

    base = protocol()
    canonical = json.loads(canonical_protocol(base))
    assert "schedule" not in canonical and "baseline_covariates" not in canonical
    assert "draws" in canonical["analysis"]  # a default with a value is explicit in the hash
    data = base.model_dump(mode="json")
    data["baseline_covariates"] = [{"name": "age"}]
    assert plan_hash(type(base).model_validate(data)) != plan_hash(base)
