"""The one follower of the promoted version, on a real store: a version that does not load
keeps the old one, is counted and logged once, retried, and loaded once it is fixed."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable

import pytest

from online_distill.cli.status import ProbeWatcher
from online_distill.config import OODConfig
from online_distill.ood.callouts import StudentEnergyScorer
from online_distill.weights import LocalWeightsStore, PromotedFollower
from tests.unit.test_learner import TOKENIZER, tiny_model

LOGGER = "online_distill.weights.follow"


def store_with(tmp_path, n: int) -> LocalWeightsStore:
    store = LocalWeightsStore(tmp_path)
    for seed in range(1, n + 1):
        store.publish(tiny_model(seed), TOKENIZER, learner_step=seed)
    return store


def counting_loader(store: LocalWeightsStore, calls: list[int]) -> Callable[[int], object]:
    def load(version: int) -> object:
        calls.append(version)
        return store.load(version)
    return load


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING]


def test_a_broken_version_keeps_the_old_one_counted_and_logged_once_until_fixed(
        tmp_path, caplog) -> None:
    store = store_with(tmp_path, 3)
    calls: list[int] = []
    follower = PromotedFollower(store, counting_loader(store, calls), name="test")
    assert not follower.poll() and follower.value is None  # nothing promoted yet
    store.promote(1)
    assert follower.poll() and follower.version == 1
    first = follower.value
    assert not follower.poll() and calls == [1]  # unchanged: not reloaded
    weights = store.path(2) / "model.safetensors"
    weights.rename(tmp_path / "aside.safetensors")  # v2 cannot load
    store.promote(2)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        for _ in range(3):
            assert not follower.poll()
    assert follower.version == 1 and follower.value is first  # the old one stays
    assert follower.load_failures == 1 and follower.failing == 2
    assert calls == [1, 2, 2, 2]  # retried at every poll
    [warning] = warnings_of(caplog)
    assert "v2" in warning and "still using v1" in warning
    (tmp_path / "aside.safetensors").rename(weights)  # fixed by hand
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert follower.poll() and follower.version == 2
    assert follower.failing is None and follower.load_failures == 1
    assert any("v2 loads now" in r.getMessage() for r in caplog.records)
    store.promote(3)
    assert follower.poll() and follower.version == 3  # a new promotion switches


@pytest.mark.parametrize("damage", ["truncated", "garbage", "no_config", "pruned"])
def test_every_kind_of_broken_folder_is_a_load_failure(tmp_path, damage) -> None:
    store = store_with(tmp_path, 2)
    store.promote(1)
    follower = PromotedFollower(store, store.load)
    assert follower.poll()
    store.promote(2)
    folder = store.path(2)
    weights = folder / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "garbage":
        weights.write_bytes(b"not safetensors")
    elif damage == "no_config":
        (folder / "config.json").unlink()
    else:
        shutil.rmtree(folder)  # pruned between the promotion and the load
    assert not follower.poll() and not follower.poll()
    assert follower.version == 1 and follower.load_failures == 1


def test_other_errors_are_bugs_and_propagate(tmp_path) -> None:
    store = store_with(tmp_path, 1)
    store.promote(1)

    def broken(version: int) -> int:
        raise TypeError("a bug in the loader")

    with pytest.raises(TypeError):
        PromotedFollower(store, broken).poll()


def test_checks_at_most_every_min_interval_and_keeps_the_initial_value(tmp_path) -> None:
    store = store_with(tmp_path, 2)
    now = [100.0]
    follower = PromotedFollower(store, lambda v: f"model v{v}", initial="start",
                                min_interval_s=5.0, clock=lambda: now[0])
    assert not follower.poll() and follower.value == "start" and follower.version is None
    store.promote(1)
    now[0] += 4.0
    assert not follower.poll() and follower.value == "start"  # too soon to look
    now[0] += 1.0
    assert follower.poll() and follower.value == "model v1"
    assert follower.promotion[0] == 1


def test_rolling_back_from_a_broken_version_counts_it_again_if_promoted_again(tmp_path
                                                                             ) -> None:
    store = store_with(tmp_path, 2)
    store.promote(1)
    follower = PromotedFollower(store, store.load)
    assert follower.poll()
    (store.path(2) / "config.json").unlink()
    store.promote(2)
    assert not follower.poll() and follower.failing == 2
    store.rollback()
    assert not follower.poll() and follower.failing is None and follower.version == 1
    store.promote(2)
    assert not follower.poll() and follower.load_failures == 2


def test_the_ood_scorer_keeps_scoring_with_the_old_student(tmp_path) -> None:
    store = store_with(tmp_path, 2)
    scorer = StudentEnergyScorer(store, str(store.path(1)), OODConfig(), refresh_s=0.0)
    assert scorer.version is None and len(scorer(["1+2="])) == 1  # the starting student
    store.promote(1)
    scorer.refresh()
    old = scorer.model
    (store.path(2) / "model.safetensors").unlink()
    store.promote(2)
    assert len(scorer(["1+2=", "3+4="])) == 2
    assert scorer.version == 1 and scorer.model is old
    assert scorer.follower.load_failures == 1


def test_the_status_line_keeps_the_last_readable_version(tmp_path) -> None:
    store = store_with(tmp_path, 2)
    for v, score in ((1, 0.5), (2, 0.75)):
        store.record_verdict(v, {"scores": {"head": {"exact_match": score}}})
    store.promote(1)
    probe = ProbeWatcher(store)
    assert probe.version is None and probe.scores == {}
    probe.refresh()
    assert probe.version == 1 and probe.scores == {"head": 0.5}
    store.promote(2)
    (store.path(2) / "manifest.json").unlink()  # half-deleted by a prune
    probe.refresh()
    assert probe.version == 1 and probe.scores == {"head": 0.5}
    assert probe.follower.load_failures == 1


def test_the_demo_status_line_also_scores_the_post_drift_probe(tmp_path) -> None:
    store = store_with(tmp_path, 1)
    store.record_verdict(1, {"scores": {"head": {"exact_match": 0.5}}})
    store.promote(1)
    probe = ProbeWatcher(store, size=10, post_drift=True)
    probe.refresh()
    assert probe.scores["head"] == 0.5 and 0.0 <= probe.scores["post_drift"] <= 1.0
