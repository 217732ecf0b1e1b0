"""``python -m flows.cli``: the same as the ``flourish`` command."""

from flows.cli import main

main()
