"""`evalpipe view`: a local, read-only web app over a results directory (runs, rows, summary, compare,
history). Needs the `view` extra (starlette, uvicorn)."""
