"""In-process experiments: the group choice simulation, baselines and reports."""
