"""The local weights store: atomic versions in Hugging Face format, never unpickled."""

from __future__ import annotations

from transformers import AutoModelForCausalLM

from online_distill.weights import LocalWeightsStore
from tests.unit.test_learner import TOKENIZER, tiny_model


def test_publish_writes_loadable_versions_with_manifests(tmp_path) -> None:
    store = LocalWeightsStore(tmp_path)
    assert store.latest() is None
    model = tiny_model(1)
    m1 = store.publish(model, TOKENIZER, learner_step=10, offsets={"labels:0": 5},
                       metrics={"loss": 0.5})
    m2 = store.publish(model, TOKENIZER, learner_step=20)
    assert (m1.version, m1.parent, m2.version, m2.parent) == (1, None, 2, 1)
    assert store.versions() == [1, 2] and store.manifest(1).offsets == {"labels:0": 5}
    files = {p.name for p in store.path(2).iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt")) for f in files)
    loaded = AutoModelForCausalLM.from_pretrained(str(store.path(2)))
    assert loaded.config.n_embd == model.config.n_embd


def test_half_written_versions_are_invisible_and_prune_keeps_protected(tmp_path) -> None:
    store = LocalWeightsStore(tmp_path)
    for step in range(4):
        store.publish(tiny_model(2), TOKENIZER, learner_step=step)
    (tmp_path / ".tmp-v000005-123").mkdir()  # a crash mid-publish
    (tmp_path / "v000006").mkdir()  # no manifest: not a version
    assert store.versions() == [1, 2, 3, 4]
    assert store.prune(keep=2, protect={1}) == [2]
    assert store.versions() == [1, 3, 4]


def test_promote_is_atomic_and_prune_keeps_the_promoted_version(tmp_path) -> None:
    import pytest

    store = LocalWeightsStore(tmp_path)
    assert store.promoted() is None
    for step in range(4):
        store.publish(tiny_model(3), TOKENIZER, learner_step=step)
    store.promote(2)
    assert store.promoted() == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".PROMOTED")]
    assert store.prune(keep=1) == [1, 3]
    assert store.versions() == [2, 4] and store.promoted() == 2
    with pytest.raises(ValueError, match="version 7 is not in"):
        store.promote(7)
