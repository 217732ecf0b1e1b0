"""Loading a study protocol for a run: the contract (schemas/) plus the checks that need other packages.

``schemas.protocol.load_protocol`` validates the protocol on its own terms. A run also needs every
instrument the waves name to exist in the instrument library, and a commercial study to hold a
permission reference for every non-commercial instrument (instruments/licences.py). Every command
and flow loads protocols through ``load_study``, so a protocol that fails these is refused before
anything runs, with one sentence.
"""

from __future__ import annotations

from pathlib import Path

from schemas.protocol import ProtocolError, StudyProtocol, load_protocol


def check_study(protocol: StudyProtocol) -> StudyProtocol:
    """Raise ProtocolError when an instrument is unknown or its licence forbids the intended use."""
    import instruments

    permissions = {p.instrument: p.reference for p in protocol.instrument_permissions}
    try:
        instruments.check_licences(protocol.instruments(), protocol.intended_use, permissions)
    except (instruments.LicenceError, instruments.UnknownInstrument) as exc:
        raise ProtocolError(f"study protocol {protocol.study_id} is refused: {' '.join(str(exc).split())}") from exc
    return protocol


def load_study(path: str | Path) -> StudyProtocol:
    return check_study(load_protocol(path))
