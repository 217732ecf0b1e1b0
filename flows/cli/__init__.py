"""``flourish``: the command line, a thin face over the flows (STYLE.md, habit 12).

A leaf: nothing in the project imports ``flows.cli``. Each area module (``spine``, ``instruments``,
``privacy``, ``analysis``) defines its commands and a ``register(app)``; this file lists them. Every command
is wrapped by :func:`flows.cli.errors.one_sentence`: Flourish's own errors become one sentence on stderr and
exit code 2; anything else is a bug and keeps its traceback. Heavy libraries (pandas, PyMC, OpenDP, Prefect)
are imported inside the commands, so ``flourish --help`` starts fast.
"""

from __future__ import annotations

import sys

import typer

import flows  # noqa: F401  (the quiet process defaults, before numpy or Prefect load)
from flows.cli import analysis, design, instruments, pipeline, privacy, quality, reports, scaleout, spine

app = typer.Typer(
    name="flourish",
    help="Flourish: longitudinal wellbeing field studies of AI-assistant features.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _area in (spine, pipeline, instruments, privacy, analysis, design, quality, reports, scaleout):
    _area.register(app)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"flourish {version('flourish')}")
        except PackageNotFoundError:  # running from a source tree that was never installed
            typer.echo("flourish (source tree, not installed)")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print Flourish's version and exit.")) -> None:
    """Flourish: longitudinal wellbeing field studies of AI-assistant features."""


def main() -> None:
    app(prog_name="flourish")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
