"""Scoring reads like the instruments' scoring rules: hand-computed cases per instrument,
reverse keys, prorating, the missing-item rule, band edges, safety flags and bad input."""

import numpy as np
import pandas as pd
import pytest

import instruments
from instruments import ResponseError


def long_frame(answers: dict[str, dict[str, float]], wave: str = "w1") -> pd.DataFrame:
    rows = [(p, wave, code, v) for p, items in answers.items() for code, v in items.items()]
    return pd.DataFrame(rows, columns=["participant", "wave", "item_code", "value"])


def scored(name, answers, **kw) -> dict[tuple[str, str], tuple[float, int, bool]]:
    out = instruments.score(name, long_frame(answers), **kw)
    return {(r.participant, r.outcome): (r.value, r.items_answered, r.prorated) for r in out.itertuples()}


def items(prefix: str, values: list[float]) -> dict[str, float]:
    return {f"{prefix}{i}": v for i, v in enumerate(values, start=1) if v is not None}


# --- WHO-5 (Topp et al. 2015): raw sum 0-25, percent = raw x 4 ---------------------------

def test_who5_raw_13_is_52_percent_and_not_poor():
    s = scored("who5", {"p": items("WHO5_", [3, 3, 3, 2, 2])})
    assert s[("p", "who5.raw")] == (13, 5, False)
    assert s[("p", "who5.percent")] == (52, 5, False)
    assert instruments.band_of("who5", "percent", 52) == "not_poor"


@pytest.mark.parametrize("raw,band", [(0, "likely_depression"), (7, "likely_depression"), (8, "poor_wellbeing"),
                                       (12, "poor_wellbeing"), (13, "not_poor"), (25, "not_poor")])
def test_who5_band_edges(raw, band):
    values = [min(5, max(0, raw - 5 * k)) for k in range(5)]  # any split of raw over 5 items
    assert sum(values) == raw
    frame = instruments.score("who5", long_frame({"p": items("WHO5_", values)}))
    bands = instruments.assign_bands("who5", frame)
    assert bands.band.tolist() == [band]


def test_who5_prorates_one_missing_item_and_refuses_two():
    s = scored("who5", {"one_missing": items("WHO5_", [4, 4, 3, None, 5]),
                        "two_missing": items("WHO5_", [4, None, 3, None, 5])})
    assert s[("one_missing", "who5.raw")] == (pytest.approx(16 / 4 * 5), 4, True)  # 20.0
    assert s[("one_missing", "who5.percent")] == (pytest.approx(80.0), 4, True)
    assert not any(k[0] == "two_missing" for k in s)  # no score invented


def test_nan_value_counts_as_unanswered():
    frame = long_frame({"p": items("WHO5_", [1, 2, 3, 4, 5])})
    frame.loc[frame.item_code == "WHO5_5", "value"] = np.nan
    out = instruments.score("who5", frame)
    assert out.loc[out.outcome == "who5.raw", "value"].item() == pytest.approx(10 / 4 * 5)


# --- SWLS (Diener 1985): sum 5-35, two band schemes -----------------------------------------

def test_swls_total_and_both_band_schemes():
    s = instruments.score("swls", long_frame({"p": items("SWLS_", [4, 4, 4, 4, 4]), "q": items("SWLS_", [7, 6, 6, 6, 5])}))
    assert s.value.tolist() == [20, 30]
    b = instruments.assign_bands("swls", s).set_index(["participant", "scheme"]).band
    assert b[("p", "diener2006")] == "neutral" and b[("p", "pavot_diener1993")] == "average"
    assert b[("q", "diener2006")] == "satisfied" and b[("q", "pavot_diener1993")] == "very_high"


def test_flourishing_scale_total():
    s = scored("flourishing_scale", {"p": items("FS_", [7, 6, 5, 4, 3, 2, 1, 7])})
    assert s[("p", "flourishing_scale.total")] == (35, 8, False)


# --- PHQ / GAD: sums, bands, safety flags ---------------------------------------------------

def test_phq9_total_bands_and_item9_flag():
    answers = {"mild": items("PHQ_", [1, 1, 1, 1, 1, 0, 0, 0, 0]),       # 5: mild edge
               "severe": items("PHQ_", [3, 3, 3, 3, 2, 2, 2, 1, 1]),      # 20: severe edge
               "minimal": items("PHQ_", [1, 1, 1, 1, 0, 0, 0, 0, 0])}     # 4
    s = instruments.score("phq9", long_frame(answers))
    total = s[s.outcome == "phq9.total"].set_index("participant").value
    assert total.to_dict() == {"mild": 5, "severe": 20, "minimal": 4}
    bands = instruments.assign_bands("phq9", s).set_index("participant").band.to_dict()
    assert bands == {"mild": "mild", "severe": "severe", "minimal": "minimal"}
    flags = instruments.safety_flags("phq9", long_frame(answers))
    item9 = flags[flags.flag == "phq9_item9_positive"]
    assert item9.participant.tolist() == ["severe"]
    phq2 = flags[flags.flag == "phq2_positive"]
    assert sorted(phq2.participant) == ["severe"]


def test_phq2_screen_and_partial_sum_flag():
    answers = {"neg": {"PHQ_1": 1, "PHQ_2": 1}, "pos": {"PHQ_1": 2, "PHQ_2": 1}, "partial": {"PHQ_1": 3}}
    s = scored("phq2", answers)
    assert s[("neg", "phq2.total")] == (2, 2, False) and s[("pos", "phq2.total")] == (3, 2, False)
    assert ("partial", "phq2.total") not in s  # PHQ-2 never prorates
    flags = instruments.safety_flags("phq2", long_frame(answers)).set_index("participant")
    assert sorted(flags.index) == ["partial", "pos"]
    assert flags.loc["partial", "basis"] == "partial_sum"  # 3 answered already reaches >= 3


def test_phq2_scored_from_phq9_rows():
    s = scored("phq2", {"p": {"PHQ_1": 2, "PHQ_2": 2}})
    assert s[("p", "phq2.total")][0] == 4


def test_gad2_and_gad7():
    assert scored("gad2", {"p": {"GAD_1": 3, "GAD_2": 0}})[("p", "gad2.total")] == (3, 2, False)
    s = scored("gad7", {"p": items("GAD_", [2, 2, 2, 2, 2, 2, 3])})
    assert s[("p", "gad7.total")] == (15, 7, False) and s[("p", "gad7.gad2_total")] == (4, 2, False)
    assert instruments.band_of("gad7", "total", 15) == "severe"
    assert instruments.band_of("gad7", "total", 14) == "moderate"
    flags = instruments.safety_flags("gad2", long_frame({"p": {"GAD_1": 3, "GAD_2": 0}}))
    assert flags.flag.tolist() == ["gad2_positive"]


# --- Flourish Index, PERMA-Profiler, BPNSFS ---------------------------------------------------

def test_flourish_index_sums_and_domains():
    s = scored("flourish_index", {"p": items("FL_", [10, 8, 7, 5, 9, 9, 6, 8, 10, 4, 2, 3])})
    assert s[("p", "flourish_index.flourish")][0] == 76
    assert s[("p", "flourish_index.secure_flourish")][0] == 81
    assert s[("p", "flourish_index.happiness_life_satisfaction")][0] == 9
    assert s[("p", "flourish_index.financial_material_stability")][0] == 2.5
    assert s[("p", "flourish_index.flourish_mean")][0] == pytest.approx(7.6)


def test_perma_domains_follow_interleaved_positions():
    values = list(range(23))  # PERMA_k answered k-1 so the position is visible in the mean
    values = [v % 11 for v in values]
    s = scored("perma_profiler", {"p": items("PERMA_", values)})
    # positive emotion = positions 3, 13, 22 -> values 2, 12%11=1, 21%11=10
    assert s[("p", "perma_profiler.positive_emotion")][0] == pytest.approx((2 + 1 + 10) / 3)
    # accomplishment = positions 1, 5, 15 -> 0, 4, 14%11=3
    assert s[("p", "perma_profiler.accomplishment")][0] == pytest.approx((0 + 4 + 3) / 3)
    assert s[("p", "perma_profiler.loneliness")][0] == 10  # position 11
    perma = instruments.load("perma_profiler")
    overall_items = perma.score_def("overall").items
    assert len(overall_items) == 16 and "PERMA_11" not in overall_items  # Lon not in overall
    expected = np.mean([values[int(c.split("_")[1]) - 1] for c in overall_items])
    assert s[("p", "perma_profiler.overall")][0] == pytest.approx(expected)


def test_bpnsfs_subscale_means():
    values = [1, 2, 3, 4, 5, 1] * 4  # item k has value determined by its subscale
    s = scored("bpnsfs", {"p": items("BPN_", values)})
    assert s[("p", "bpnsfs.autonomy_satisfaction")][0] == 1
    assert s[("p", "bpnsfs.autonomy_frustration")][0] == 2
    assert s[("p", "bpnsfs.competence_satisfaction")][0] == 5


# --- reverse keys: no shipped instrument reverses an item, so test the mechanism -------------

def reverse_keyed_instrument() -> instruments.Instrument:
    raw = instruments.load("swls").model_dump()
    raw.update(name="swls_reversed_test", reverse_keyed=["SWLS_2", "SWLS_5"], bands=[], item_text={})
    raw["scores"] = raw["scores"] + [dict(raw["scores"][0], name="mean_score", aggregate="mean")]
    return instruments.Instrument.model_validate(raw)


def test_reverse_keys_recode_min_plus_max_minus_value():
    inst = reverse_keyed_instrument()
    # 7, (8-2)=6, 5, 4, (8-7)=1 -> 23
    out = instruments.score(inst, long_frame({"p": items("SWLS_", [7, 2, 5, 4, 7])}))
    assert out.value.tolist() == [23, pytest.approx(23 / 5)]
    # prorating uses the keyed values: missing SWLS_4 -> mean(7, 6, 5, 1) x 5 = 23.75
    out = instruments.score(inst, long_frame({"p": items("SWLS_", [7, 2, 5, None, 7])}))
    assert out.value.tolist()[0] == pytest.approx(23.75) and out.prorated.all()


# --- long and wide agree; bad input is refused with what and where ---------------------------

def test_wide_input_matches_long():
    answers = {"a": items("WHO5_", [1, 2, 3, 4, 5]), "b": items("WHO5_", [5, 5, None, 5, 5])}
    long = instruments.score("who5", long_frame(answers))
    wide = pd.DataFrame([{"participant": p, "wave": "w1", **v} for p, v in answers.items()])
    pd.testing.assert_frame_equal(instruments.score("who5", wide), long)


@pytest.mark.parametrize("value,match", [(6, "value 6 .*allowed integers 0..5"), (-1, "value -1"),
                                         (2.5, "value 2.5"), ("often", "value 'often'")])
def test_bad_values_are_refused(value, match):
    frame = long_frame({"p": items("WHO5_", [1, 1, 1, 1, 1])}).astype({"value": object})
    frame.loc[2, "value"] = value
    with pytest.raises(ResponseError, match=match) as err:
        instruments.score("who5", frame)
    assert err.value.instrument == "who5" and err.value.item == "WHO5_3"


def test_unknown_item_and_duplicate_answer_are_refused():
    frame = long_frame({"p": items("WHO5_", [1, 1, 1, 1, 1])})
    with pytest.raises(ResponseError, match="no item 'WHO5_6'"):
        instruments.score("who5", pd.concat([frame, long_frame({"p": {"WHO5_6": 1}})]))
    with pytest.raises(ResponseError, match="WHO5_1 answered 2 times"):
        instruments.score("who5", pd.concat([frame, frame.iloc[:1]]))


def test_licence_gate():
    instruments.check_licences(["who5", "perma_profiler"], "research", {})
    instruments.check_licences(["who5", "swls", "phq9"], "commercial", {})
    with pytest.raises(instruments.LicenceError, match="perma_profiler .*non-commercial"):
        instruments.check_licences(["who5", "perma_profiler"], "commercial", {})
    instruments.check_licences(["perma_profiler-1"], "commercial", {"perma_profiler": "email 2026-03-02 M. Kern"})
    with pytest.raises(instruments.UnknownInstrument):
        instruments.check_licences(["who6"], "commercial", {})
