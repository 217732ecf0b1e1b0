"""Licence gate: may a study use these instruments for its declared purpose?

The study-protocol validator calls :func:`check_licences`. Non-commercial (e.g. CC BY-NC 4.0
Flourish Index, PERMA-Profiler, BPNSFS) and registration-only instruments need a recorded
permission reference when the intended use is commercial.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from instruments.errors import LicenceError
from instruments.registry import known_versions, load

INTENDED_USES = ("research", "non_commercial", "commercial")
_NEEDS_PERMISSION_FOR_COMMERCIAL = ("non_commercial", "registration")


def check_licences(instrument_names: Iterable[str], intended_use: str, permissions: Mapping[str, str] | None = None) -> None:
    """Raise :class:`LicenceError` when ``intended_use == "commercial"`` names an instrument
    whose licence is non-commercial (or registration-only) and ``permissions`` holds no
    non-empty permission reference for it. ``permissions`` maps instrument name to a
    reference (licence number, e-mail, contract id). Unknown instruments raise
    :class:`~instruments.errors.UnknownInstrument`; returns None when all is allowed.
    """
    if intended_use not in INTENDED_USES:
        raise LicenceError(f"intended use {intended_use!r} is not one of {', '.join(INTENDED_USES)}")
    permissions = dict(permissions or {})
    names = list(dict.fromkeys(instrument_names))
    insts = [_load_named(n) for n in names]
    if intended_use != "commercial":
        return None
    refused = [
        f"{i.name} ({i.licence.kind.replace('_', '-')}: {i.licence.terms or i.licence.holder})"
        for i in insts
        if i.licence.kind in _NEEDS_PERMISSION_FOR_COMMERCIAL and not str(permissions.get(i.name, "")).strip()
    ]
    if refused:
        raise LicenceError(
            "commercial use needs a recorded permission reference for " + "; ".join(refused)
            + " - add it under the protocol's instrument permissions or drop the instrument"
        )
    return None



def _load_named(name: str):
    """``who5`` or ``who5-1`` (name-version, as in the definition file names)."""
    if name not in known_versions() and "-" in name:
        base, version = name.rsplit("-", 1)
        return load(base, version)
    return load(name)
