"""Splitting a job's task space into shards by stable task id.

A task belongs to shard `hash(task_id) mod N`: the id is a content hash (item, backend, model,
parameters, repeat, template), so the split does not depend on list position, on which backends are
selected or on the dataset's order, and a resumed run sends every task to the shard that holds its
row. The count N is fixed for the life of a run: another N would move tasks to shards whose stores
do not know them, and finished calls would be paid again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass

from evalpipe.pipeline.job.expand import expand_job
from evalpipe.pipeline.job.load import LoadedJob


def shard_of(task_id: str, count: int) -> int:
    """The shard (0 .. count-1) that runs `task_id`."""
    # blake2b, not Python's hash(): it must agree across processes and machines (hash() is salted).
    digest = hashlib.blake2b(task_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` of `count`: the tasks it runs are those `owns` says yes to."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count} does not exist")

    def owns(self, task_id: str) -> bool:
        """Whether this shard runs `task_id`."""
        return self.count == 1 or shard_of(task_id, self.count) == self.index


def count_shard_tasks(loaded: LoadedJob, backend_ids: Collection[str], shard: Shard) -> int:
    """How many rows the tasks of `shard` for `backend_ids` write (one per task, one per dialogue turn)."""
    return sum(len(task.row_ids) for task in expand_job(loaded, backend_ids=backend_ids) if shard.owns(task.task_id))


__all__ = ["Shard", "count_shard_tasks", "shard_of"]
