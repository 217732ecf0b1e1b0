"""Builders and fixtures shared by the tests (nothing here is a test)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository's root: the working directory of the tests' subprocesses."""
