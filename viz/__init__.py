"""The pygame viewer and GIF recorder.

``scene`` is the pure model, ``render`` draws it with pygame, ``recorder`` writes GIF/PNG,
``sources`` produce network snapshots, ``app`` runs the loop (``run_viewer``).
"""

import os

# pygame prints a banner on import unless told not to; the CLI's output should stay clean.
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
