"""One sentence for every error a user can act on.

Any :class:`schemas.errors.FlourishError` (every package's refusals subclass it) becomes ``error: <one
sentence>.`` on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

import typer

from schemas.errors import FlourishError


class UserError(FlourishError):
    """An error the user can fix, raised by the command line itself (a missing folder, a bad option)."""


def sentence(exc: BaseException) -> str:
    """The error's message as one line without a trailing period (whatever newlines it carried)."""
    text = " ".join(str(exc).split()).rstrip(".")
    return text or type(exc).__name__


def one_sentence(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a command: a FlourishError becomes one sentence on stderr and exit code 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FlourishError as exc:
            typer.echo(f"error: {sentence(exc)}.", err=True)
            raise typer.Exit(code=2) from None

    return wrapper
