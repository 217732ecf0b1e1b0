"""Scoring invariants for any valid responses (hypothesis): every score lies inside the bounds
its definition implies, row order never matters, and no score appears beyond the
missing-item rule."""

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import instruments

NAMES = sorted(instruments.known_versions())


@st.composite
def responses(draw):
    inst = instruments.load(draw(st.sampled_from(NAMES)))
    n_people = draw(st.integers(1, 6))
    rows = []
    for p in range(n_people):
        for wave in draw(st.lists(st.sampled_from(["w0", "w1", "w2"]), min_size=1, max_size=3, unique=True)):
            answered = draw(st.lists(st.booleans(), min_size=len(inst.items), max_size=len(inst.items)))
            for code, keep in zip(inst.items, answered):
                if keep:
                    rows.append((f"p{p}", wave, code, draw(st.integers(inst.scale_min, inst.scale_max))))
    frame = pd.DataFrame(rows, columns=["participant", "wave", "item_code", "value"])
    return inst, frame, draw(st.randoms(use_true_random=False))


def score_bounds(inst, sd):
    lo, hi = (inst.scale_min, inst.scale_max)
    if sd.aggregate == "sum":
        lo, hi = lo * len(sd.items), hi * len(sd.items)
    ends = sorted([sd.multiplier * lo + sd.offset, sd.multiplier * hi + sd.offset])
    return ends


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(responses())
def test_scores_within_bounds_order_free_and_never_invented(case):
    inst, frame, rnd = case
    if frame.empty:
        return
    out = instruments.score(inst, frame)
    # bounds implied by the definition
    for sd in inst.scores:
        lo, hi = score_bounds(inst, sd)
        values = out.loc[out.outcome == inst.outcome(sd.name), "value"]
        assert ((values >= lo - 1e-9) & (values <= hi + 1e-9)).all(), sd.name
        # missing-item rule: never a score with more than max_missing items missing
        answered = out.loc[out.outcome == inst.outcome(sd.name), "items_answered"]
        assert (len(sd.items) - answered <= sd.max_missing).all()
    # permuting rows changes nothing (up to row order of the result)
    order = list(range(len(frame)))
    rnd.shuffle(order)
    shuffled = instruments.score(inst, frame.iloc[order].reset_index(drop=True))
    key = ["participant", "wave", "outcome"]
    pd.testing.assert_frame_equal(out.sort_values(key).reset_index(drop=True),
                                  shuffled.sort_values(key).reset_index(drop=True))
    # prorated exactly when some of the score's items are missing
    n_items = out.outcome.map({inst.outcome(s.name): len(s.items) for s in inst.scores})
    assert (out.prorated == (out.items_answered < n_items)).all()
    assert np.isfinite(out.value).all()
