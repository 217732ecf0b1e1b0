"""``flourish instruments``: list, show and score the shipped survey instruments.

A thin face over ``instruments`` (STYLE.md 12). Flourish's own errors become one sentence on
stderr and exit code 2, no traceback (flows/cli/errors.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flows.cli.errors import UserError, one_sentence

app = typer.Typer(
    help="Validated survey instruments: list them, show a definition (items, scoring, bands, licence), "
    "score a CSV of responses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def list_(json_out: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """List every shipped instrument version with its items, scale and licence."""
    import instruments

    rows = [
        {"name": i.name, "version": i.version, "title": i.title, "items": len(i.items),
         "scale": f"{i.scale_min}..{i.scale_max}", "scores": [i.outcome(s.name) for s in i.scores],
         "licence": i.licence.kind, "wording_shipped": bool(i.item_text)}
        for i in instruments.all_instruments()
    ]
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="Shipped instruments")
    for col in ("name", "version", "title", "items", "scale", "licence", "wording"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["version"], r["title"], str(r["items"]), r["scale"], r["licence"],
                      "yes" if r["wording_shipped"] else "codes only")
    Console().print(table)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Instrument name, e.g. who5 (see `list`).")],
    version: Annotated[str | None, typer.Option(help="Version; newest shipped when omitted.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the full definition as JSON.")] = False,
) -> None:
    """Show one definition: items, response scale, scores, missing-item rules, bands, safety flags, licence."""
    import instruments

    inst = instruments.load(name, version)
    if json_out:
        typer.echo(inst.model_dump_json(indent=2))
        return
    console = Console()
    console.print(f"[bold]{inst.title}[/bold] ({inst.name} version {inst.version})")
    console.print(f"{inst.citation}")
    console.print(f"Licence: {inst.licence.kind} - {inst.licence.terms}")
    anchors = ", ".join(f"{k} = {v}" for k, v in inst.anchors.items())
    console.print(f"Response scale {inst.scale_min}..{inst.scale_max}" + (f" ({anchors})" if anchors else ""))
    items = Table(title="Items")
    for col in ("code", "label", "reverse", "wording"):
        items.add_column(col)
    for code in inst.items:
        items.add_row(code, inst.item_labels.get(code, ""), "yes" if code in inst.reverse_keyed else "",
                      inst.item_text.get(code, "(not shipped: licence)" if not inst.licence.wording_allowed else ""))
    console.print(items)
    scores = Table(title="Scores")
    for col in ("outcome", "rule", "items", "missing-item rule"):
        scores.add_column(col)
    for s in inst.scores:
        rule = s.aggregate + (f" x {s.multiplier:g}" if s.multiplier != 1 else "") + (f" + {s.offset:g}" if s.offset else "")
        scores.add_row(inst.outcome(s.name), rule, ", ".join(s.items),
                       f"score when <= {s.max_missing} missing" + (" (prorated)" if s.max_missing else ""))
    console.print(scores)
    for b in inst.bands:
        console.print(f"Bands {b.name} on {inst.outcome(b.score)}: "
                      + ", ".join(f"{x.label} <= {x.upper:g}" for x in b.bands) + f" [{b.source}]")
    for f in inst.safety_flags:
        console.print(f"Safety flag {f.name}: {f.kind} {f.target} {f.op} {f.threshold:g} [{f.source}]")


def score_(
    name: Annotated[str, typer.Argument(help="Instrument name, e.g. who5.")],
    file: Annotated[Path, typer.Argument(help="Wide CSV: one column per item code, optional participant and wave columns.")],
    version: Annotated[str | None, typer.Option(help="Version; newest shipped when omitted.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the scores as JSON records.")] = False,
) -> None:
    """Score a wide CSV (one row per participant x wave) and print every score."""
    import pandas as pd

    import instruments
    from instruments.scoring import SCORE_COLUMNS

    inst = instruments.load(name, version)
    try:
        wide = pd.read_csv(file, dtype={"participant": str, "wave": str})
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"{file} cannot be read as a CSV of responses ({type(exc).__name__})") from None
    out = instruments.score(inst, wide)
    if json_out:
        typer.echo(out[SCORE_COLUMNS].to_json(orient="records", indent=2))
        return
    table = Table(title=f"{inst.name} {inst.version}: {len(out)} scores from {len(wide)} rows of {file.name}")
    for col in SCORE_COLUMNS:
        table.add_column(col, justify="right" if col in ("value", "items_answered") else "left")
    for r in out.itertuples(index=False):
        table.add_row(str(r.participant), str(r.wave), r.outcome, f"{r.value:g}", str(r.items_answered),
                      "yes" if r.prorated else "")
    Console().print(table)


def register(root: typer.Typer) -> None:
    """Mount ``flourish instruments list | show | score``."""
    app.command("list")(one_sentence(list_))
    app.command("show")(one_sentence(show))
    app.command("score")(one_sentence(score_))
    root.add_typer(app, name="instruments")
