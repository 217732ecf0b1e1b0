"""Beat the Blues as a long frame (tests/support/btheb.py)."""

from tests.support.btheb import btheb_long  # noqa: F401  (a fixture)
