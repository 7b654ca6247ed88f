"""Bytes per labeled token of a LabeledExample: the binary wire format against plain JSON.

A realistic example: a 12-token prompt, 4 sampled pseudo-targets of 16 tokens each, top-k
log-probabilities of a softmax over random logits (a peaked, teacher-like distribution),
for a ~100-token vocabulary (the demo's character tokenizer) and a 32k one. "Labeled token"
means a generated PT token: 4 x 16 = 64 per example. Everything is measured in one run.

    .venv/bin/python bench/message_size.py
"""

from __future__ import annotations

import json
import time

import numpy as np

from online_distill.messages import (
    LabeledExample,
    PseudoTarget,
    Timings,
    decode,
    encode,
    to_json_dict,
)

N_PTS, T, PROMPT_LEN = 4, 16, 12


def example(vocab: int, k: int, rng: np.random.Generator) -> LabeledExample:
    pts = []
    for _ in range(N_PTS):
        logits = rng.normal(0.0, 3.0, size=(T, vocab))  # (T, V)
        logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)  # (T, V)
        topk = np.argsort(-logp, axis=1)[:, :k]  # (T, k)
        topk_lp = np.take_along_axis(logp, topk, axis=1)  # (T, k)
        tail = np.log1p(-np.minimum(np.exp(topk_lp).sum(axis=1), 1.0))  # (T,)
        chosen = np.array([rng.choice(vocab, p=np.exp(row) / np.exp(row).sum()) for row in logp])
        pts.append(
            PseudoTarget.from_arrays(
                token_ids=chosen,
                text="".join(chr(48 + int(c) % 40) for c in chosen),
                source="teacher",
                decoding="sample",
                topk_ids=topk,
                topk_logprobs=topk_lp,
                tail_logmass=tail,
                sampled_logprobs=logp[np.arange(T), chosen],
            )
        )
    return LabeledExample(
        prompt_id="0f8e4b7c2d1a4e6f9b3c5d7e9f1a2b3c",
        prompt_text="Q: 48+913=",
        prompt_token_ids=tuple(int(i) for i in rng.integers(0, vocab, PROMPT_LEN)),
        pseudo_targets=tuple(pts),
        teacher_id="demo-teacher@3",
        origin="traffic",
        kind="add3",
        timings=Timings(label_seconds=0.0421, queue_seconds=0.0173),
        created_at=1767225600.125,
        prompt_created_at=1767225600.0657,
    )


def max_logprob_error(a: LabeledExample, b: LabeledExample) -> float:
    err = 0.0
    for pa, pb in zip(a.pseudo_targets, b.pseudo_targets, strict=True):
        x, y = pa.topk_logprobs_array(), pb.topk_logprobs_array()
        finite = np.isfinite(x)
        err = max(err, float(np.abs(x[finite] - y[finite]).max(initial=0.0)))
    return err


def microseconds(fn: object, reps: int = 200) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()  # type: ignore[operator]
    return (time.perf_counter() - start) / reps * 1e6


def main() -> None:
    rng = np.random.default_rng(0)
    rows: list[tuple[int, int, str, int, int, int, float, float | None]] = []
    for vocab in (100, 32_000):
        for k in (5, 20):
            ex = example(vocab, k, rng)
            tokens = ex.num_labeled_tokens
            as_json = json.dumps(to_json_dict(ex), separators=(",", ":"), allow_nan=False)
            json_bytes = len(as_json.encode("utf-8"))
            rows.append((vocab, k, "json", json_bytes, tokens, json_bytes, 0.0, None))
            for dtype in ("float16", "float32"):
                data = encode(ex, logprob_dtype=dtype)  # type: ignore[arg-type]
                err = max_logprob_error(ex, decode(data, LabeledExample))
                us = microseconds(lambda e=ex, t=dtype: decode(encode(e, logprob_dtype=t)))
                rows.append((vocab, k, f"binary {dtype}", len(data), tokens, json_bytes, err, us))
    print(f"LabeledExample: {N_PTS} PTs x {T} tokens, {PROMPT_LEN}-token prompt")
    head = "| vocab | k | encoding | bytes/example | bytes/labeled token | vs JSON"
    print(head + " | max abs logprob error | encode+decode us |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for vocab, k, name, size, tokens, json_bytes, err, micros in rows:
        timing = "" if micros is None else f"{micros:.0f}"
        print(
            f"| {vocab} | {k} | {name} | {size} | {size / tokens:.1f} | "
            f"{size / json_bytes:.2f}x | {err:.1e} | {timing} |"
        )


if __name__ == "__main__":
    main()
