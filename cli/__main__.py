"""``python -m cli``: the ``mycelium`` command without the console script."""

from cli.main import main

main()
