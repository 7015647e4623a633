"""What a run leaves behind: its store, rows, sinks, manifest, run directory and best-of table."""
