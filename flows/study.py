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
    """Raise ProtocolError when an instrument is unknown, its licence forbids the intended use, or an outcome
    Flourish scores is not a score of its instrument (``who5.percent`` must be the ``percent`` score of ``who5``)."""
    import instruments

    permissions = {p.instrument: p.reference for p in protocol.instrument_permissions}
    try:
        instruments.check_licences(protocol.instruments(), protocol.intended_use, permissions)
        for o in protocol.outcomes:
            if o.source != "flourish" or o.instrument is None:
                continue
            inst = instruments.load(o.instrument)
            prefix, _, score = o.name.partition(".")
            if prefix != inst.name or score not in {s.name for s in inst.scores}:
                raise ProtocolError(
                    f"study protocol {protocol.study_id} is refused: outcome {o.name!r} is scored by Flourish, so it "
                    f"must be one of {', '.join(inst.outcome(s.name) for s in inst.scores)}")
    except (instruments.LicenceError, instruments.UnknownInstrument) as exc:
        raise ProtocolError(f"study protocol {protocol.study_id} is refused: {' '.join(str(exc).split())}") from exc
    return protocol


def load_study(path: str | Path) -> StudyProtocol:
    return check_study(load_protocol(path))
