"""Tasks turned into scored answers: the runner, its limits, model calls, chains and the tool loop."""
