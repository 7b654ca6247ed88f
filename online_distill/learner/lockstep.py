"""Lockstep for a learner of N data-parallel workers (``learner.workers = N``).

Each worker reads its own share of the labels topic's partitions (partition p goes to worker
p mod N) and keeps its own pending examples. They must still take the *same* optimizer
steps, so three things are agreed through ``torch.distributed`` collectives (gloo on CPU,
NCCL on GPU) at fixed points of every loop iteration:

1. **Whether to step** (:meth:`StepSync.agree`): one all-reduce per iteration. A step happens
   when every worker has ``batch_size`` fresh examples, or when some worker's fresh examples
   have waited ``max_wait_s`` (a slow stream, or partitions that fill unevenly) and every
   worker has something to train on (fresh examples or a non-empty replay buffer). Then
   every worker trains on exactly ``batch_size`` examples: its fresh ones, topped up from its
   replay buffer, so a worker whose partitions ran dry never stalls the others. A stop
   request on any worker stops them all at the same iteration.
2. **The loss normaliser** (:meth:`StepSync.sum_counts`): the valid-token counts of the whole
   step, summed over workers. Each worker divides its token sum by the global count and DDP
   averages the gradients, so (after scaling the local loss by N) the update equals the one a
   single worker would take on the union of the N batches.
3. **Offsets for checkpoints** (:meth:`StepSync.gather`): rank 0 writes the checkpoint with
   every worker's trained offsets; each worker then commits its own partitions.

Every worker calls the same collectives in the same order, so none can wait on another
forever; a dead worker fails the collective and the whole group restarts from the last
checkpoint (Ray Train's failure handling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist


@dataclass(frozen=True, slots=True)
class Readiness:
    """One worker's state before a possible step."""

    full: bool
    """``batch_size`` fresh examples wait."""
    waited: bool
    """Some fresh examples have waited ``max_wait_s``."""
    can_train: bool
    """There is anything to train on (fresh examples or replay)."""


def should_step(full: int, waited: int, can_train: int, world_size: int) -> bool:
    """The lockstep rule on counts of workers (see the module docstring)."""
    return can_train == world_size and (full == world_size or waited > 0)


class StepSync(Protocol):
    """What the learner needs of its peers; :class:`SingleSync` is the one-worker case."""

    rank: int
    world_size: int

    def agree(self, ready: Readiness, stop: bool) -> tuple[bool, bool]:
        """(step now, some worker asked to stop)."""
        ...

    def sum_counts(self, counts: list[int]) -> list[int]:
        """Element-wise sums of ``counts`` over workers."""
        ...

    def sum_value(self, value: float) -> float:
        """The sum of ``value`` over workers."""
        ...

    def gather(self, obj: Any) -> list[Any]:
        """Every worker's ``obj``, indexed by rank (picklable objects)."""
        ...

    def barrier(self) -> None:
        ...


class SingleSync:
    """One worker: every agreement is its own."""

    rank = 0
    world_size = 1

    def agree(self, ready: Readiness, stop: bool) -> tuple[bool, bool]:
        return should_step(int(ready.full), int(ready.waited), int(ready.can_train), 1), stop

    def sum_counts(self, counts: list[int]) -> list[int]:
        return list(counts)

    def sum_value(self, value: float) -> float:
        return value

    def gather(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        return None


class TorchSync:
    """Agreement through the default ``torch.distributed`` process group (already set up,
    e.g. by Ray Train's TorchTrainer). Tensors live on ``device`` (CUDA for NCCL)."""

    def __init__(self, device: torch.device | None = None) -> None:
        if not dist.is_initialized():
            raise RuntimeError("TorchSync needs an initialised torch.distributed process "
                               "group; run the learner under Ray Train (learner.workers > 1)")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.device = device or torch.device("cpu")

    def agree(self, ready: Readiness, stop: bool) -> tuple[bool, bool]:
        flags = torch.tensor([int(ready.full), int(ready.waited), int(ready.can_train),
                              int(stop)], dtype=torch.int64, device=self.device)  # (4,)
        dist.all_reduce(flags, op=dist.ReduceOp.SUM)
        full, waited, can_train, stops = (int(x) for x in flags.tolist())
        return should_step(full, waited, can_train, self.world_size), stops > 0

    def sum_counts(self, counts: list[int]) -> list[int]:
        t = torch.tensor(counts, dtype=torch.int64, device=self.device)  # (C,)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [int(x) for x in t.tolist()]

    def sum_value(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.device)  # (1,)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t[0])

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        dist.barrier()


