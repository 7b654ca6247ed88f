"""Which input offsets a stage may commit: the first record per partition not yet done.

A stage finishes records out of order (a dead letter at once, a labeled example only when
a training step used it). Committing past an unfinished record would lose it on a crash,
so the committable offset of a partition is the offset of its *first unfinished* record
(or the last record + 1 when all are done): the Kafka "next offset to read" convention.
"""

from __future__ import annotations

from collections import OrderedDict

from online_distill.streams import Partition, Record


class OffsetTracker:
    """Tracks records from polled to done, per partition, in offset order."""

    def __init__(self) -> None:
        self._open: dict[Partition, OrderedDict[int, bool]] = {}
        self._next: dict[Partition, int] = {}

    def add(self, record: Record) -> None:
        """A record was polled (records of one partition arrive in offset order)."""
        self._open.setdefault(record.where, OrderedDict())[record.offset] = False
        self._next[record.where] = max(self._next.get(record.where, 0), record.offset + 1)

    def done(self, record: Record) -> None:
        """The record's output is safe (stored downstream, or in a checkpoint)."""
        pending = self._open.get(record.where)
        if pending is not None and record.offset in pending:
            pending[record.offset] = True
            while pending and next(iter(pending.values())):
                pending.popitem(last=False)

    def committable(self) -> dict[Partition, int]:
        """Per partition seen, the offset to commit now (next offset to read)."""
        out = {}
        for part, nxt in self._next.items():
            pending = self._open.get(part)
            out[part] = next(iter(pending)) if pending else nxt
        return out

    def reset(self, part: Partition, offset: int) -> None:
        """Forget what was polled from ``part``: reading restarts at ``offset``."""
        self._open.pop(part, None)
        self._next[part] = offset

    @property
    def in_flight(self) -> int:
        """Records polled but not done."""
        return sum(len(p) for p in self._open.values())


def offsets_to_json(offsets: dict[Partition, int]) -> dict[str, int]:
    """``{"topic:partition": offset}``, the form stored in checkpoints."""
    return {f"{p.topic}:{p.partition}": off for p, off in offsets.items()}


def offsets_from_json(data: dict[str, int]) -> dict[Partition, int]:
    """Inverse of :func:`offsets_to_json`."""
    out = {}
    for key, off in data.items():
        topic, _, part = key.rpartition(":")
        out[Partition(topic, int(part))] = int(off)
    return out


def shard_partitions(partitions: list[int], rank: int, world_size: int) -> list[int]:
    """The partitions worker ``rank`` of ``world_size`` reads: p mod world_size == rank.

    Raises a ValueError that says how to fix it when a worker would get none (more workers
    than partitions would leave a worker without data and stall every step)."""
    if world_size > len(partitions):
        raise ValueError(
            f"learner.workers={world_size} but the labels topic has {len(partitions)} "
            f"partitions: a worker would read nothing and every step would wait for it; "
            f"set kafka.partitions >= {world_size} (new topics) or lower learner.workers")
    ordered = sorted(partitions)
    return [p for i, p in enumerate(ordered) if i % world_size == rank]
