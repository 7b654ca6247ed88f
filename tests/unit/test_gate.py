"""The evaluation gate: regressions refused, damaged weights never promoted, holdout stable."""

from __future__ import annotations

import math

import pytest
import torch

from online_distill.gate import Gate, LabelProbe, TaskProbe, regressions
from online_distill.gate.holdout import HoldoutBuffer, held_out
from online_distill.messages import LabeledExample, PseudoTarget
from online_distill.models.loader import load_model
from online_distill.tasks.models import DEMO_TEACHER_DIR
from online_distill.tasks.probes import probe_set
from online_distill.weights.store import LocalWeightsStore


def test_regressions_refuse_only_confident_drops_beyond_tolerance() -> None:
    n = 200
    base = {"tail": {"exact_match": [1.0] * 5 + [0.0] * (n - 5), "nll": [1.0] * n}}
    # 2.5% -> 0% on 200 items: within noise at 95% (a naive mean rule would refuse it).
    noisy = {"tail": {"exact_match": [0.0] * n, "nll": [1.05] * n}}
    assert regressions(noisy, base, 0.01, 0.1) == []
    assert regressions(noisy, base, 0.01, 0.1, confidence=0.5)[0].startswith(
        "tail/exact_match 0.0000 vs 0.0250")  # z = 0: the means alone
    # A real drop (50% -> 20%) and a NLL 50% higher are refused.
    half = [1.0, 0.0] * (n // 2)
    fifth = [1.0 if i % 2 == 0 and i % 10 < 4 else 0.0 for i in range(n)]
    bad = {"tail": {"exact_match": fifth, "nll": [1.5] * n}}
    reasons = regressions(bad, {"tail": {"exact_match": half, "nll": [1.0] * n}}, 0.01, 0.1)
    assert [r.split(" ", 1)[0] for r in reasons] == ["tail/exact_match", "tail/nll"]
    assert regressions({"tail": {"nll": [math.nan] * n}}, base, 0.01, 0.1)[0].endswith(
        "not finite")
    # A probe the baseline was not scored on (it just became ready) cannot regress.
    assert regressions({"rolling": {"agreement": [0.0] * 3}}, base, 0.01, 0.1) == []


def test_held_out_is_a_stable_share_of_ids() -> None:
    ids = [f"id-{i}" for i in range(20000)]
    share = sum(held_out(i, 0.05) for i in ids) / len(ids)
    assert 0.045 < share < 0.055
    assert [held_out(i, 0.05) for i in ids[:50]] == [held_out(i, 0.05) for i in ids[:50]]
    assert not any(held_out(i, 0.0) for i in ids[:100])


def pseudo_target(ids: list[int], text: str) -> PseudoTarget:
    """A greedy pseudo-target whose top-1 is the chosen token, with probability ~1."""
    n = len(ids)
    return PseudoTarget(token_ids=tuple(ids), text=text, source="teacher", decoding="greedy",
                        topk_ids=tuple((i,) for i in ids), topk_logprobs=((-0.01,),) * n,
                        tail_logmass=(-4.6,) * n, sampled_logprobs=(-0.01,) * n)


def example(pid: str) -> LabeledExample:
    pt = pseudo_target([5, 6, 2], "ab")
    return LabeledExample(prompt_id=pid, prompt_text="x", prompt_token_ids=(1, 7),
                          pseudo_targets=(pt,), teacher_id="t")


def test_holdout_buffer_freezes_a_first_set_and_rolls_the_rest() -> None:
    buf = HoldoutBuffer(share=0.5, fixed_size=3, rolling_size=4)
    ids = [f"p{i}" for i in range(60) if held_out(f"p{i}", 0.5)]
    kept = buf.offer(example(f"p{i}") for i in range(60))
    assert kept == len(ids)
    assert [e.prompt_id for e in buf.fixed] == ids[:3]
    assert [e.prompt_id for e in buf.rolling] == ids[-4:]
    assert buf.offer([example(ids[-1])]) == 0  # already held


@pytest.fixture(scope="module")
def teacher():
    return load_model(DEMO_TEACHER_DIR)


def damaged(model, how: str):
    import copy

    bad = copy.deepcopy(model)
    with torch.no_grad():
        for p in bad.parameters():
            if how == "scaled":
                p.mul_(3.0)
            else:  # shuffled
                flat = p.view(-1)
                flat.copy_(flat[torch.randperm(flat.numel(), generator=torch.Generator()
                                               .manual_seed(0))])
    return bad


@pytest.mark.parametrize("how", ["scaled", "shuffled"])
def test_damaged_candidate_is_refused_and_never_promoted(tmp_path, teacher, how) -> None:
    model, tok = teacher
    store = LocalWeightsStore(tmp_path)
    probes = [TaskProbe(n, probe_set(n, size=40)) for n in ("head", "tail")]
    gate = Gate(store, probes, tolerance=0.01, nll_tolerance=0.1)
    store.publish(model, tok, learner_step=1)
    first = gate.step()
    assert first is not None and first.decision == "promoted" and store.promoted() == 1
    assert first.scores["head"]["exact_match"] == 1.0
    store.publish(damaged(model, how), tok, learner_step=2)
    verdict = gate.step()
    assert verdict is not None and verdict.decision == "refused" and verdict.baseline == 1
    assert any(r.startswith("head/exact_match 0.0000 vs 1.0000") for r in verdict.reasons)
    assert store.promoted() == 1 and store.verdict(2)["decision"] == "refused"
    assert gate.counts["refused"] == 1 and gate.counts["refused/head/exact_match"] == 1
    # An equally good candidate is promoted; versions it skipped are marked superseded.
    store.publish(model, tok, learner_step=3)
    store.publish(model, tok, learner_step=4)
    assert gate.step().decision == "promoted" and store.promoted() == 4
    assert store.verdict(3)["decision"] == "superseded" and gate.step() is None


def test_nan_weights_are_refused_even_when_nothing_is_served(tmp_path, teacher) -> None:
    model, tok = teacher
    store = LocalWeightsStore(tmp_path)
    bad = damaged(model, "scaled")
    with torch.no_grad():
        next(bad.parameters()).fill_(float("nan"))
    store.publish(bad, tok, learner_step=1)
    gate = Gate(store, [], tolerance=0.01, nll_tolerance=0.1)
    assert gate.step().reasons == ["weights contain NaN or infinity"]
    assert store.promoted() is None


def test_label_probe_scores_agreement_with_pseudo_targets(teacher) -> None:
    model, tok = teacher
    problems = probe_set("head", size=30)
    exs = []
    for i, p in enumerate(problems):
        answer = tok(p.answer + "\n", add_special_tokens=False).input_ids
        pt = pseudo_target(answer, p.answer)
        exs.append(LabeledExample(prompt_id=str(i), prompt_text=p.prompt,
                                  prompt_token_ids=tuple(tok(p.prompt).input_ids),
                                  pseudo_targets=(pt,), teacher_id="t"))
    probe = LabelProbe("rolling", lambda: exs, lambda: 1, min_examples=10)
    good = {m: sum(v) / len(v) for m, v in probe.score(model, tok).items()}
    items = probe.score(damaged(model, "shuffled"), tok)
    bad = {m: sum(v) / len(v) for m, v in items.items()}
    assert probe.ready() and len(items["agreement"]) == len(exs) == len(items["nll"])
    assert good["agreement"] > 0.95 and good["nll"] < 0.2
    assert bad["agreement"] < 0.5 and bad["nll"] > 1.0


def test_fixed_probes_get_slack_only_while_the_rolling_probe_is_scored(tmp_path) -> None:
    n = 400
    base = [1.0] * 200 + [0.0] * 200  # 50%
    cand = [1.0] * 180 + [0.0] * 220  # 45%: confidently worse by more than 0.01
    scores = {"head": {"exact_match": cand}}
    assert regressions(scores, {"head": {"exact_match": base}}, 0.01, 0.1)
    assert regressions(scores, {"head": {"exact_match": base}}, 0.01, 0.1,
                       scale={"head": 5.0}) == []  # within 0.05
    gate = Gate(LocalWeightsStore(tmp_path), [], 0.01, 0.1, fixed_slack=5.0)
    assert gate._scale({"head": {}, "tail": {}}) == {}
    assert gate._scale({"head": {}, "rolling": {}}) == {"head": 5.0}
    assert len(base) == len(cand) == n
