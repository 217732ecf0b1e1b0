"""The spine's small protocol (two arms, baseline and m1, WHO-5 and an external score) for these tests."""

from tests.support.spine import protocol  # noqa: F401  (a fixture)
