"""Binary counts equal numpy on the raw rows, add like the rows they summarise, and refuse what is not a count."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.binary_stats import BinaryCounts, BinaryCountTable
from schemas.suffstats import InsufficientData

ARMS, WAVES = ("control", "coach"), ("m1", "m3", "m12")
rows = st.lists(st.tuples(st.sampled_from(ARMS), st.sampled_from(WAVES), st.integers(0, 1)), max_size=60)


def _table(data):
    arm, wave, y = (np.array(col) for col in zip(*data)) if data else (np.array([]),) * 3
    return BinaryCountTable.from_arrays(arm, wave, y.astype(float), arms=ARMS, waves=WAVES)


@given(rows, rows)
def test_tables_equal_numpy_counts_and_add_like_concatenation(first, second):
    pooled = _table(first) + _table(second)
    assert pooled == _table(first + second)
    for a in ARMS:
        for w in WAVES:
            ys = [y for aa, ww, y in first + second if (aa, ww) == (a, w)]
            assert pooled.cell(a, w) == BinaryCounts(len(ys), sum(ys))


def test_counts_refuse_what_is_not_a_count():
    with pytest.raises(ValueError, match="cannot exceed"):
        BinaryCounts(3, 4)
    with pytest.raises(ValueError, match=">= 0"):
        BinaryCounts(-1, 0)
    with pytest.raises(TypeError):
        BinaryCounts(2.5, 1)  # a noisy (DP) count is a different type, not a silently rounded one
    with pytest.raises(ValueError, match="NaN included"):
        BinaryCounts.from_arrays([0, 1, float("nan")])
    with pytest.raises(ValueError, match="not"):
        BinaryCounts.from_arrays([0, 2])
    with pytest.raises(InsufficientData):
        BinaryCounts(0, 0).risk  # noqa: B018 - never a silent 0


def test_a_table_is_complete_and_refuses_cells_outside_its_design():
    t = BinaryCountTable(ARMS, WAVES, {("coach", "m12"): BinaryCounts(10, 3)})
    assert len(t.cells) == 6 and t.cell("control", "m1") == BinaryCounts(0, 0)
    assert t.final_wave == "m12" and t.control == "control" and t.treated == ("coach",)
    with pytest.raises(ValueError, match="outside"):
        BinaryCountTable(ARMS, WAVES, {("placebo", "m1"): BinaryCounts(1, 0)})
    with pytest.raises(ValueError, match="do not add"):
        t + BinaryCountTable(ARMS, ("m1",))
    with pytest.raises(ValueError, match="outside the design"):
        BinaryCountTable.from_arrays(["control", "placebo"], ["m1", "m1"], [0, 1], arms=ARMS, waves=WAVES)
    assert hash(t) == hash(BinaryCountTable(ARMS, WAVES, dict(t.cells)))
