"""Hot swap: load beside, switch at the promotion's moment, never serve nothing."""

from __future__ import annotations

import time

from online_distill.serving.swap import ModelSlot
from online_distill.weights.store import LocalWeightsStore
from tests.unit.test_learner import TOKENIZER, tiny_model


def test_slot_stages_a_promotion_and_switches_at_its_moment(tmp_path) -> None:
    store = LocalWeightsStore(tmp_path, swap_delay_s=5.0)
    for seed in (1, 2, 3):
        store.publish(tiny_model(seed), TOKENIZER, learner_step=seed)
    skew = [0.0]
    slot = ModelSlot(store, "student", clock=lambda: time.time() + skew[0], wait_s=0.1)
    assert not slot.refresh() and slot.current() is None  # nothing promoted yet
    store.promote(1)
    assert slot.refresh() and slot.version == 1  # the first version serves at once
    store.promote(2)
    assert slot.refresh() and not slot.refresh()  # staged once, not reloaded
    assert slot.current().version == 1  # loaded beside, not yet due
    skew[0] = 6.0
    assert slot.current().version == 2 and slot.stats.swaps == 2
    store.promote(3)
    weights = store.path(3) / "model.safetensors"
    weights.rename(tmp_path / "aside.safetensors")  # a version that cannot load
    assert not slot.refresh() and slot.stats.failed_loads == 1
    assert not slot.refresh() and slot.stats.failed_loads == 1  # retried, counted once
    skew[0] = 12.0
    assert slot._target is None  # nothing loading: a request does not wait for v3
    assert slot.current().version == 2  # keeps serving the old one
    (tmp_path / "aside.safetensors").rename(weights)  # repaired: the next poll stages it
    assert slot.refresh() and slot.current().version == 3 and slot.stats.swaps == 3
