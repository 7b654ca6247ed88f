"""Self-distillation rounds: student-labeled examples, filtered by a critic, then trained."""

from __future__ import annotations

import math

from online_distill.config import LearnerConfig
from online_distill.learner.self_distill import SelfDistiller
from online_distill.learner.trainer import Learner
from tests.unit.test_gate import example
from tests.unit.test_learner import TOKENIZER, tiny_model


def distiller(critic=None, samples: int = 3) -> SelfDistiller:
    cfg = LearnerConfig(batch_size=4, device="cpu", warmup_steps=1)
    learner = Learner(tiny_model(7), cfg, pad_id=0)
    return SelfDistiller(learner, TOKENIZER, samples=samples, max_new_tokens=5, critic=critic)


def test_round_labels_prompts_with_student_pseudo_targets() -> None:
    sd = distiller()
    out = sd.round([example("a"), example("b")], tag="12")
    assert [ex.prompt_id for ex in out] == ["a#self-12", "b#self-12"]
    for ex in out:
        assert ex.teacher_id == "student@12" and 1 <= len(ex.pseudo_targets) <= 3
        for pt in ex.pseudo_targets:
            assert pt.source == "student" and len(pt.topk_ids) == len(pt.token_ids)
            assert math.isclose(pt.topk_logprobs[0][0], math.log1p(-1e-3), rel_tol=1e-5)
            assert pt.topk_ids[0][0] == pt.token_ids[0]
    assert sd.stats.rounds == 1 and sd.stats.kept_examples == 2


def test_critic_decides_what_is_kept_and_the_learner_trains_it() -> None:
    seen = []

    def critic(ex):
        seen.append(ex)
        return None if ex.prompt_id.startswith("a") else ex

    sd = distiller(critic)
    out = sd.round([example("a"), example("b")], tag="1")
    assert [ex.prompt_id for ex in out] == ["b#self-1"] and len(seen) == 2
    before = sd.learner.step
    sd.learner.train_step(out)  # student-labeled rows train like any other
    assert sd.learner.step == before + 1
