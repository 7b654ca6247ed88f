"""The shipped demo teacher and the fresh student, loaded the way every station loads a
model (the one loader: Hugging Face from_pretrained, safetensors only)."""

from __future__ import annotations

import pytest
import torch

from online_distill.models.loader import load_model
from online_distill.tasks.evaluate import exact_match_by_kind, in_context_continuation
from online_distill.tasks.models import DEMO_STUDENT_DIR, DEMO_TEACHER_DIR, count_parameters
from online_distill.tasks.probes import probe_set

pytestmark = pytest.mark.integration

# Fresh draws (seed 7), not the fixed probe sets the gate and benchmarks use.
SEED = 7


@pytest.fixture(scope="module")
def teacher():
    return load_model(DEMO_TEACHER_DIR)


def test_shipped_files_are_safetensors_in_hf_format() -> None:
    for directory in (DEMO_TEACHER_DIR, DEMO_STUDENT_DIR):
        names = {p.name for p in directory.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
        assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)


def test_teacher_accuracy_on_fresh_probes(teacher) -> None:
    model, tok = teacher
    head = exact_match_by_kind(model, tok, probe_set("head", size=300, seed=SEED))["all"]
    tail = exact_match_by_kind(model, tok, probe_set("tail", size=300, seed=SEED))["all"]
    drift = exact_match_by_kind(model, tok, probe_set("post_drift", size=300, seed=SEED))["all"]
    print(f"teacher head={head:.3f} tail={tail:.3f} post_drift={drift:.3f}")
    assert head >= 0.98
    assert tail >= 0.90
    assert drift >= 0.95


@pytest.mark.parametrize("kind", ["add3", "sub2", "mul"])
def test_teacher_continues_few_shot_tail_prompts_in_kind(teacher, kind: str) -> None:
    model, tok = teacher
    result = in_context_continuation(model, tok, kind, trials=100, seed=SEED)  # type: ignore[arg-type]
    print(f"{kind}: same-kind {result.well_formed_same_kind:.2f} correct {result.correct:.2f}")
    assert result.well_formed_same_kind >= 0.80


def test_fresh_student_is_several_times_smaller_and_knows_nothing(teacher) -> None:
    student, tok = load_model(DEMO_STUDENT_DIR)
    assert tok.get_vocab() == teacher[1].get_vocab()
    assert count_parameters(teacher[0]) >= 3 * count_parameters(student)
    for name in ("head", "tail", "post_drift"):
        score = exact_match_by_kind(student, tok, probe_set(name, size=200, seed=SEED))["all"]
        assert score <= 0.02, f"fresh student scores {score} on {name}"


def test_generation_stops_at_end_of_line(teacher) -> None:
    model, tok = teacher
    ids = tok("12+34=", return_tensors="pt").input_ids
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16)
    text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert text == "64\n"
