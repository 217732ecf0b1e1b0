"""Validated survey instruments as data files, exact scoring, psychometrics.

Definitions live in ``instruments/defs/<name>-<version>.yaml`` (format: :class:`Instrument`,
JSON Schema from :func:`instrument_json_schema`). Pure functions only: no warehouse, no Prefect.
"""

from instruments.errors import (
    InstrumentDefinitionError,
    InstrumentError,
    LicenceError,
    PsychometricsError,
    ResponseError,
    UnknownInstrument,
)
from instruments.model import Instrument, instrument_json_schema
from instruments.licences import check_licences
from instruments.registry import all_instruments, item_bounds, known_versions, load, parse_definition

# The numerical modules (SciPy, pandas: about 4 s of imports on a loaded machine) load when first used, so a
# command that only checks a protocol's instruments (every run loads its study through flows/study.py) does not
# pay for them (PEP 562).
_LAZY = {
    "CFAFit": "instruments.cfa", "fit_cfa": "instruments.cfa",
    **{name: "instruments.psychometrics" for name in (
        "AlphaResult", "ICCResult", "InvarianceResult", "InvarianceStep", "ItemRestResult", "OmegaResult",
        "cronbach_alpha", "factor_omegas", "icc", "invariance", "item_rest_correlations", "mcdonald_omega",
        "omega_from_loadings", "psychometrics_table", "study_psychometrics", "test_retest_icc")},
    **{name: "instruments.scoring" for name in (
        "ResponseMatrix", "assign_bands", "band_of", "response_matrix", "safety_counts", "safety_flags", "score",
        "score_study")},
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'instruments' has no attribute {name!r}")


__all__ = [
    "AlphaResult",
    "CFAFit",
    "ICCResult",
    "InvarianceResult",
    "InvarianceStep",
    "ItemRestResult",
    "OmegaResult",
    "cronbach_alpha",
    "factor_omegas",
    "fit_cfa",
    "icc",
    "invariance",
    "item_rest_correlations",
    "mcdonald_omega",
    "omega_from_loadings",
    "psychometrics_table",
    "safety_counts",
    "study_psychometrics",
    "test_retest_icc",
    "Instrument",
    "ResponseMatrix",
    "assign_bands",
    "band_of",
    "check_licences",
    "response_matrix",
    "safety_flags",
    "score",
    "score_study",
    "InstrumentDefinitionError",
    "InstrumentError",
    "LicenceError",
    "PsychometricsError",
    "ResponseError",
    "UnknownInstrument",
    "all_instruments",
    "instrument_json_schema",
    "item_bounds",
    "known_versions",
    "load",
    "parse_definition",
]
