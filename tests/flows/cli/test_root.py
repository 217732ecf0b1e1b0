"""The root command: --version, --help listing every area."""

from __future__ import annotations

from importlib.metadata import version

from typer.testing import CliRunner

from flows.cli import app


def test_version_prints_the_installed_version():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"flourish {version('flourish')}"


def test_help_lists_every_area():
    out = CliRunner().invoke(app, ["--help"]).stdout
    for command in ("ingest", "demo", "instruments", "erase", "release", "budget", "analyze", "preregister"):
        assert command in out
