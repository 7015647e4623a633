"""`evalpipe init`: a small job file and dataset that run as written on the local backend (no key, no
network), to edit into one's own job."""

from __future__ import annotations

from pathlib import Path

from evalpipe.errors import ConfigError

JOB_FILENAME = "job.yaml"
DATASET_FILENAME = "items.jsonl"

STARTER_JOB = """\
# A first job: three short questions for the embedded local model (Gemma 3 270M, a base model).
#
#   evalpipe validate job.yaml      # check it; call nothing
#   evalpipe run job.yaml --limit 1 # a smoke run of the first item
#   evalpipe run job.yaml
#   evalpipe summary results/starter/latest
#
# Swap the backend for another (openai, anthropic, ...: `evalpipe backends` lists them and their keys)
# and the dataset for your own items; `evalpipe schema` prints every field a job file may have.
name: starter

dataset:
  path: items.jsonl   # relative to this file: one JSON object per line

prompt:
  # A base model continues text: a few worked examples set the pattern, the answer ends at a newline.
  mode: completion
  user: |-
    Q: What is the capital of France?
    A: Paris
    Q: What is the capital of Germany?
    A: Berlin
    Q: {{ question }}
    A:

backends:
  - id: local
    backend: local
    max_concurrency: 2

parameters:
  sets:
    - name: calm
      temperature: 0
      seed: 7
      max_tokens: 16
      stop: ["\\n"]

scorers:
  # Passes when the answer matches the item's `expected` (case, punctuation and articles aside).
  - type: normalized_match
    name: correct
    expected: "{{ expected }}"
    threshold: 1

output:
  dir: results
  formats: [parquet, csv]
"""

STARTER_DATASET = """\
{"id": "capital-italy", "question": "What is the capital of Italy?", "expected": "Rome"}
{"id": "capital-japan", "question": "What is the capital of Japan?", "expected": "Tokyo"}
{"id": "capital-spain", "question": "What is the capital of Spain?", "expected": "Madrid"}
"""


def write_starter(directory: Path) -> list[Path]:
    """Write the starter job and dataset into `directory` (created if needed); ConfigError rather than
    overwrite a file already there."""
    files = {directory / JOB_FILENAME: STARTER_JOB, directory / DATASET_FILENAME: STARTER_DATASET}
    existing = [str(path) for path in files if path.exists()]
    if existing:
        raise ConfigError(f"{', '.join(existing)} already exists; init writes only new files (choose another "
                          "directory: evalpipe init DIR)")
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return list(files)
