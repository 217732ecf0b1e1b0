"""The privacy tests' protocol and synthetic warehouse (tests/support/privacy.py)."""

from tests.support.privacy import protocol, warehouse  # noqa: F401  (fixtures)
