"""``ood.score=answer_gap``: the student's gap to the teacher on the teacher's answer, and the
OOD stage reading the labels topic (fake scorer and generator: pure logic)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch

from online_distill.config import ConfigError, OODConfig
from online_distill.messages import LabeledExample, PromptMessage, PseudoTarget, decode, encode
from online_distill.models.scores import answer_gaps
from online_distill.ood import ArithmeticFeedback
from online_distill.ood.inputs import label_answer, labeled_prompt
from online_distill.ood.stage import OODStage
from online_distill.streams import DeadLetterWriter, MemoryLog, MemorySink, MemorySource
from online_distill.tasks.arithmetic import Problem
from tests.unit.test_learner import tiny_model
from tests.unit.test_ood import Clock, FakeTeacher

LABELS, FEEDBACK, DLQ = "labels", "feedback", "dead"


def target(ids: list[int], lps: list[float], decoding: str = "sample") -> PseudoTarget:
    return PseudoTarget(token_ids=tuple(ids), text="x" * len(ids), source="teacher",
                        decoding=decoding,  # type: ignore[arg-type]
                        topk_ids=tuple((i,) for i in ids), topk_logprobs=tuple((lp,) for lp in lps),
                        tail_logmass=(-2.3,) * len(ids), sampled_logprobs=tuple(lps))


def student_logprobs(model: torch.nn.Module, prompt: list[int], answer: list[int]) -> list[float]:
    with torch.no_grad():
        logits = model(torch.tensor([prompt + answer])).logits[0]  # (P+T, V)
    logp = torch.log_softmax(logits.float(), -1)  # (P+T, V)
    return [logp[len(prompt) - 1 + t, tok].item() for t, tok in enumerate(answer)]


def test_answer_gap_is_zero_against_itself_and_counts_only_answer_tokens() -> None:
    model = tiny_model(1)
    prompts, answer = [[1, 5, 6, 7], [1, 9, 9, 9, 9, 9, 2]], [11, 12, 3]
    own = [student_logprobs(model, p, answer) for p in prompts]
    # The teacher's log-probs are the student's own: the gap is 0 whatever the prompt.
    same = answer_gaps(model, [(p, answer, lp) for p, lp in zip(prompts, own, strict=True)], 0)
    assert same == pytest.approx([0.0, 0.0], abs=1e-5)
    # A sure teacher (log-prob 0): the gap is the student's mean NLL of the answer.
    sure = answer_gaps(model, [(prompts[0], answer, [0.0, 0.0, 0.0])], 0)
    assert sure[0] == pytest.approx(-sum(own[0]) / 3, rel=1e-5)
    worst = answer_gaps(model, [(prompts[0], answer, [0.0, -1.0, 0.0])], 0, how="max")
    assert worst[0] == pytest.approx(max(-own[0][0], -own[0][1] - 1.0, -own[0][2]), rel=1e-5)
    # -inf from the teacher is clamped; no answer tokens: NaN (left out by the stage).
    clamped = answer_gaps(model, [(prompts[0], answer[:1], [float("-inf")])], 0)
    assert clamped[0] == pytest.approx(-own[0][0] - 30.0, rel=1e-5)
    assert math.isnan(answer_gaps(model, [(prompts[0], [], [])], 0)[0])


def test_label_answer_takes_the_greedy_target() -> None:
    sampled, greedy = target([4, 5], [-1.0, -2.0]), target([6], [-0.5], "greedy")
    ex = LabeledExample(prompt_id="p", prompt_text="1+2=", prompt_token_ids=(1, 2, 3),
                        pseudo_targets=(sampled, greedy), teacher_id="t", kind="add2")
    prompt, answer, lps = label_answer(ex)
    assert list(prompt) == [1, 2, 3] and list(answer) == [6] and list(lps) == [-0.5]
    first = LabeledExample(prompt_id="p", prompt_text="1+2=", prompt_token_ids=(1, 2, 3),
                           pseudo_targets=(sampled,), teacher_id="t")
    assert list(label_answer(first)[1]) == [4, 5]
    msg = labeled_prompt(ex)
    assert (msg.text, msg.id, msg.kind, msg.origin) == ("1+2=", "p", "add2", "traffic")


def label_traffic(log: MemoryLog, n: int, seed: int = 0, mul_every: int = 50) -> None:
    """n labels: every ``mul_every``-th a mul (2%), the rest add2; feedback-origin labels too."""
    rng = random.Random(seed)
    for i in range(n):
        kind = "mul" if i % mul_every == mul_every - 1 else "add2"
        a, b = (rng.randint(2, 8), rng.randint(10, 99)) if kind == "mul" else (
            rng.randint(0, 99), rng.randint(0, 99))
        problem = Problem(kind, a, b)
        ex = LabeledExample(prompt_id=f"{kind}-{i}-{seed}", prompt_text=problem.prompt,
                            prompt_token_ids=(1, 2, 3), teacher_id="t", kind=kind,
                            origin="feedback" if i % 97 == 0 else "traffic",
                            pseudo_targets=(target([4, 5], [-0.1, -0.1], "greedy"),))
        log.append(LABELS, encode(ex), key=ex.prompt_id.encode())


class GapScorer:
    """The student lags the teacher on mul by 2 nats per token until ``learned``."""

    def __init__(self) -> None:
        self.learned = False
        self.rng = random.Random(1)

    def __call__(self, items: list[LabeledExample]) -> list[float]:
        assert all(isinstance(e, LabeledExample) for e in items)
        return [(0.0 if self.learned or e.kind != "mul" else 2.0) + self.rng.random() * 0.05
                for e in items]


def make_stage(log: MemoryLog, scorer: GapScorer, clock: Clock, **cfg: object) -> OODStage:
    sink = MemorySink(log)
    settings: dict[str, object] = {"score": "answer_gap", "window_size": 1000,
                                   "min_window": 200, "tail_quantile": 0.95,
                                   "feedback_interval_s": 5.0, "feedback_per_round": 4,
                                   "generations_per_prompt": 4, **cfg}
    return OODStage(MemorySource(log, [LABELS], group="ood", max_poll_records=100), sink,
                    FakeTeacher(), scorer, ArithmeticFeedback(), OODConfig(**settings),  # type: ignore[arg-type]
                    FEEDBACK, DeadLetterWriter(sink, DLQ, "ood"), clock=clock, seed=0)


def run(stage: OODStage, clock: Clock) -> None:
    while stage.run_once():
        clock.now += 1.0


def test_labels_steer_feedback_to_the_unlearned_kind_and_stop_once_learned() -> None:
    log, clock, scorer = MemoryLog(partitions=1), Clock(), GapScorer()
    label_traffic(log, 3000)
    log.append(LABELS, b"not a label", key=b"bad")
    stage = make_stage(log, scorer, clock)
    run(stage, clock)
    s = stage.stats
    assert s.unreadable == 1 and s.polled == 3001
    assert s.ignored_feedback == 31  # labels of feedback prompts: dedup only
    assert set(s.tail_by_kind) == {"mul"}, s.tail_by_kind  # add2's gap is never a tail
    fb = [decode(r.value, PromptMessage) for r in log.records(FEEDBACK)]
    assert s.rounds >= 3 and len(fb) == s.kept > 0
    kinds = Counter(m.kind for m in fb)
    assert kinds["mul"] / len(fb) >= 0.8, kinds  # FakeTeacher keeps the kind 90% of the time
    assert all(m.energy is None and m.parent_energies for m in fb)  # no noise score
    # Learned: no new tails, so no more rounds (but one for the tails found before the
    # flip), though the tail set still holds the old ones.
    scorer.learned, rounds = True, s.rounds
    label_traffic(log, 2000, seed=1)
    clock.now += 60.0
    run(stage, clock)
    assert stage.stats.rounds <= rounds + 1
    rounds = stage.stats.rounds
    label_traffic(log, 2000, seed=2)
    clock.now += 60.0
    run(stage, clock)
    assert stage.stats.rounds == rounds and len(stage.tails) > 0
    assert stage.budget.share() <= 0.2 + 1e-9


def test_sample_share_scores_a_sample_and_the_budget_counts_all_traffic() -> None:
    log, clock = MemoryLog(partitions=1), Clock()
    label_traffic(log, 2000)
    stage = make_stage(log, GapScorer(), clock, sample_share=0.25)
    run(stage, clock)
    s = stage.stats
    assert s.scored + s.unsampled + s.ignored_feedback == 2000
    assert 0.2 <= s.scored / (s.scored + s.unsampled) <= 0.3
    assert stage.budget.traffic == s.scored + s.unsampled


def test_new_fields_are_range_checked() -> None:
    with pytest.raises(ConfigError, match="sample_share"):
        OODConfig(sample_share=0.0)
    with pytest.raises(ConfigError, match="min_answer_gap"):
        OODConfig(min_answer_gap=-1.0)
