"""The ingest's one refusal, and the one way a partner's file name enters a message."""

from __future__ import annotations

import unicodedata

from schemas.errors import FlourishError


class IngestError(FlourishError):
    """The batch cannot be ingested at all (a folder that cannot be written, a file changed while read, a
    warehouse that fails); the transaction is rolled back and nothing of the batch is stored."""


def printable(name: str, limit: int = 200) -> str:
    """A partner's file name as plain text: control and format characters (escape codes, a bidirectional
    override) written as ``\\x..`` escapes, and cut at ``limit`` characters. It decides nothing about markup:
    the command line prints it as text (flows/cli/spine.py)."""
    out = []
    for ch in name:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii") if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 1] + "…"
