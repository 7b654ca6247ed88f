"""The local Hugging Face teacher backend: batched ``generate`` with per-step logits.

Labeling keeps the teacher's *own* distribution (raw logits, temperature 1) at every
generated position as top-k ids and log-probabilities plus the remaining mass; the sampling
temperature and top_p only choose which tokens are written. This matches what vLLM and
OpenAI-compatible servers return as ``logprobs``.

Conversations reach this backend already rendered with the chat template (the teacher stage
encodes them), so generation stops at the template's end-of-turn token, which is the
tokenizer's EOS (``<|im_end|>`` for ChatML), as well as at the generation config's EOS ids,
and a PT that stopped there keeps it as its last token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from online_distill.losses import sparse_from_logits
from online_distill.messages import PseudoTarget
from online_distill.messages.scores import TokenScores
from online_distill.models.device import resolve_device
from online_distill.models.generation import eos_ids_of, generate, right_pad
from online_distill.models.loader import load_causal_lm, load_tokenizer
from online_distill.teachers.protocol import LabelRequest, teacher_pseudo_target


class HFTeacher:
    """A causal LM loaded with ``from_pretrained`` that labels and scores token sequences."""

    def __init__(
        self,
        model: str | Path | PreTrainedModel,
        device: str = "auto",
        batch_size: int = 32,
        teacher_id: str | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        self.device = resolve_device(device)
        if isinstance(model, (str, Path)):
            model = load_causal_lm(model)
        if tokenizer is None:
            tokenizer = load_tokenizer(str(model.name_or_path))
        self.tokenizer = tokenizer
        self.model: PreTrainedModel = model.to(self.device).eval()
        self.batch_size = batch_size
        self.teacher_id = teacher_id or Path(str(model.name_or_path)).name or "hf-teacher"
        self.pad_id = int(tokenizer.pad_token_id or 0)
        # Stop at the end of a turn too: the tokenizer's EOS may be missing from the model's
        # generation config (a base model's config with a chat tokenizer).
        eos = getattr(tokenizer, "eos_token_id", None)
        self.eos_ids = eos_ids_of(self.model) | ({int(eos)} if eos is not None else set())

    # ------------------------------------------------------------------ labeling
    @torch.no_grad()
    def label(
        self, prompt_ids: Sequence[Sequence[int]], request: LabelRequest, *,
        conversations: Sequence[Sequence[Mapping[str, str]] | None] | None = None,
    ) -> list[list[PseudoTarget]]:
        """Pseudo-targets per prompt: one greedy first (if asked), then n sampled/beam ones.

        ``conversations`` is accepted for the protocol and not read: a conversation's
        ``prompt_ids`` are already its rendered chat template.
        """
        out: list[list[PseudoTarget]] = [[] for _ in prompt_ids]
        for start in range(0, len(prompt_ids), self.batch_size):
            chunk = list(prompt_ids[start : start + self.batch_size])
            modes: list[str] = []
            if request.include_greedy or request.decoding == "greedy":
                modes.append("greedy")
            if request.decoding != "greedy":
                modes.append(request.decoding)
            for mode in modes:
                n = 1 if mode == "greedy" else request.n
                for i, pts in enumerate(self._generate(chunk, mode, n, request)):
                    out[start + i].extend(pts)
        return out

    def _generate(
        self, prompts: list[Sequence[int]], mode: str, n: int, request: LabelRequest
    ) -> list[list[PseudoTarget]]:
        if request.seed is not None:
            torch.manual_seed(request.seed)
        gen = generate(self.model, prompts, self.pad_id, request.max_new_tokens, n=n, mode=mode,
                       temperature=request.temperature, top_p=request.top_p,
                       with_logits=mode != "beam", eos_ids=self.eos_ids)
        if gen.logits is None:  # beam logits are not aligned with the final beams: re-score
            pairs = [prompts[i // n] for i in range(len(gen.continuations))]
            scores = self.score(pairs, gen.continuations, request.top_k_logprobs)
        else:
            scores = self._scores_from_logits(gen.logits, gen.continuations,
                                              request.top_k_logprobs)
        grouped: list[list[PseudoTarget]] = [[] for _ in prompts]
        for i, (cont, sc) in enumerate(zip(gen.continuations, scores, strict=True)):
            grouped[i // n].append(teacher_pseudo_target(self.tokenizer, cont, sc, mode))
        return grouped


    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score(
        self,
        prompt_ids: Sequence[Sequence[int]],
        continuation_ids: Sequence[Sequence[int]],
        top_k: int,
    ) -> list[TokenScores]:
        """Teacher top-k at each continuation token, from one forward pass per batch."""
        results: list[TokenScores] = []
        for start in range(0, len(prompt_ids), self.batch_size):
            prompts = prompt_ids[start : start + self.batch_size]
            conts = continuation_ids[start : start + self.batch_size]
            seqs = [list(p) + list(c) for p, c in zip(prompts, conts, strict=True)]
            ids, mask = right_pad(seqs, self.pad_id)  # (B, W)
            logits = self.model(input_ids=ids.to(self.device),
                                attention_mask=mask.to(self.device)).logits.float()  # (B, W, V)
            for row, (p, c) in enumerate(zip(prompts, conts, strict=True)):
                # The logits at position t predict token t + 1.
                window = logits[row, len(p) - 1 : len(p) - 1 + len(c)]  # (L, V)
                results.extend(self._scores_from_logits(window.unsqueeze(0), [list(c)], top_k))
        return results

    # ------------------------------------------------------------------ helpers
    def _scores_from_logits(
        self, logits: torch.Tensor, conts: list[list[int]], top_k: int
    ) -> list[TokenScores]:
        """logits (N, L, V) -> one TokenScores per row, cut to each continuation's length."""
        sparse = sparse_from_logits(logits, top_k)
        logp = torch.log_softmax(logits, dim=-1)  # (N, L, V)
        out = []
        for row, cont in enumerate(conts):
            n = len(cont)
            tok = torch.tensor(cont, dtype=torch.long, device=logits.device)
            chosen = logp[row, :n].gather(-1, tok.unsqueeze(-1)).squeeze(-1)  # (n,)
            out.append(TokenScores(
                topk_ids=sparse.ids[row, :n].cpu().numpy().astype(np.int64),
                topk_logprobs=sparse.logprobs[row, :n].cpu().numpy().astype(np.float32),
                tail_logmass=sparse.tail_logmass[row, :n].cpu().numpy().astype(np.float32),
                token_logprobs=chosen.cpu().numpy().astype(np.float32),
            ))
        return out
