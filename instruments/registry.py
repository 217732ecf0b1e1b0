"""The shipped instrument definitions (``defs/<name>-<version>.yaml``), parsed once and cached.

Each file is checked twice on load: against the JSON Schema exported from
:class:`instruments.model.Instrument` (structure) and by the pydantic model itself
(cross-field rules: scores name known items, bands ascend, wording only where the licence
allows). The file name must agree with the ``name`` and ``version`` inside.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jsonschema
import yaml

from instruments.errors import InstrumentDefinitionError, UnknownInstrument
from instruments.model import Instrument, instrument_json_schema

DEFS_DIR = Path(__file__).parent / "defs"
# libyaml's safe loader when PyYAML was built with it: the same documents, about ten times faster (the
# shipped definitions are parsed on the first ingest or scoring of every process)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _version_key(v: str) -> tuple:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in v.replace("-", ".").split("."))


def parse_definition(path: Path) -> Instrument:
    """Parse and validate one definition file (not cached; use :func:`load` for shipped ones)."""
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)
    except yaml.YAMLError as e:
        raise InstrumentDefinitionError(f"{path.name} is not valid YAML: {e}") from e
    try:
        _validator().validate(raw)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise InstrumentDefinitionError(f"{path.name} breaks the instrument schema at {where}: {e.message}") from e
    try:
        inst = Instrument.model_validate(raw)
    except ValueError as e:
        raise InstrumentDefinitionError(f"{path.name} is not a valid instrument definition: {e}") from e
    if path.stem != f"{inst.name}-{inst.version}":
        raise InstrumentDefinitionError(f"{path.name} declares {inst.name}-{inst.version}; file name must match")
    return inst


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    # YAML keys of ``anchors`` are ints; JSON Schema would demand strings for object keys,
    # so the structural check accepts any key there and pydantic checks the int conversion.
    schema = instrument_json_schema()
    schema["properties"]["anchors"].pop("propertyNames", None)
    return schema


@functools.lru_cache(maxsize=1)
def _validator():
    """One validator for every file (``jsonschema.validate`` re-checks the schema on each call: ~0.1 s a file).

    The schema is generated from our own model, so checking it against its meta-schema is a test's job
    (tests/instruments/test_instr_defs.py), not every process's (0.04 s of each ingest)."""
    schema = _schema()
    return jsonschema.validators.validator_for(schema)(schema)


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, dict[str, Instrument]]:
    reg: dict[str, dict[str, Instrument]] = {}
    for path in sorted(DEFS_DIR.glob("*.yaml")):
        inst = parse_definition(path)
        reg.setdefault(inst.name, {})[inst.version] = inst
    return {n: dict(sorted(vs.items(), key=lambda kv: _version_key(kv[0]))) for n, vs in sorted(reg.items())}


def known_versions() -> dict[str, list[str]]:
    """``{instrument name: [versions, oldest first]}`` for every shipped definition."""
    return {n: list(vs) for n, vs in _registry().items()}


def load(name: str, version: str | None = None) -> Instrument:
    """The frozen definition of ``name`` at ``version`` (newest shipped version when None)."""
    reg = _registry()
    if name not in reg:
        raise UnknownInstrument(f"unknown instrument {name!r}; shipped instruments are {', '.join(reg)}")
    versions = reg[name]
    if version is None:
        return versions[next(reversed(versions))]
    version = str(version)
    if version not in versions:
        raise UnknownInstrument(
            f"unknown version {version!r} of instrument {name!r}; shipped versions are {', '.join(versions)}"
        )
    return versions[version]


def all_instruments() -> list[Instrument]:
    """Every shipped definition (all versions), sorted by name then version."""
    return [inst for vs in _registry().values() for inst in vs.values()]


@functools.lru_cache(maxsize=1)
def _item_bounds() -> tuple[tuple[str, str, str, int, int], ...]:
    return tuple(
        (inst.name, inst.version, code, inst.scale_min, inst.scale_max)
        for inst in all_instruments()
        for code in inst.items
    )


def item_bounds() -> list[tuple[str, str, str, int, int]]:
    """``(instrument, version, item_code, min_value, max_value)`` for every shipped item.

    For ingest validation (one row per allowed item); cached, so cheap to call per batch.
    """
    return list(_item_bounds())
