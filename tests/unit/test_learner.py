"""The Learner on tiny real GPT-2 models (no Ray, no broker): seconds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from online_distill.config import LearnerConfig
from online_distill.learner.trainer import Learner, lr_factor
from online_distill.messages import LabeledExample, PseudoTarget
from online_distill.tasks.tokenizer import build_char_tokenizer
from online_distill.teachers.hf import HFTeacher
from online_distill.teachers.protocol import LabelRequest

TOKENIZER = build_char_tokenizer()


def tiny_model(seed: int, layers: int = 1, width: int = 32) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(TOKENIZER), n_positions=64, n_embd=width, n_layer=layers,
                     n_head=2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    model = GPT2LMHeadModel(cfg)
    model.generation_config.eos_token_id = [TOKENIZER.convert_tokens_to_ids("\n")]
    model.generation_config.pad_token_id = 0
    return model


@pytest.fixture(scope="module")
def teacher() -> HFTeacher:
    return HFTeacher(tiny_model(100, layers=2, width=48), device="cpu", tokenizer=TOKENIZER,
                     teacher_id="tiny-teacher")


@pytest.fixture(scope="module")
def examples(teacher: HFTeacher) -> list[LabeledExample]:
    prompts = [f"{a}+{b}=" for a, b in [(1, 2), (12, 7), (33, 45), (9, 9), (70, 3), (5, 61)]]
    ids = [TOKENIZER(p).input_ids for p in prompts]
    request = LabelRequest(n=2, include_greedy=True, top_k_logprobs=8, max_new_tokens=6, seed=0)
    labeled = teacher.label(ids, request)
    return [
        LabeledExample(prompt_id=f"p{i}", prompt_text=p, prompt_token_ids=tuple(x),
                       pseudo_targets=tuple(pts), teacher_id=teacher.teacher_id)
        for i, (p, x, pts) in enumerate(zip(prompts, ids, labeled, strict=True))
    ]


def learner_cfg(**kw) -> LearnerConfig:
    base = {"lr": 3e-3, "warmup_steps": 1, "device": "cpu", "loss": "jsd", "seed": 0}
    base.update(kw)
    return LearnerConfig(**base)


def test_label_gives_greedy_first_then_sampled_with_top_k(examples) -> None:
    for ex in examples:
        assert [pt.decoding for pt in ex.pseudo_targets] == ["greedy", "sample", "sample"]
        for pt in ex.pseudo_targets:
            assert pt.k == 8 and pt.num_tokens >= 1
            lp = pt.topk_logprobs_array()
            # top-k sorted, mass of top-k plus tail is 1
            assert np.all(np.diff(lp, axis=1) <= 1e-6)
            total = np.exp(lp).sum(1) + np.exp(pt.tail_logmass_array())
            np.testing.assert_allclose(total, 1.0, atol=1e-4)


def test_score_matches_the_distributions_recorded_while_labeling(teacher, examples) -> None:
    ex = examples[2]
    pt = ex.pseudo_targets[1]
    (scores,) = teacher.score([ex.prompt_token_ids], [pt.token_ids], top_k=8)
    np.testing.assert_array_equal(scores.topk_ids, pt.topk_ids_array(np.int64))
    np.testing.assert_allclose(scores.topk_logprobs, pt.topk_logprobs_array(), atol=1e-4)
    np.testing.assert_allclose(scores.token_logprobs, pt.sampled_logprobs_array(), atol=1e-4)


@pytest.mark.parametrize("loss", ["sequence_ce", "forward_kl", "reverse_kl", "jsd", "tvd"])
def test_training_on_a_fixed_batch_lowers_the_loss(examples, loss) -> None:
    learner = Learner(tiny_model(1), learner_cfg(loss=loss), pad_id=0)
    first = learner.train_step(examples)
    for _ in range(25):
        last = learner.train_step(examples)
    assert last.step == 26 and not last.skipped
    assert last.loss < 0.7 * first.loss
    assert set(last.losses) == {loss}
    assert last.tokens == sum(ex.num_labeled_tokens for ex in examples)


def test_gradient_accumulation_equals_one_big_batch(examples) -> None:
    a = Learner(tiny_model(2), learner_cfg(grad_accum_steps=1), pad_id=0)
    b = Learner(tiny_model(2), learner_cfg(grad_accum_steps=3), pad_id=0)
    sa, sb = a.train_step(examples), b.train_step(examples)
    assert sa.loss == pytest.approx(sb.loss, rel=1e-5)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6)


def test_non_finite_step_is_skipped_and_counted(examples) -> None:
    learner = Learner(tiny_model(3), learner_cfg(loss="reverse_kl"), pad_id=0)
    pt = examples[0].pseudo_targets[0]
    bad_lp = pt.topk_logprobs_array().copy()
    bad_lp[:] = -np.inf  # the teacher claims zero mass everywhere: an infinite divergence
    bad_pt = dataclasses.replace(pt, topk_logprobs=bad_lp, tail_logmass=[-np.inf] * pt.num_tokens)
    bad = dataclasses.replace(examples[0], pseudo_targets=(bad_pt,))
    before = [p.detach().clone() for p in learner.model.parameters()]
    stats = learner.train_step([bad])
    assert stats.skipped and learner.skipped_steps == 1 and learner.step == 0
    for p, q in zip(before, learner.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not learner.train_step(examples).skipped and learner.step == 1


def test_onpolicy_lambda_one_trains_on_student_samples_scored_by_teacher(teacher, examples):
    learner = Learner(tiny_model(4), learner_cfg(onpolicy_lambda=1.0), pad_id=0,
                      scorer=teacher, top_k=8, max_new_tokens=6)
    stats = learner.train_step(examples)
    # As many student samples per prompt as teacher PTs (3), so steps keep their size.
    assert stats.onpolicy and stats.sources == {"student": 3 * len(examples)}
    off = Learner(tiny_model(4), learner_cfg(onpolicy_lambda=0.0), pad_id=0, scorer=teacher)
    assert off.train_step(examples).sources == {"teacher": 3 * len(examples)}


def test_onpolicy_mixing_follows_lambda(teacher, examples) -> None:
    learner = Learner(tiny_model(5), learner_cfg(onpolicy_lambda=0.5), pad_id=0,
                      scorer=teacher, top_k=8, max_new_tokens=4)
    flags = [learner.train_step(examples[:2]).onpolicy for _ in range(40)]
    assert 10 <= sum(flags) <= 30


def test_joint_teaching_uses_teacher_and_student_pseudo_targets(teacher, examples) -> None:
    learner = Learner(tiny_model(6), learner_cfg(joint_teaching=True, onpolicy_samples=1,
                                                 onpolicy_warmup_steps=2), pad_id=0,
                      scorer=teacher, top_k=8, max_new_tokens=6)
    for _ in range(2):  # warm-up: teacher PTs only
        assert learner.train_step(examples).sources == {"teacher": 3 * len(examples)}
    stats = learner.train_step(examples)
    assert stats.sources == {"teacher": 3 * len(examples), "student": len(examples)}


def test_onpolicy_without_scorer_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="scorer"):
        Learner(tiny_model(0), learner_cfg(onpolicy_lambda=0.5), pad_id=0)


def test_checkpoint_resume_reproduces_next_steps_bit_for_bit(tmp_path, teacher, examples):
    cfg = learner_cfg(onpolicy_lambda=0.5, lr_schedule="cosine", lr_decay_steps=20)
    a = Learner(tiny_model(7), cfg, pad_id=0, scorer=teacher, top_k=8, max_new_tokens=5)
    for i in range(3):
        a.train_step(examples[i : i + 3])
    a.save(tmp_path, progress={"offsets": {"od.labels/0": 42}})
    expected = [a.train_step(examples[i : i + 3]).loss for i in range(3)]

    b = Learner(tiny_model(99), cfg, pad_id=0, scorer=teacher, top_k=8, max_new_tokens=5)
    progress = b.load(tmp_path)
    assert progress == {"offsets": {"od.labels/0": 42}} and b.step == 3
    got = [b.train_step(examples[i : i + 3]).loss for i in range(3)]
    assert got == expected  # bit for bit, on-policy sampling included
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_checkpoints_are_pruned_and_latest_wins(tmp_path, examples) -> None:
    learner = Learner(tiny_model(8), learner_cfg(keep_checkpoints=2), pad_id=0)
    for _ in range(4):
        learner.train_step(examples[:2])
        learner.save(tmp_path, progress={"step": learner.step})
    folders = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert folders == ["step-00000003", "step-00000004"]
    fresh = Learner(tiny_model(9), learner_cfg(), pad_id=0)
    assert fresh.load(tmp_path) == {"step": 4}
    assert Learner(tiny_model(9), learner_cfg(), pad_id=0).load(tmp_path / "none") is None


def test_lr_schedule_warms_up_then_decays() -> None:
    cfg = learner_cfg(warmup_steps=10, lr_schedule="cosine", lr_decay_steps=110,
                      min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.55)
    assert lr_factor(500, cfg) == pytest.approx(0.1)
    assert lr_factor(500, learner_cfg(warmup_steps=10)) == 1.0


def test_pseudo_target_rows_align_prompt_and_continuation(examples) -> None:
    from online_distill.learner.batching import collate, rows_from_examples

    rows = rows_from_examples(examples[:1])
    batch = collate(rows, pad_id=0, max_len=64)
    r = rows[0]
    p, n = len(r.prompt_ids), len(r.continuation)
    assert batch.loss_mask[0].nonzero().flatten().tolist() == list(range(p - 1, p - 1 + n))
    assert batch.target_ids[0, p - 1 : p - 1 + n].tolist() == list(r.continuation)
    assert batch.input_ids[0, p : p + n - 1].tolist() == list(r.continuation[:-1])
    assert isinstance(examples[0].pseudo_targets[0], PseudoTarget)


def test_collate_folds_a_larger_top_k_into_the_tail_bin(examples) -> None:
    import math

    from online_distill.learner.batching import Row, collate, rows_from_examples
    from online_distill.messages.scores import TokenScores

    wide = rows_from_examples(examples[:1])[0]  # k = 8
    s = wide.scores
    narrow = Row(wide.prompt_ids, wide.continuation,
                 TokenScores(s.topk_ids[:, :3], s.topk_logprobs[:, :3],
                             np.logaddexp.reduce(np.concatenate(
                                 [s.tail_logmass[:, None], s.topk_logprobs[:, 3:]], 1), 1),
                             s.token_logprobs), "teacher")
    batch = collate([wide, narrow], pad_id=0, max_len=64)
    assert batch.teacher.ids.shape[-1] == 3
    mask = batch.loss_mask
    torch.testing.assert_close(batch.teacher.tail_logmass[0][mask[0]],
                               batch.teacher.tail_logmass[1][mask[1]])
    total = batch.teacher.logprobs[0][mask[0]].exp().sum(-1) + batch.teacher.tail_logmass[0][
        mask[0]].exp()
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-4, rtol=0)
    assert not math.isnan(float(batch.teacher.tail_logmass.sum()))


def test_live_signals_match_independent_computations(examples) -> None:
    """The step's per-example energy, KL and agreement, from its own forward pass, equal the
    same quantities computed separately before the step (the student as it met the data)."""
    import copy

    from online_distill.learner.batching import collate, rows_from_examples
    from online_distill.losses import sparse_divergence
    from online_distill.models.scores import prompt_energies

    model = tiny_model(3)
    before = copy.deepcopy(model)
    learner = Learner(model, learner_cfg(grad_accum_steps=2), pad_id=0)
    stats = learner.train_step(examples)
    sig = stats.signals
    assert sig is not None and sig.examples == tuple(range(len(examples)))
    energies = prompt_energies(before, [ex.prompt_token_ids for ex in examples], pad_id=0)
    assert sig.energy == pytest.approx(energies, abs=1e-4)
    for i, ex in enumerate(examples):
        rows = rows_from_examples([ex])
        kls, agree = [], []
        for row in rows:  # per row: mean over its tokens; the example: mean over its rows
            b = collate([row], 0, 64)
            with torch.no_grad():
                logits = before(input_ids=b.input_ids).logits
            kls.append(float(sparse_divergence("forward_kl", logits, b.teacher, b.loss_mask)))
            top = b.teacher.ids[b.loss_mask].gather(
                -1, b.teacher.logprobs[b.loss_mask].argmax(-1, keepdim=True)).squeeze(-1)
            agree.append(float((logits[b.loss_mask].argmax(-1) == top).float().mean()))
        assert sig.kl[i] == pytest.approx(sum(kls) / len(kls), rel=1e-4)
        assert sig.agreement[i] == pytest.approx(sum(agree) / len(agree))
    assert all(0 <= a <= 1 for a in sig.agreement) and all(k > 0 for k in sig.kl)


def test_reference_energy_is_frozen_until_renewed(examples) -> None:
    from online_distill.learner.drift_reference import ReferenceEnergy

    model = tiny_model(4)
    ref = ReferenceEnergy(pad_id=0, renew_after=10)
    prompts = [ex.prompt_token_ids for ex in examples]  # 6 prompts
    first, renewed = ref.score(model, prompts, may_renew=True)
    assert renewed
    with torch.no_grad():  # the live student moves on
        for p in model.parameters():
            p.mul_(1.5)
    again, renewed = ref.score(model, prompts, may_renew=True)  # 6 < 10 scored: same copy
    assert not renewed and again == pytest.approx(first)
    held, renewed = ref.score(model, prompts, may_renew=False)  # 12 >= 10, but in alert
    assert not renewed and held == pytest.approx(first)
    fresh, renewed = ref.score(model, prompts, may_renew=True)
    assert renewed and fresh != pytest.approx(first) and ref.renewals == 2
