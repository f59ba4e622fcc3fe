"""Harnesses as library code: local clusters of real nodes, the whole network in memory on a fake
clock, child processes of the ``mycelium`` command, and waiting for conditions with a deadline.
Used by the tests, the demo, the experiments and the benchmarks."""
