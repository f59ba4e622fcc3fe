"""The ``mycelium`` command line."""
