"""The lockstep rule, partition shares and the single-worker sync (no process group)."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from online_distill.learner.lockstep import (
    Readiness,
    SingleSync,
    TorchSync,
    should_step,
)
from online_distill.streams.offsets import shard_partitions


@pytest.mark.parametrize(("full", "waited", "can_train", "expected"), [
    (2, 0, 2, True),    # both have a full batch
    (1, 0, 2, False),   # one full, the other still filling, nobody waited long: wait
    (1, 1, 2, True),    # the other's few examples waited max_wait_s: step (top up from replay)
    (0, 1, 2, True),    # a slow stream: one worker waited, the other trains on replay
    (1, 1, 1, False),   # one worker has nothing at all (no fresh data, empty replay): wait
    (0, 0, 0, False),
])
def test_should_step_for_two_workers(full: int, waited: int, can_train: int,
                                     expected: bool) -> None:
    assert should_step(full, waited, can_train, 2) is expected


def test_single_sync_steps_on_a_full_or_waited_batch_only() -> None:
    s = SingleSync()
    assert s.agree(Readiness(full=True, waited=False, can_train=True), False) == (True, False)
    assert s.agree(Readiness(full=False, waited=True, can_train=True), True) == (True, True)
    assert s.agree(Readiness(full=False, waited=False, can_train=True), False) == (False, False)
    assert s.sum_counts([3, 4]) == [3, 4] and s.sum_value(1.5) == 1.5
    assert s.gather({"a": 1}) == [{"a": 1}]


def test_partitions_are_shared_without_overlap() -> None:
    parts = [3, 0, 2, 1, 4]
    shares = [shard_partitions(parts, r, 2) for r in range(2)]
    assert shares == [[0, 2, 4], [1, 3]]
    assert shard_partitions(parts, 0, 1) == [0, 1, 2, 3, 4]


def test_more_workers_than_partitions_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="set kafka.partitions >= 3"):
        shard_partitions([0, 1], 0, 3)


def test_torch_sync_needs_a_process_group() -> None:
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="Ray Train"):
        TorchSync()


def test_torch_sync_in_a_one_process_group(tmp_path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        s = TorchSync()
        assert (s.rank, s.world_size) == (0, 1)
        assert s.agree(Readiness(True, False, True), False) == (True, False)
        assert s.agree(Readiness(False, False, True), True) == (False, True)
        assert s.sum_counts([5, 7]) == [5, 7]
        assert s.sum_value(0.25) == 0.25
        assert s.gather([1, 2]) == [[1, 2]]
        s.barrier()
    finally:
        dist.destroy_process_group()
