"""Decoded labeled examples view their record's bytes, and collate batches them vectorised."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from online_distill.learner.batching import Row, TrainingBatch, collate, rows_from_examples
from online_distill.messages import (
    LabeledExample,
    PseudoTarget,
    decode,
    encode,
    from_json_dict,
    to_json_dict,
)
from online_distill.messages.schema import FrozenArray
from online_distill.messages.scores import TokenScores
from tests.unit.rebuild import rebuilt

PT_FIELDS = ("token_ids", "topk_ids", "topk_logprobs", "tail_logmass", "sampled_logprobs")


def make_pt(rng: np.random.Generator, t: int, k: int, vocab: int = 50_000,
            source: str = "teacher") -> PseudoTarget:
    lp = np.sort(np.log(rng.dirichlet(np.ones(k + 1), size=t)[:, :k]), axis=1)[:, ::-1]
    if t:
        lp[0, 0] = 0.0  # probability 1 happens
        lp[-1, -1] = -np.inf  # and probability 0
    return PseudoTarget.from_arrays(
        token_ids=rng.integers(0, vocab, t), text="x", source=source,  # type: ignore[arg-type]
        decoding="sample", topk_ids=rng.integers(0, vocab, (t, k)), topk_logprobs=lp,
        tail_logmass=np.where(np.arange(t) % 3 == 0, -np.inf, np.log(rng.uniform(0.01, 0.2, t))),
        sampled_logprobs=lp[:, 0] if k else np.zeros(t))


def make_example(seed: int = 0, p: int = 5, ts: tuple[int, ...] = (4, 3), k: int = 3,
                 vocab: int = 50_000) -> LabeledExample:
    rng = np.random.default_rng(seed)
    return LabeledExample(prompt_id=f"p{seed}", prompt_text="x", teacher_id="t@1",
                          prompt_token_ids=rng.integers(0, vocab, p).tolist(),
                          pseudo_targets=tuple(make_pt(rng, t, k, vocab) for t in ts))


def record_bytes(record: bytes) -> np.ndarray:
    return np.frombuffer(record, dtype=np.uint8)


# --------------------------------------------------------------------------- zero copy


@pytest.mark.parametrize("vocab", [200, 50_000, 2**31 - 1])  # u1, u2, u4 ids on the wire
def test_decoded_float32_arrays_view_the_record(vocab: int) -> None:
    ex = make_example(vocab=vocab)
    record = encode(ex, logprob_dtype="float32")
    got = decode(record, LabeledExample)
    raw = record_bytes(record)
    assert np.shares_memory(got.prompt_token_ids_array(None, copy=False), raw)
    for pt in got.pseudo_targets:
        for name in PT_FIELDS:
            a = getattr(pt, name).array
            assert np.shares_memory(a, raw), name
            assert not a.flags.writeable, name
        assert np.shares_memory(pt.topk_logprobs_array(copy=False), raw)
        assert np.shares_memory(pt.topk_ids_array(None, copy=False), raw)
    assert got == ex


def test_float16_logprobs_are_float32_in_memory_ids_still_views() -> None:
    record = encode(make_example())
    got = decode(record, LabeledExample)
    raw = record_bytes(record)
    for pt in got.pseudo_targets:
        assert np.shares_memory(pt.token_ids.array, raw)  # type: ignore[attr-defined]
        assert np.shares_memory(pt.topk_ids.array, raw)  # type: ignore[attr-defined]
        for name in ("topk_logprobs", "tail_logmass", "sampled_logprobs"):
            a = getattr(pt, name).array
            assert a.dtype == np.float32 and not a.flags.writeable
            assert not np.shares_memory(a, raw)  # the one cast from f2


def test_arrays_are_read_only_and_inputs_are_copied() -> None:
    ids = np.array([1, 2, 3])
    lp = np.array([[-0.5], [-1.0], [-2.0]], dtype=np.float32)
    pt = PseudoTarget.from_arrays(token_ids=ids, text="x", source="teacher", decoding="greedy",
                                  topk_ids=ids[:, None], topk_logprobs=lp, tail_logmass=lp[:, 0],
                                  sampled_logprobs=lp[:, 0])
    ids[0], lp[0, 0] = 9, -9.0  # the caller's arrays stay theirs
    assert pt.token_ids == (1, 2, 3) and pt.topk_logprobs[0] == (-0.5,)
    assert ids.flags.writeable and lp.flags.writeable  # and their flags untouched
    view = pt.topk_logprobs_array(copy=False)
    with pytest.raises(ValueError, match="read-only"):
        view[0, 0] = 0.0
    with pytest.raises(AttributeError):
        pt.token_ids.array = ids  # type: ignore[attr-defined]
    mine = pt.topk_logprobs_array()  # the default: a fresh array the caller may write
    mine[0, 0] = 0.0
    assert pt.topk_logprobs[0] == (-0.5,)


# --------------------------------------------------------------------------- equality


def test_equality_and_hash_by_value() -> None:
    ex = make_example(vocab=200)  # ids are u1 on the wire, int64 in `ex`
    record = encode(ex, logprob_dtype="float32")
    a, b = decode(record, LabeledExample), decode(record, LabeledExample)
    assert a == ex and a == b and hash(a) == hash(b) == hash(ex)
    assert a.pseudo_targets[0].token_ids.array.dtype == np.uint8  # type: ignore[attr-defined]
    other = make_example(seed=1, vocab=200)
    assert a != other
    # -inf equals -inf; FrozenArray equals (and hashes as) the tuple of its values
    pt = a.pseudo_targets[0]
    assert pt.topk_logprobs[-1][-1] == -math.inf
    assert pt.topk_logprobs == tuple(map(tuple, pt.topk_logprobs_array().tolist()))
    assert hash(pt.token_ids) == hash(tuple(pt.token_ids))
    assert pt.topk_ids[:2] == tuple(pt.topk_ids)[:2] and pt.token_ids[-1] in pt.token_ids
    assert len({a, b, ex}) == 1
    assert rebuilt(a) == a and not rebuilt(a).prompt_token_ids.array.flags.writeable  # type: ignore[attr-defined]


def test_float16_round_trip_compares_at_float32() -> None:
    ex = make_example()
    got = decode(encode(ex), LabeledExample)  # f2: values rounded, so not equal to ex
    again = decode(encode(got), LabeledExample)  # but f2 values survive f2 exactly
    assert got == again and hash(got) == hash(again)
    np.testing.assert_allclose(got.pseudo_targets[0].topk_logprobs_array(),
                               ex.pseudo_targets[0].topk_logprobs_array(), atol=4e-3)


def test_json_view_is_plain_lists() -> None:
    ex = decode(encode(make_example(), logprob_dtype="float32"), LabeledExample)
    d = to_json_dict(ex)
    pt = d["pseudo_targets"][0]
    assert type(d["prompt_token_ids"]) is list and type(d["prompt_token_ids"][0]) is int
    assert type(pt["topk_ids"][0]) is list and type(pt["topk_ids"][0][0]) is int
    assert pt["topk_logprobs"][-1][-1] is None  # -inf
    assert from_json_dict(json.loads(json.dumps(d, allow_nan=False))) == ex


def test_empty_pseudo_target_has_one_shape() -> None:
    a = PseudoTarget(token_ids=(), text="", source="teacher", decoding="greedy", topk_ids=(),
                     topk_logprobs=(), tail_logmass=(), sampled_logprobs=())
    b = PseudoTarget.from_arrays(token_ids=np.zeros(0, np.int64), text="", source="teacher",
                                 decoding="greedy", topk_ids=np.zeros((0, 5), np.int64),
                                 topk_logprobs=np.zeros((0, 5)), tail_logmass=np.zeros(0),
                                 sampled_logprobs=np.zeros(0))
    assert a == b and (a.num_tokens, a.k) == (b.num_tokens, b.k) == (0, 0)
    assert a.topk_ids == () and b.topk_ids_array().shape == (0, 0)


# --------------------------------------------------------------------------- collate


def reference_collate(rows: list[Row], pad_id: int, max_len: int) -> TrainingBatch:
    """The per-row collate from before the vectorised one, on Python tuples."""
    from online_distill.losses import SparseTeacher
    conts = [tuple(r.continuation) for r in rows]
    prompts = [tuple(r.prompt_ids) for r in rows]
    widths = [r.scores.topk_ids.shape[1] for r, c in zip(rows, conts, strict=True) if c]
    k = min(widths) if widths else 1
    width = min(max_len, max(len(p) + len(c) for p, c in zip(prompts, conts, strict=True)))
    b = len(rows)
    input_ids = np.full((b, width), pad_id, dtype=np.int64)
    attention = np.zeros((b, width), dtype=np.int64)
    targets = np.full((b, width), pad_id, dtype=np.int64)
    loss_mask = np.zeros((b, width), dtype=np.bool_)
    top_ids = np.zeros((b, width, k), dtype=np.int64)
    top_lp = np.full((b, width, k), -np.inf, dtype=np.float32)
    tail = np.zeros((b, width), dtype=np.float32)
    for i, (r, prompt, cont) in enumerate(zip(rows, prompts, conts, strict=True)):
        seq = (prompt + cont)[:width]
        for j, tok in enumerate(seq):
            input_ids[i, j], attention[i, j] = tok, 1
        p = len(prompt)
        n = max(0, min(len(cont), width - p + 1))
        if n == 0 or p == 0:
            continue
        for j in range(n):
            pos = p - 1 + j
            targets[i, pos], loss_mask[i, pos] = cont[j], True
            lp = r.scores.topk_logprobs[j]
            top_ids[i, pos] = r.scores.topk_ids[j, :k]
            top_lp[i, pos] = lp[:k]
            tail[i, pos] = np.logaddexp.reduce(np.concatenate([[r.scores.tail_logmass[j]],
                                                               lp[k:]]))
    t = torch.from_numpy
    return TrainingBatch(t(input_ids), t(attention), t(targets), t(loss_mask),
                         torch.tensor([r.source == "teacher" for r in rows]),
                         SparseTeacher(t(top_ids), t(top_lp), t(tail)))


def assert_same(a: TrainingBatch, b: TrainingBatch) -> None:
    for name in ("input_ids", "attention_mask", "target_ids", "loss_mask", "teacher_rows"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name
    for name in ("ids", "logprobs", "tail_logmass"):
        x, y = getattr(a.teacher, name), getattr(b.teacher, name)
        assert x.dtype == y.dtype, name
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("max_len", [64, 9, 5, 1])  # 9, 5, 1: rows lose their ends
@pytest.mark.parametrize("vocab", [200, 50_000])
def test_collate_matches_the_per_token_reference(max_len: int, vocab: int) -> None:
    examples = [decode(encode(make_example(seed=s, p=p, ts=ts, k=k, vocab=vocab)),
                       LabeledExample)
                for s, (p, ts, k) in enumerate([(5, (4, 3), 3), (2, (6,), 3), (7, (1, 0, 2), 4),
                                                (1, (5,), 5)])]
    rows = rows_from_examples(examples)
    assert_same(collate(rows, 7, max_len), reference_collate(rows, 7, max_len))


def test_collate_mixed_rows_empty_prompts_and_wider_topk() -> None:
    rng = np.random.default_rng(3)
    pts = [make_pt(rng, 4, 5), make_pt(rng, 3, 2, source="student"), make_pt(rng, 2, 3)]
    decoded = [decode(encode(LabeledExample(prompt_id="a", prompt_text="x", teacher_id="t",
                                            prompt_token_ids=list(range(1, p + 1)),
                                            pseudo_targets=(pt,))), LabeledExample)
               for p, pt in zip((3, 0, 2), pts, strict=True)]
    rows = rows_from_examples(decoded)
    # a row built from Python tuples, as the on-policy student rows are
    sc = TokenScores(topk_ids=np.arange(12).reshape(4, 3), topk_logprobs=np.log(
        np.full((4, 3), 0.25, np.float32)), tail_logmass=np.full(4, np.log(0.25), np.float32),
        token_logprobs=np.zeros(4, np.float32))
    rows.append(Row((4, 5), (6, 7, 8, 9), sc, "student"))
    rows.append(Row((4, 5, 6), (), TokenScores(np.zeros((0, 0), np.int64),
                                               np.zeros((0, 0), np.float32),
                                               np.zeros(0, np.float32),
                                               np.zeros(0, np.float32)), "teacher"))
    for max_len in (64, 4):
        got, want = collate(rows, 0, max_len), reference_collate(rows, 0, max_len)
        assert_same(got, want)
        assert got.teacher.ids.shape[-1] == 2  # the narrowest row sets k; wider ones fold


def test_collate_of_rows_without_continuations() -> None:
    empty = TokenScores(np.zeros((0, 0), np.int64), np.zeros((0, 0), np.float32),
                        np.zeros(0, np.float32), np.zeros(0, np.float32))
    rows = [Row((1, 2), (), empty, "teacher"), Row((), (), empty, "student")]
    assert_same(collate(rows, 0, 8), reference_collate(rows, 0, 8))
    assert FrozenArray(np.arange(3)) == (0, 1, 2)
