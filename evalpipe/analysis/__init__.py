"""Reading finished (or interrupted) run directories back: summaries with confidence intervals,
run-versus-run comparisons and the self-contained HTML report.

Everything here reads the Parquet parts through polars lazy scans, projecting only the columns a
number needs, so a million-row run is summarised without loading prompts and answers."""
