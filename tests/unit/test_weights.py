"""The local weights store: atomic versions in Hugging Face format, never unpickled."""

from __future__ import annotations

from transformers import AutoModelForCausalLM

from online_distill.weights.store import LocalWeightsStore
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
    loaded = AutoModelForCausalLM.from_pretrained(str(store.path(2)), use_safetensors=True)
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


def test_rollback_walks_back_through_promotions_and_load_reads_only_safetensors(tmp_path
                                                                               ) -> None:
    import pytest

    store = LocalWeightsStore(tmp_path)
    for step in range(4):
        store.publish(tiny_model(4), TOKENIZER, learner_step=step)
    with pytest.raises(ValueError, match="nothing to roll back to"):
        store.rollback()
    for v in (1, 2, 3):
        store.promote(v)
    assert store.rollback() == 2 and store.promoted() == 2
    assert store.rollback() == 1  # 3 and 2 were both rolled back from
    assert [(h["version"], h["reason"]) for h in store.history()] == [
        (1, "gate"), (2, "gate"), (3, "gate"), (2, "rollback"), (1, "rollback")]
    assert store.rollback(4) == 4 and store.history()[-1]["previous"] == 1
    model, tok = store.load(4)
    assert not model.training and tok.pad_token_id == 0
    (store.path(4) / "model.safetensors").rename(store.path(4) / "pytorch_model.bin")
    with pytest.raises(OSError):
        store.load(4)  # a pickle file is never read


def test_the_local_store_has_every_method_of_the_protocol_with_its_signature() -> None:
    import inspect

    from online_distill.weights import WeightsStore

    names = [n for n, v in vars(WeightsStore).items()
             if not n.startswith("_") and inspect.isfunction(v)]
    assert {"latest", "load", "promotion", "verdict", "prune", "rollback_target"} <= set(names)
    for name in names:
        assert (inspect.signature(getattr(LocalWeightsStore, name))
                == inspect.signature(getattr(WeightsStore, name))), name
