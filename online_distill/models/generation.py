"""Batched generation helpers shared by the HF teacher and the learner's on-policy samples."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists: input_ids (B, P) and attention_mask (B, P)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[row, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int, min_width: int = 1
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists (for scoring: causal attention never sees the padding):
    input_ids (B, W) and attention_mask (B, W), W >= ``min_width``."""
    width = max(min_width, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def cut_at_eos(tokens: Sequence[int], eos_ids: Collection[int]) -> list[int]:
    """Keep tokens up to and including the first end-of-sequence token."""
    for i, tok in enumerate(tokens):
        if tok in eos_ids:
            return list(tokens[: i + 1])
    return list(tokens)


def eos_ids_of(model: PreTrainedModel) -> set[int]:
    """The end-of-sequence ids of a model's generation config (an int, a list, or none)."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, list) else {int(eos)}


@dataclass(frozen=True, slots=True)
class Generated:
    """Continuations (cut after end-of-sequence) and, when asked, the raw per-step logits.

    continuations: B * n lists (the n samples of prompt i are rows i*n .. i*n + n - 1);
    logits: (B * n, L, V) float32 or None.
    """

    continuations: list[list[int]]
    logits: torch.Tensor | None


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    pad_id: int,
    max_new_tokens: int,
    n: int = 1,
    mode: str = "sample",
    temperature: float = 1.0,
    top_p: float = 1.0,
    with_logits: bool = False,
    eos_ids: Collection[int] | None = None,
) -> Generated:
    """Greedy, sampled (``top_k`` disabled) or beam continuations of left-padded prompts.

    Generation stops at ``eos_ids`` (default: the model's generation config), and a
    continuation that stopped there keeps that token as its last one.
    """
    device = next(model.parameters()).device
    input_ids, attention = left_pad(prompts, pad_id, device)  # (B, P)
    kwargs: dict[str, object] = {"do_sample": False}
    if mode == "sample":
        kwargs = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    elif mode == "beam":
        kwargs = {"do_sample": False, "num_beams": n}
    eos = eos_ids_of(model) if eos_ids is None else set(eos_ids)
    if eos:
        kwargs["eos_token_id"] = sorted(eos)
    was_training = model.training
    model.eval()
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention,
        max_new_tokens=max_new_tokens,
        num_return_sequences=n,
        return_dict_in_generate=True,
        output_logits=with_logits,
        pad_token_id=pad_id,
        **kwargs,
    )
    model.train(was_training)
    new_tokens = out.sequences[:, input_ids.shape[1] :].cpu()  # (B * n, L)
    conts = [cut_at_eos(row.tolist(), eos) for row in new_tokens]
    logits = torch.stack(out.logits, dim=1).float() if with_logits else None  # (B*n, L, V)
    return Generated(conts, logits)
