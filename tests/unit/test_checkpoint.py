"""Learner checkpoints as data: the trainer state is safetensors plus JSON, never a pickle,
and a resumed learner takes the same next step as the one that saved (tiny GPT-2, CPU)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors import safe_open

from online_distill.learner.checkpoint import (
    STATE_JSON,
    STATE_TENSORS,
    CheckpointError,
    decode_state,
    encode_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from online_distill.learner.trainer import Learner
from online_distill.messages import LabeledExample
from online_distill.teachers.hf import HFTeacher
from online_distill.teachers.protocol import LabelRequest
from tests.unit.test_learner import TOKENIZER, learner_cfg, tiny_model


@pytest.fixture(scope="module")
def examples() -> list[LabeledExample]:
    teacher = HFTeacher(tiny_model(100, layers=2, width=48), device="cpu", tokenizer=TOKENIZER,
                        teacher_id="tiny-teacher")
    prompts = [f"{a}+{b}=" for a, b in [(1, 2), (12, 7), (33, 45), (9, 9)]]
    ids = [TOKENIZER(p).input_ids for p in prompts]
    request = LabelRequest(n=1, include_greedy=True, top_k_logprobs=8, max_new_tokens=5, seed=0)
    return [
        LabeledExample(prompt_id=f"p{i}", prompt_text=p, prompt_token_ids=tuple(x),
                       pseudo_targets=tuple(pts), teacher_id=teacher.teacher_id)
        for i, (p, x, pts) in enumerate(
            zip(prompts, ids, teacher.label(ids, request), strict=True))
    ]


def test_a_resumed_learner_takes_the_same_next_step(tmp_path, examples) -> None:
    cfg = learner_cfg(lr_schedule="cosine", lr_decay_steps=10, warmup_steps=2)
    a = Learner(tiny_model(7), cfg, pad_id=0)
    for i in range(2):
        a.train_step(examples[i : i + 2])
    folder = a.save(tmp_path, progress={"offsets": {"od.labels/0": 42}})
    a.train_step(examples[2:4])

    b = Learner(tiny_model(99), cfg, pad_id=0)  # other weights, a fresh optimizer
    assert b.load(tmp_path) == {"offsets": {"od.labels/0": 42}} and b.step == 2
    b.train_step(examples[2:4])

    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for idx, per_param in sa["state"].items():
        for key, value in per_param.items():
            assert torch.equal(value, sb["state"][idx][key]), (idx, key)
    assert a.scheduler.state_dict() == b.scheduler.state_dict()
    assert a.rng.getstate() == b.rng.getstate()
    assert sorted(p.name for p in folder.iterdir()) == [
        "meta.json", "model.safetensors", STATE_JSON, STATE_TENSORS]


def test_the_trainer_state_is_flat_safetensors_plus_json(tmp_path, examples) -> None:
    learner = Learner(tiny_model(8), learner_cfg(), pad_id=0)
    learner.train_step(examples[:2])
    folder = learner.save(tmp_path)
    with safe_open(str(folder / STATE_TENSORS), framework="pt") as f:
        keys = set(f.keys())
        rng = f.get_tensor("torch_rng")
    n_params = len(list(learner.model.parameters()))
    assert {f"optimizer.state.{i}.{name}" for i in range(n_params)
            for name in ("exp_avg", "exp_avg_sq", "step")} <= keys
    assert rng.dtype == torch.uint8 and torch.equal(rng, torch.get_rng_state())
    doc = json.loads((folder / STATE_JSON).read_text())  # plain JSON, nothing else
    group = doc["state"]["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(learner.optimizer.param_groups[0]["lr"])
    assert doc["state"]["torch_rng"] == {"__tensor__": "torch_rng"}
    assert doc["state"]["scheduler"]["last_epoch"] == 1


def test_encode_then_decode_gives_back_the_same_structure() -> None:
    state = {"a": {0: {"m": torch.arange(6.0).reshape(2, 3), "step": torch.tensor(3.0)},
                   5: {"m": torch.zeros(0)}},
             "groups": [{"betas": (0.9, 0.999), "params": [0, 5], "fused": None,
                         "nan": float("inf"), "name": "g"}],
             "rng": random.Random(1).getstate(), "empty": {}, "flag": True}
    tensors, tree = encode_state(state)
    assert set(tensors) == {"a.0.m", "a.0.step", "a.5.m"}
    back = decode_state(json.loads(json.dumps(tree)), tensors)
    assert back["groups"] == state["groups"] and back["rng"] == state["rng"]
    assert back["empty"] == {} and back["flag"] is True
    assert set(back["a"]) == {0, 5}  # int keys stay ints: torch matches them to parameters
    assert torch.equal(back["a"][0]["m"], state["a"][0]["m"])
    random.Random().setstate(back["rng"])  # a tuple again, as setstate requires


@pytest.mark.parametrize("bad", [{"x": object()}, {"__tuple__": 1}, {1: 2, "b": 3}])
def test_what_cannot_be_stored_as_data_is_a_clear_error(bad) -> None:
    with pytest.raises(TypeError, match="trainer-state"):
        encode_state(bad)


def test_an_old_pickled_checkpoint_is_refused_without_being_read(tmp_path) -> None:
    model = tiny_model(3)
    folder = save_checkpoint(tmp_path, 4, model, {"x": torch.ones(2)}, {"step": 4})
    (folder / STATE_JSON).unlink()
    (folder / STATE_TENSORS).unlink()
    (folder / "trainer_state.pt").write_bytes(b"\x80\x04 not a pickle anyone should load")
    assert latest_checkpoint(tmp_path) == folder
    with pytest.raises(CheckpointError, match="trainer_state.pt, a pickle that online-distill"):
        load_checkpoint(tmp_path, model)


def test_a_json_naming_a_missing_tensor_is_a_checkpoint_error(tmp_path) -> None:
    model = tiny_model(3)
    folder = save_checkpoint(tmp_path, 1, model, {"x": torch.ones(2)}, {"step": 1})
    doc = json.loads((folder / STATE_JSON).read_text())
    doc["state"]["y"] = {"__tensor__": "y"}
    (folder / STATE_JSON).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="names tensor 'y'"):
        load_checkpoint(tmp_path, model)
