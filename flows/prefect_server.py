"""The Prefect API a Flourish command talks to: one server per command, gone when the command is.

With ``PREFECT_API_URL`` set (a ``prefect server start`` the team runs, or Prefect Cloud), flows use it and nothing
is started. Otherwise Flourish starts a local Prefect server for the command, on 127.0.0.1 only, and every flow and
task of the command uses that one server (DESIGN.md: nothing to start by hand for a run). It replaces Prefect's own
ephemeral server for two reasons found in the hardening report (D13): Prefect starts its ephemeral server lazily
per client, and a ``kill -9`` of the command left that server (about 230 MB) running for good with its flow run stuck
in ``Running``. Here the server is started with the kernel's parent-death signal (``PR_SET_PDEATHSIG``, Linux), so it
ends with the command however the command ends, and it is stopped cleanly on a normal exit.

The server keeps its database in Prefect's home (``PREFECT_HOME``, default ``~/.prefect``), so runs of every command
stay visible in the Prefect UI (``prefect server start`` on the same home shows them).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from schemas.errors import FlourishError

_PR_SET_PDEATHSIG = 1


class PrefectServerError(FlourishError, RuntimeError):
    """The local Prefect server did not start (its own message, shortened, says why)."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the server is still stopped on a normal exit


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _drain_to(url: str) -> None:
    """Send the logs and events Prefect still holds for this server before it stops (otherwise they are sent at
    interpreter exit to a server that is gone, and Prefect prints an error about it)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def configured_api_url(*, import_prefect: bool) -> str | None:
    """The Prefect API the user configured, if any: ``PREFECT_API_URL`` in the environment or, once Prefect's
    settings are imported (``import_prefect``, or already by an enclosing block), in Prefect's profile."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if not import_prefect and "prefect.settings" not in sys.modules:
        return None
    from prefect.settings import PREFECT_API_URL

    value = PREFECT_API_URL.value()
    return str(value) if value else None


@contextlib.contextmanager
def prefect_api(timeout_seconds: float = 180.0) -> Iterator[str]:
    """Yield the API URL every flow of this block uses: ``PREFECT_API_URL``, or a local server started here.

    The server process is started before Prefect is imported here, so its start-up (about 6 s of CPU, mostly
    imports) overlaps with the command's own imports; a ``PREFECT_API_URL`` set in Prefect's profile rather than
    the environment is seen only after the import, and then the server just started is stopped unused."""
    configured = configured_api_url(import_prefect=False)
    if configured:
        yield configured
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    log = tempfile.TemporaryFile()  # the server's own error lines, read only if it fails to start
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        configured = configured_api_url(import_prefect=True)
        if configured:  # from the profile: use it, the local server was not needed
            yield configured
            return
        deadline = time.monotonic() + timeout_seconds
        while not _healthy(url):
            if proc.poll() is not None:
                log.seek(0)
                tail = log.read().decode("utf-8", "replace").strip().splitlines()
                raise PrefectServerError("the local Prefect server exited at start-up"
                                         + (f": {tail[-1][:200]}" if tail else ""))
            if time.monotonic() > deadline:
                raise PrefectServerError(f"the local Prefect server did not answer within {timeout_seconds:.0f} s; "
                                         "start one with `prefect server start` and set PREFECT_API_URL")
            time.sleep(0.2)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _drain_to(url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def orchestration() -> Iterator[None]:
    """For a command that will run flows: start the Prefect API now (before the command imports the pipeline, so
    the two start-ups overlap), or nothing when ``FLOURISH_ORCHESTRATOR=inline``. The flows inside find it."""
    from flows.settings import Settings

    if Settings.from_env().orchestrator == "inline":
        yield
        return
    with prefect_api():
        yield
