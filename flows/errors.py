"""The shared base of Flourish's own errors: the CLI prints any of them as one sentence, exit code 2."""


class FlourishError(Exception):
    """An error the user can act on (bad input, a refused operation); never a bug."""
