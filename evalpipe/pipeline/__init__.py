"""The job engine, by stage; data flows one way through them.

- `job`: the job file read, checked and costed before any call (spec, load, dataset, templates,
  tools, chain, expand into tasks, availability, plan projection).
- `running`: tasks turned into answers and scores (runner, execute, limits, model calls, chains,
  the tool loop, the response cache, interrupts).
- `output`: what a run leaves behind (run store, rows, sinks, manifest, run directory and its lock,
  best-of).

`running` imports `job` and `output`; `output` imports `job` only for its types; `job` imports neither.
"""
