"""Measure a demo model: greedy exact-match per kind and in-context continuation.

Prompts of equal token length are batched together, so batched greedy decoding needs no
padding and gives exactly the tokens that one-at-a-time decoding gives.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from online_distill.tasks.arithmetic import Kind, Problem, is_correct, parse_line, sample_problem


@torch.no_grad()
def complete(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    prompts: Sequence[str],
    max_new_tokens: int = 8,
    batch_size: int = 256,
    temperature: float = 0.0,
    seed: int = 0,
) -> list[str]:
    """Complete each prompt up to the end of its line (greedy when temperature is 0)."""
    encoded = tokenizer(list(prompts)).input_ids
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(encoded):
        by_length[len(ids)].append(i)
    out: list[str] = [""] * len(prompts)
    generator_seed = seed
    for length, indices in sorted(by_length.items()):
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            input_ids = torch.tensor([encoded[i] for i in chunk])  # (B, T)
            torch.manual_seed(generator_seed)
            generator_seed += 1
            sampling = {"do_sample": True, "temperature": temperature, "top_k": 0}
            generated = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                **(sampling if temperature > 0 else {"do_sample": False}),
            )  # (B, T + new)
            texts = tokenizer.batch_decode(generated[:, length:], skip_special_tokens=True)
            for i, text in zip(chunk, texts, strict=True):
                out[i] = text.split("\n", 1)[0]
    return out


def exact_match_by_kind(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, problems: Sequence[Problem]
) -> dict[str, float]:
    """Greedy exact-match accuracy per kind, plus ``"all"`` over every problem."""
    completions = complete(model, tokenizer, [p.prompt for p in problems])
    hits: dict[str, list[bool]] = defaultdict(list)
    for problem, completion in zip(problems, completions, strict=True):
        ok = is_correct(problem, completion)
        hits[problem.kind].append(ok)
        hits["all"].append(ok)
    return {k: sum(v) / len(v) for k, v in sorted(hits.items())}


@dataclass(frozen=True, slots=True)
class ContinuationResult:
    """Shares of sampled continuations of a few-shot prompt of one kind."""

    kind: str
    trials: int
    well_formed_same_kind: float
    """A parseable line of the prompt's kind, not a copy of one of the examples."""
    correct: float
    """Of all trials: well-formed, same kind, new, and with the right answer."""


def in_context_continuation(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    kind: Kind,
    trials: int = 100,
    shots: int = 4,
    temperature: float = 1.0,
    seed: int = 0,
) -> ContinuationResult:
    """Prompt with ``shots`` lines of ``kind``; measure the next line the model writes."""
    rng = random.Random(seed)
    prompts, shown = [], []
    for _ in range(trials):
        lines = [sample_problem(kind, rng).line for _ in range(shots)]
        prompts.append("".join(lines))
        shown.append({line.rstrip("\n") for line in lines})
    outputs = complete(model, tokenizer, prompts, max_new_tokens=16, temperature=temperature,
                       seed=seed)
    same = correct = 0
    for text, seen in zip(outputs, shown, strict=True):
        parsed = parse_line(text)
        if parsed is None or parsed[0].kind != kind or text in seen:
            continue
        same += 1
        correct += is_correct(*parsed)
    return ContinuationResult(kind, trials, same / trials, correct / trials)
