"""``flourish``: the command line, a thin face over the flows (STYLE.md, habit 12).

Every command turns Flourish's own errors into one sentence on stderr and exit code 2;
anything else is a bug and keeps its traceback. Areas add their commands through a
``register(app)`` function in ``flows/cli_<area>.py``, so this file stays an index.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from functools import wraps
from typing import Any

import typer

app = typer.Typer(
    name="flourish",
    help="Flourish: longitudinal wellbeing field studies of AI-assistant features.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class UserError(Exception):
    """An error the user can fix; printed as one sentence, exit code 2."""


def _known_errors() -> tuple[type[BaseException], ...]:
    from flows.warehouse import WarehouseError
    from privacy.pseudonym import PseudonymKeyError
    from schemas.protocol import ProtocolError

    errors: list[type[BaseException]] = [UserError, ProtocolError, WarehouseError, PseudonymKeyError]
    try:
        from flows.errors import FlourishError  # optional shared base, see flows/errors.py
        errors.append(FlourishError)
    except ImportError:
        pass
    return tuple(errors)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: Flourish's own errors become one sentence on stderr and exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _known_errors() as exc:
            message = " ".join(str(exc).split()).rstrip(".")  # one line, whatever the error carried
            typer.echo(f"error: {message}.", err=True)
            raise typer.Exit(code=2) from None

    return wrapper


def _register_areas() -> None:
    from flows import cli_spine

    cli_spine.register(app)
    for module_name in ("flows.cli_instruments", "flows.cli_privacy", "flows.cli_analysis", "flows.cli_reports"):
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # that area has not shipped a CLI yet
                continue
            raise
        if hasattr(module, "register"):
            module.register(app)
        else:  # a sub-app mounted under its area's name, e.g. ``flourish instruments ...``
            app.add_typer(module.app, name=module_name.rsplit("_", 1)[1])


def main() -> None:
    # BLAS threads inside every gradient evaluation slow NUTS several-fold on 2 cores (research/stack.md);
    # set before numpy loads, which the area modules' commands do lazily.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    # PyTensor's C backend warns that it found no BLAS to link; our models are compiled by nutpie with
    # numba, which does not use it, so the warning only alarms a reader of the demo.
    warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS installation", category=UserWarning)
    _register_areas()
    app(prog_name="flourish")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
