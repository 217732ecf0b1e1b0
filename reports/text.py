"""Numbers as people read them, and the HTML pieces every report shares.

One rule per kind of number, so every report says the same thing the same way:

- a DP-released number carries its interval from the DP noise (value +/- z x noise SD at the study's interval
  level) and says so;
- a suppressed cell reads ``suppressed (n < k)``, never 0 and never blank;
- an effect carries its interval and says whether the interval includes the DP noise (public tier) or not;
- a section without data reads ``not available: <why>``.

Rounding happens here, when rendering, never in the bundle (research/aesthetics.md, pingouin "do not copy").
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from statistics import NormalDist
from typing import Any

from reports.bundle import NotAvailable, ReleasedValue
from schemas.results import Effect

SUPPRESSED = "suppressed (n < {k})"
NO_RELEASE = "the protocol plans no DP release (it has no privacy section)"


def cell_floor(protocol: Any) -> int | None:
    """The smallest released count (``privacy.min_cell_size``), or None for a study that releases nothing."""
    return protocol.privacy.min_cell_size if protocol.privacy is not None else None


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def z_of(level: float) -> float:
    """The normal quantile of a two-sided interval at ``level`` (1.96 at 95%)."""
    return NormalDist().inv_cdf(0.5 + level / 2)


def fmt(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant figures (at least the integer part), thousands separated."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "not available"
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{x:,.{decimals}f}"


def fmt_count(x: float | None) -> str:
    """A (possibly noisy) count, to the nearest whole participant."""
    return "not available" if x is None else f"{x:,.0f}"


def pct(p: float | None) -> str:
    return "not available" if p is None else f"{100 * p:.0f}%"


def suppressed(k: int | None) -> str:
    return SUPPRESSED.format(k=k) if k is not None else "suppressed"


def released(v: ReleasedValue | None, level: float, k: int, *, count: bool = False) -> str:
    """A released cell as text: value and its interval from the DP noise, or the suppression sentence."""
    if v is None:
        return "not released"
    if v.suppressed:
        return suppressed(k)
    lo, hi = noise_interval(v, level)
    show = fmt_count if count else fmt
    return f"{show(v.value)} ({show(lo)} to {show(hi)})"


def noise_interval(v: ReleasedValue, level: float) -> tuple[float | None, float | None]:
    if v.value is None or v.noise_sd is None:
        return None, None
    half = z_of(level) * v.noise_sd
    return v.value - half, v.value + half


def effect_text(e: Effect) -> str:
    """Estimate and interval of an effect, or why it could not be estimated."""
    if e.reason is not None:
        return f"not estimable: {e.reason}"
    if e.lower is None:
        return fmt(e.estimate)
    return f"{fmt(e.estimate)} ({fmt(e.lower)} to {fmt(e.upper)})"


def interval_label(level: float | None, tier: str) -> str:
    lvl = f"{100 * (level or 0.95):.0f}%"
    if tier == "public":
        return f"{lvl} interval; it includes the DP noise (noise-aware model fitted to the DP releases)"
    return f"{lvl} interval (trusted tier: participant-level data, no DP noise)"


def not_available(section: Any, what: str) -> str | None:
    """The "not available" paragraph for an absent section, or None when the section is there."""
    if section is None:
        return f'<p class="na">{esc(what)}: not available.</p>'
    if isinstance(section, NotAvailable):
        return f'<p class="na">{esc(what)}: not available: {esc(section.reason)}.</p>'
    return None


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, caption: str | None = None,
          numeric: Sequence[int] = (), cls: str = "") -> str:
    """An HTML table; cells are escaped unless wrapped in :class:`Raw`."""
    def cell(tag: str, i: int, v: Any) -> str:
        klass = ' class="num"' if i in numeric else ""
        content = v.html if isinstance(v, Raw) else esc(v)
        return f"<{tag}{klass}>{content}</{tag}>"

    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Raw:
    """Trusted HTML for a table cell (built by this package from escaped parts)."""

    def __init__(self, html_text: str) -> None:
        self.html = html_text


CSS = """
:root { --ink: #1b1b1b; --muted: #555; --line: #d9d9d9; --bg: #fff; --accent: #0b5394; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 1.5rem 2rem 4rem; color: var(--ink); background: var(--bg); line-height: 1.45; }
h1 { font-size: 1.6rem; margin: .2rem 0; } h2 { font-size: 1.25rem; margin-top: 2.4rem; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.05rem; margin-top: 1.6rem; }
p.sub, .muted { color: var(--muted); } p.na { color: #6b4b00; background: #fff8e1; padding: .4rem .6rem; border-left: 4px solid #e0b100; }
table { border-collapse: collapse; width: 100%; font-size: .86rem; margin: .6rem 0 1rem; }
caption { text-align: left; font-weight: 600; padding: .2rem 0; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .45rem; text-align: left; vertical-align: top; overflow-wrap: break-word; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .hash { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: .82rem; word-break: break-all; }
.view { display: grid; grid-template-columns: minmax(0, 1.15fr) minmax(0, 1fr); gap: 1.2rem; align-items: start; }
.view .chart { min-height: 120px; overflow-x: auto; } .view .numbers { max-height: 520px; overflow: auto; }
@media (max-width: 900px) { .view { grid-template-columns: 1fr; } }
.badge { display: inline-block; padding: 0 .45rem; border-radius: .3rem; font-size: .78rem; font-weight: 600; }
.b-ok { background: #e3f1e6; color: #1d5a2c; } .b-warn { background: #fff1cc; color: #6b4b00; }
.b-bad { background: #fde2e1; color: #8a1c12; } .b-info { background: #e3eefc; color: #123f7a; }
.summary { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: .8rem; margin: 1rem 0; }
.card { border: 1px solid var(--line); border-radius: .4rem; padding: .6rem .8rem; }
.card b { display: block; font-size: 1.1rem; } .card span { color: var(--muted); font-size: .8rem; }
.suppressed { color: #8a1c12; font-style: italic; }
figure { margin: .5rem 0 1.2rem; } figcaption { color: var(--muted); font-size: .85rem; }
nav.toc a { margin-right: .8rem; } .tier { font-size: .8rem; text-transform: uppercase; letter-spacing: .06em; }
@media print { .view { display: block; } .view .numbers { max-height: none; } body { max-width: none; } }
"""


def page(title: str, body: str, *, head_extra: str = "", lang: str = "en") -> str:
    """A whole HTML document: CSS inline, nothing loaded from anywhere."""
    return (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style>{head_extra}</head><body>{body}</body></html>\n")
