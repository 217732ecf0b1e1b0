"""The shipped definitions load, agree with the fixed contract other packages depend on,
and match the JSON Schema exported from the model."""

import json
from pathlib import Path

import pytest

import instruments
from instruments.registry import DEFS_DIR

FIXED = {
    "who5": ([f"WHO5_{i}" for i in range(1, 6)], 0, 5),
    "swls": ([f"SWLS_{i}" for i in range(1, 6)], 1, 7),
    "flourishing_scale": ([f"FS_{i}" for i in range(1, 9)], 1, 7),
    "phq2": (["PHQ_1", "PHQ_2"], 0, 3),
    "phq9": ([f"PHQ_{i}" for i in range(1, 10)], 0, 3),
    "gad2": (["GAD_1", "GAD_2"], 0, 3),
    "gad7": ([f"GAD_{i}" for i in range(1, 8)], 0, 3),
    "flourish_index": ([f"FL_{i}" for i in range(1, 13)], 0, 10),
    "perma_profiler": ([f"PERMA_{i}" for i in range(1, 24)], 0, 10),
    "bpnsfs": ([f"BPN_{i}" for i in range(1, 25)], 1, 5),
}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_item_codes_and_scales(name):
    inst = instruments.load(name, "1")
    items, lo, hi = FIXED[name]
    assert (inst.name, inst.version, inst.items, inst.scale_min, inst.scale_max) == (name, "1", items, lo, hi)
    assert instruments.load(name) is inst


def test_known_versions_and_item_bounds():
    assert instruments.known_versions() == {n: ["1"] for n in sorted(FIXED)}
    bounds = instruments.item_bounds()
    assert ("who5", "1", "WHO5_3", 0, 5) in bounds
    assert len(bounds) == sum(len(v[0]) for v in FIXED.values())


def test_unknown_instrument_and_version_name_what_exists():
    with pytest.raises(instruments.UnknownInstrument, match="shipped instruments are .*who5"):
        instruments.load("who6")
    with pytest.raises(LookupError, match="shipped versions are 1"):
        instruments.load("who5", "2")


def test_definitions_are_frozen():
    with pytest.raises(Exception):
        instruments.load("who5").name = "x"


def test_wording_shipped_only_where_licence_allows():
    for inst in instruments.all_instruments():
        if inst.licence.kind == "non_commercial":
            assert not inst.item_text and not inst.licence.wording_allowed, inst.name


def test_perma_profiler_is_interleaved():
    perma = instruments.load("perma_profiler")
    assert [perma.item_labels[c] for c in perma.items[:5]] == ["A1", "E1", "P1", "N1", "A2"]
    assert perma.score_def("positive_emotion").items == ["PERMA_3", "PERMA_13", "PERMA_22"]


def test_bpnsfs_subscales():
    b = instruments.load("bpnsfs")
    assert b.score_def("autonomy_satisfaction").items == ["BPN_1", "BPN_7", "BPN_13", "BPN_19"]
    assert b.score_def("competence_frustration").items == ["BPN_6", "BPN_12", "BPN_18", "BPN_24"]


def test_exported_schema_file_is_current():
    on_disk = json.loads((DEFS_DIR / "instrument.schema.json").read_text())
    assert on_disk == instruments.instrument_json_schema()


def test_structural_schema_is_a_valid_json_schema():
    # the registry validates every definition against this schema without re-checking it per process
    import jsonschema

    from instruments.registry import _schema

    schema = _schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)


def test_bad_definition_is_refused(tmp_path: Path):
    text = (DEFS_DIR / "who5-1.yaml").read_text().replace("scale_max: 5", "scale_max: five")
    bad = tmp_path / "who5-1.yaml"
    bad.write_text(text)
    with pytest.raises(instruments.InstrumentDefinitionError, match="scale_max"):
        instruments.parse_definition(bad)
    # wording shipped for a non-commercial instrument is refused by the model
    text = (DEFS_DIR / "bpnsfs-1.yaml").read_text().replace("items:\n- BPN_1\n", "item_text: {BPN_1: x}\nitems:\n- BPN_1\n", 1)
    bad = tmp_path / "bpnsfs-1.yaml"
    bad.write_text(text)
    with pytest.raises(instruments.InstrumentDefinitionError, match="wording"):
        instruments.parse_definition(bad)


def test_score_range():
    assert instruments.load("who5").score_range("percent") == (0.0, 100.0)
    assert instruments.load("swls").score_range("total") == (5.0, 35.0)
    assert instruments.load("bpnsfs").score_range("autonomy_satisfaction") == (1.0, 5.0)
    assert instruments.load("flourish_index").score_range("secure_flourish") == (0.0, 120.0)
