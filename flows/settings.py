"""Flourish's settings: the one place that reads ``FLOURISH_*`` from the environment (STYLE.md, habit 10).

Everything else receives a :class:`Settings` value (or the one field it needs) as an argument. Values are
validated when read, so a typo is one sentence at start-up rather than a surprise later.

| variable | meaning | default |
|---|---|---|
| ``FLOURISH_ORCHESTRATOR`` | ``prefect`` (flows run under Prefect) or ``inline`` (the same functions, no Prefect) | ``prefect`` |
| ``FLOURISH_DUCKDB_MEMORY_LIMIT`` | DuckDB's memory cap per process, e.g. ``2GB`` | ``2GB`` |
| ``FLOURISH_FAST_PATH`` | ``0`` sends every landing row through the exact ingest path | ``1`` |
| ``FLOURISH_PSEUDONYM_KEY`` | the pseudonym key itself | none |
| ``FLOURISH_PSEUDONYM_KEY_FILE`` | a file holding the pseudonym key | none |

:func:`quiet_process_defaults` is the process-wide half: the environment Prefect and the numeric libraries
read when they are imported (no telemetry, no analytics, no update checks, one BLAS thread). It fills in
only what the user has not set, and ``flows/__init__.py`` calls it once, so every way into the code (the
CLI, ``import flows``, a served deployment) runs quiet and private.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from schemas.errors import FlourishError

Orchestrator = Literal["prefect", "inline"]
_MEMORY = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)


class SettingsError(FlourishError, ValueError):
    """A ``FLOURISH_*`` variable holds a value Flourish cannot use."""


@dataclass(frozen=True)
class Settings:
    orchestrator: Orchestrator = "prefect"
    duckdb_memory_limit: str = "2GB"
    fast_path: bool = True
    pseudonym_key: str | None = None
    pseudonym_key_file: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        orchestrator = env.get("FLOURISH_ORCHESTRATOR", "prefect").strip().lower() or "prefect"
        if orchestrator not in ("prefect", "inline"):
            raise SettingsError(f"FLOURISH_ORCHESTRATOR must be prefect or inline, not {orchestrator!r}")
        memory = env.get("FLOURISH_DUCKDB_MEMORY_LIMIT", "2GB").strip() or "2GB"
        if not _MEMORY.match(memory):
            raise SettingsError(f"FLOURISH_DUCKDB_MEMORY_LIMIT must be a size such as 2GB or 512MiB, not {memory!r}")
        fast = env.get("FLOURISH_FAST_PATH", "1").strip()
        if fast not in ("0", "1", ""):
            raise SettingsError(f"FLOURISH_FAST_PATH must be 0 or 1, not {fast!r}")
        return cls(
            orchestrator=orchestrator,  # type: ignore[arg-type]
            duckdb_memory_limit=memory,
            fast_path=fast != "0",
            pseudonym_key=env.get("FLOURISH_PSEUDONYM_KEY") or None,
            pseudonym_key_file=env.get("FLOURISH_PSEUDONYM_KEY_FILE") or None,
        )


def pseudonym_key(key_file: str | Path | None = None, settings: Settings | None = None) -> bytes:
    """The study's pseudonym key: ``key_file`` when given, else FLOURISH_PSEUDONYM_KEY, else the file named by
    FLOURISH_PSEUDONYM_KEY_FILE; refused with one sentence when none is usable."""
    from privacy.pseudonym import load_key

    s = settings or Settings.from_env()
    if key_file is not None:
        return load_key(key_file)
    if s.pseudonym_key:
        return load_key(key_text=s.pseudonym_key, key_text_source="FLOURISH_PSEUDONYM_KEY")
    return load_key(s.pseudonym_key_file)


# What Prefect, its server and the numeric libraries read at import. Prefect: no analytics, no telemetry
# (DO_NOT_TRACK), no update or "what's new" checks, a start-up timeout that survives a loaded 2-core machine
# (research/stack.md), its own log lines only from warnings up, and no error line when a task logs outside a
# flow. BLAS: one thread per process (several threads inside each gradient evaluation slow NUTS several-fold).
PROCESS_DEFAULTS: dict[str, str] = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    # Prefect's console handler would print a traceback for every failed task before the command's own one-sentence
    # error (D13); run logs still go to Prefect's API and UI
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def quiet_process_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set every :data:`PROCESS_DEFAULTS` the user has not set; return what was set.

    Also silences one warning by its exact text: PyTensor's C backend says it found no BLAS to link, but our models
    are compiled by nutpie with numba, which does not use it, so the warning only alarms a reader."""
    import warnings

    warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS installation", category=UserWarning)
    env = os.environ if environ is None else environ
    applied = {}
    for name, value in PROCESS_DEFAULTS.items():
        if name not in env:
            env[name] = value
            applied[name] = value
    return applied
