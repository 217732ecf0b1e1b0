"""The byte facts of a file the fast path may read: what its bytes alone rule in or out.

DuckDB's ``read_json`` reads a line differently from JSON in a few places, so a file whose bytes hold one of
them takes the exact path: a byte-order mark, a comma before a closing bracket (``{"a": 1,}``: DuckDB's parser
takes it, JSON and the contract do not), a raw vertical tab or form feed (DuckDB's line reader takes them as
blanks around a record; JSON does not, and no valid JSON line holds one). The physical line count lets the
verify pass prove it read every line: rows read must equal lines (no blank, skipped or split lines). A line
longer than a row may be (``MAX_ROW_BYTES``, DuckDB's own ``maximum_object_size``) would fail ``read_json``:
its file is left to the chunks, which refuse that line alone (``row_too_large``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.records import MAX_ROW_BYTES

BLOCK = MAX_ROW_BYTES  # no block holds a whole line longer than a row may be, so only runs across blocks count
_COMMA, _CLOSE_BRACE, _CLOSE_BRACKET = ord(","), ord("}"), ord("]")
_BLANK_BYTES = np.array([ord(" "), ord("\t"), ord("\r"), ord("\n")], dtype=np.uint8)


@dataclass(frozen=True)
class FileFacts:
    lines: int  # physical lines (a last line without a newline counts)
    bom: bool
    trailing_comma: bool  # a comma before a closing bracket somewhere (TRAILING_COMMA)
    vt_or_ff: bool  # a raw vertical tab or form feed
    too_long: bool = False  # a line longer than MAX_ROW_BYTES (read_json would fail on it; the chunks refuse it)

    @property
    def readable_by_read_json(self) -> bool:
        """Nothing in the bytes makes DuckDB's reader and JSON disagree, and there is a line to read."""
        return not (self.bom or self.trailing_comma or self.vt_or_ff or self.too_long) and self.lines > 0


def _trailing_comma(block: np.ndarray, after: np.ndarray) -> tuple[bool, bool]:
    """(a comma, then JSON blanks, then ``}`` or ``]``; a comma whose blanks run to the block's end, pending for
    the next block), given ``after``, the positions just past this block's commas (and 0 for a comma pending
    from the block before). Vectorised: each step looks one byte further past the commas still followed only
    by blanks (one step in a compact file, two in Python's default layout)."""
    pending = False
    pos = after
    while pos.size:
        pending = pending or bool((pos >= block.size).any())
        pos = pos[pos < block.size]
        nxt = block[pos]
        if bool(((nxt == _CLOSE_BRACE) | (nxt == _CLOSE_BRACKET)).any()):
            return True, False
        pos = pos[np.isin(nxt, _BLANK_BYTES)] + 1
    return False, pending


def file_facts(path: Path) -> FileFacts:
    """Newlines, a byte-order mark, trailing commas and raw vertical tabs or form feeds of a file, read in
    blocks into one reused buffer. A trailing comma may straddle blocks: a comma whose blanks run to a block's
    end is pending until the next block's first non-blank byte."""
    lines = since_newline = 0
    trailing = pending = vt_or_ff = too_long = False
    buf = bytearray(BLOCK)
    last = b""
    with path.open("rb") as fh:
        bom = fh.read(3) == b"\xef\xbb\xbf"
        fh.seek(0)
        while n := fh.readinto(buf):
            lines += buf.count(b"\n", 0, n)
            first = buf.find(b"\n", 0, n)
            if first < 0:
                since_newline += n
            else:
                too_long = too_long or since_newline + first > MAX_ROW_BYTES
                since_newline = n - 1 - buf.rfind(b"\n", 0, n)
            too_long = too_long or since_newline > MAX_ROW_BYTES
            vt_or_ff = vt_or_ff or buf.find(b"\x0b", 0, n) >= 0 or buf.find(b"\x0c", 0, n) >= 0
            if not trailing:
                block = np.frombuffer(buf, dtype=np.uint8, count=n)
                after = np.flatnonzero(block == _COMMA) + 1
                if pending:
                    after = np.concatenate([np.zeros(1, dtype=after.dtype), after])
                trailing, pending = _trailing_comma(block, after)
                del block  # the buffer is reused: no view of it may outlive the block
            last = buf[n - 1:n]
    if last and last != b"\n":  # a last line without a newline counts
        lines += 1
    return FileFacts(lines, bom, trailing, vt_or_ff, too_long)
