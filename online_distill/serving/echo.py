"""``echo=true``: the prompt's own tokens and log-probabilities, before the generated ones.

This is what lets one online-distill be the *scoring* teacher of another: a client sends
prompt + continuation as the prompt, with ``echo=true, max_tokens=0, logprobs=k``, and reads
the teacher's distribution at every continuation token. As in OpenAI's API, the first prompt
token has no log-probability (nothing predicts it): its ``token_logprobs`` and
``top_logprobs`` entries are null.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from online_distill.models.generation import right_pad
from online_distill.serving.schemas import CompletionLogprobs

TopFn = Callable[[torch.Tensor, int], dict[str, float]]
_ROWS_PER_PASS = 8  # logits are (rows, P, V): a few prompts per forward bounds the memory


@dataclass(frozen=True, slots=True)
class PromptLogprobs:
    """Per prompt token: its text, offset in the prompt text, log-probability, top-k."""

    tokens: list[str]
    text_offset: list[int]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]


@torch.inference_mode()
def score_prompts(model: PreTrainedModel, prompts: Sequence[tuple[Sequence[int], int]],
                  pad_id: int, token_str: Callable[[int], str], top: TopFn,
                  special_ids: set[int]) -> list[PromptLogprobs]:
    """The model's raw log-softmax at every token of each (prompt ids, k) pair, from one
    forward pass per batch.

    ``top(logp (V,), k)`` formats the alternatives as the engine does for generated tokens.
    Special tokens (such as <bos>) take no room in the prompt text, so their offset span is 0.
    """
    device = next(model.parameters()).device
    out: list[PromptLogprobs] = []
    for start in range(0, len(prompts), _ROWS_PER_PASS):
        chunk = [(list(p), k) for p, k in prompts[start : start + _ROWS_PER_PASS]]
        ids, mask = right_pad([seq for seq, _ in chunk], pad_id)  # (B, W), (B, W)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        for row, (seq, k) in enumerate(chunk):
            # The logits at position t predict token t + 1.
            logp = torch.log_softmax(logits[row, : len(seq) - 1].float(), dim=-1).cpu()  # (P-1, V)
            nxt = torch.tensor(seq[1:], dtype=torch.long)
            chosen = logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1).tolist()  # (P - 1,)
            tokens = [token_str(t) for t in seq]
            offsets, at = [], 0
            for tid, tok in zip(seq, tokens, strict=True):
                offsets.append(at)
                at += 0 if tid in special_ids else len(tok)
            out.append(PromptLogprobs(
                tokens=tokens, text_offset=offsets, token_logprobs=[None, *chosen],
                top_logprobs=[None, *(top(logp[t], k) for t in range(len(seq) - 1))]))
    return out


def with_prompt(prompt: PromptLogprobs, generated: CompletionLogprobs) -> CompletionLogprobs:
    """The echoed logprobs: the prompt's entries, then the generated tokens' entries."""
    return CompletionLogprobs(
        tokens=prompt.tokens + generated.tokens,
        token_logprobs=prompt.token_logprobs + generated.token_logprobs,
        top_logprobs=prompt.top_logprobs + generated.top_logprobs,
        text_offset=prompt.text_offset + generated.text_offset,
    )
