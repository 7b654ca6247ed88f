"""Batched completions from one loaded student version, with a hand-written decode loop.

All rows of all requests (each prompt times its ``n``) are left-padded into one batch and
decoded together with a KV cache; each row keeps its own sampling settings, random
generator, token budget and stop strings, so a seeded request gives the same text whether
it is batched with others or not.
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from online_distill.models.chat import encode_rendered
from online_distill.models.generation import eos_ids_of, left_pad
from online_distill.serving.echo import PromptLogprobs, score_prompts, with_prompt
from online_distill.serving.jobs import Job, Progress, RowProgress, as_job
from online_distill.serving.schemas import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionUsage,
    ModelCard,
    ModelList,
)
from online_distill.serving.validation import ApiError, stop_strings

_SEED_MASK = (1 << 64) - 1


@dataclass
class _Row:
    """One choice being decoded: its settings and what it has produced so far."""

    request: int
    index: int  # OpenAI choice index: prompt_index * n + j
    prompt_ids: list[int]
    prompt_chars: int
    req: CompletionRequest
    stops: list[str]
    generator: torch.Generator | None  # None for greedy rows
    eos: set[int]  # ids that end this row
    job: Job
    ids: list[int] = field(default_factory=list)  # generated ids, EOS excluded
    token_logprobs: list[float | None] = field(default_factory=list)  # never None here
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    generated: int = 0  # tokens the model produced, EOS included
    finish: str | None = None
    text: str | None = None  # set when a stop string cut the text
    prompt: str = ""  # the prompt text, repeated before the completion with echo=true


class CompletionEngine:
    """Serves OpenAI-shaped completions from one model version."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, version: int,
                 served_model_name: str, max_batch_rows: int = 64) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.version = version
        self.served_model_name = served_model_name
        self.max_batch_rows = max_batch_rows
        self.created = int(time.time())
        self.eos_ids = eos_ids_of(model)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else min(self.eos_ids, default=0))
        cfg = model.config
        context = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
        self.context_length: int | None = int(context) if context else None
        self.device = next(model.parameters()).device
        self._token_text: dict[int, str] = {}
        # transformers renamed forward's ``past_key_values`` to ``cache`` within 5.x.
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    # ------------------------------------------------------------------ public API
    def models(self) -> dict[str, Any]:
        """``GET /v1/models`` body: the one served model."""
        card = ModelCard(id=self.served_model_name, created=self.created, version=self.version)
        return ModelList(data=[card]).model_dump()

    def encode(self, prompt: str, chat: bool = False) -> list[int]:
        """Prompt token ids, encoded as the demo evaluator and teacher stage do (a rendered
        chat template with ``chat``: it holds its special tokens already)."""
        ids = (encode_rendered(self.tokenizer, prompt) if chat else
               list(self.tokenizer(prompt).input_ids))
        if not ids and self.tokenizer.bos_token_id is not None:
            ids = [int(self.tokenizer.bos_token_id)]
        if not ids:
            raise ApiError(400, "prompt is empty and this model has no <bos> token to start "
                                "from; send a prompt of at least one character", param="prompt",
                           code="empty_prompt")
        return ids

    def check_context(self, req: CompletionRequest, prompts: Sequence[str],
                      chat: bool = False) -> None:
        """Raise a 400 when a prompt plus ``max_tokens`` does not fit the model's context."""
        for i, prompt in enumerate(prompts):
            self._check_fits(req, i, len(self.encode(prompt, chat)))

    def complete(self, req: CompletionRequest, prompts: list[str]) -> dict[str, Any]:
        """One request's Completion (see :meth:`complete_many`)."""
        return self.complete_many([(req, prompts)])[0]

    def complete_many(self, requests: Sequence[Job | tuple[CompletionRequest, list[str]]]
                      ) -> list[dict[str, Any]]:
        """One OpenAI Completion dict per (validated request, its prompts), decoded together.

        Temperature 0 is greedy; otherwise tokens are drawn from softmax(logits / temperature)
        after nucleus (``top_p``) filtering, with a generator per row seeded ``seed + index``
        when the request has a seed. ``logprobs`` (chosen token and top-k alternatives) are
        the model's own distribution: log_softmax of the raw logits (temperature 1, before
        top_p), which is what a distillation teacher needs. ``echo=true`` puts the prompt
        before the completion, in the text and in ``logprobs`` (``max_tokens=0`` then scores
        the prompt alone: see :mod:`online_distill.serving.echo`). The EOS token ends a row
        (``finish_reason="stop"``) and is counted in ``usage`` but is not part of the text or
        of ``logprobs``; a stop string cuts the text before it and trims the tokens to those
        that produced the kept text. Raises :class:`ApiError` if any prompt does not fit the
        context (callers merging many clients' requests should :meth:`check_context` first).

        A :class:`~online_distill.serving.jobs.Job` with a listener hears its progress once
        before decoding and after every step; one whose ``cancel`` is set stops decoding
        (its answer is then incomplete, for nobody).
        """
        jobs = [as_job(item) for item in requests]
        rows: list[_Row] = []
        prompt_tokens: list[int] = []
        for r, job in enumerate(jobs):
            encoded = [self.encode(p, job.chat) for p in job.prompts]
            for i, ids in enumerate(encoded):
                self._check_fits(job.req, i, len(ids))
            prompt_tokens.append(sum(len(ids) for ids in encoded))
            rows.extend(self._rows_of(r, job, encoded))
        listened = {r: ([row for row in rows if row.request == r], prompt_tokens[r])
                    for r, job in enumerate(jobs) if job.listener is not None}
        self._notify(listened)
        live = [row for row in rows if row.finish is None]  # max_tokens=0 rows only echo
        for start in range(0, len(live), self.max_batch_rows):
            self._decode(live[start : start + self.max_batch_rows], listened)
        echoed = self._echo(rows)
        return [self._completion(job.req, [row for row in rows if row.request == r],
                                 prompt_tokens[r], echoed) for r, job in enumerate(jobs)]

    def _notify(self, listened: dict[int, tuple[list[_Row], int]]) -> None:
        """Tell each listening job where its rows are (a finished job hears it once)."""
        for r, (rows, prompt_tokens) in list(listened.items()):
            progress = Progress(self.version, prompt_tokens, tuple(
                RowProgress(row.index, row.text if row.text is not None
                            else self._decode_text(row.ids), row.finish, row.generated)
                for row in sorted(rows, key=lambda row: row.index)))
            listener = rows[0].job.listener
            assert listener is not None
            listener(progress)
            if progress.done:
                del listened[r]

    # ------------------------------------------------------------------ request <-> rows
    def _check_fits(self, req: CompletionRequest, i: int, num_ids: int) -> None:
        if self.context_length is None or num_ids + req.max_tokens <= self.context_length:
            return
        room = self.context_length - num_ids
        fix = (f"lower max_tokens to at most {room}" if room >= 1 else
               f"shorten the prompt to under {self.context_length} tokens")
        raise ApiError(400, f"prompt {i} is {num_ids} tokens and max_tokens={req.max_tokens}, "
                            f"over this model's context of {self.context_length} tokens; {fix}",
                       param="max_tokens" if room >= 1 else "prompt",
                       code="context_length_exceeded")

    def _rows_of(self, r: int, job: Job, encoded: list[list[int]]) -> list[_Row]:
        rows, req = [], job.req
        eos = self.eos_ids
        if job.chat and self.tokenizer.eos_token_id is not None:  # the template's end of turn
            eos = eos | {int(self.tokenizer.eos_token_id)}
        for p, (prompt, ids) in enumerate(zip(job.prompts, encoded, strict=True)):
            for j in range(req.n):
                index = p * req.n + j
                rows.append(_Row(request=r, index=index, prompt_ids=ids,
                                 prompt_chars=len(prompt), req=req, stops=stop_strings(req),
                                 generator=self._generator(req, index), eos=eos, job=job,
                                 prompt=prompt, finish="length" if req.max_tokens == 0 else None))
        return rows

    @staticmethod
    def _generator(req: CompletionRequest, index: int) -> torch.Generator | None:
        if req.temperature == 0:
            return None
        gen = torch.Generator()
        if req.seed is None:
            gen.seed()  # non-deterministic
        else:
            gen.manual_seed((req.seed + index) & _SEED_MASK)
        return gen

    def _echo(self, rows: list[_Row]) -> dict[tuple[int, int], PromptLogprobs]:
        """Prompt logprobs of each echoed prompt with logprobs, by (request, prompt index)."""
        firsts = [row for row in rows if row.req.echo and row.req.logprobs is not None
                  and row.index % row.req.n == 0]
        scores = score_prompts(self.model, [(r.prompt_ids, r.req.logprobs or 0) for r in firsts],
                               self.pad_id, self._token_str, self._top,
                               set(self.tokenizer.all_special_ids))
        return {(r.request, r.index // r.req.n): sc for r, sc in zip(firsts, scores, strict=True)}

    def _completion(self, req: CompletionRequest, rows: list[_Row], prompt_tokens: int,
                    echoed: dict[tuple[int, int], PromptLogprobs]) -> dict[str, Any]:
        choices = [self._choice(row, echoed.get((row.request, row.index // req.n)))
                   for row in sorted(rows, key=lambda row: row.index)]
        completion_tokens = sum(row.generated for row in rows)
        usage = CompletionUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                total_tokens=prompt_tokens + completion_tokens)
        return Completion(id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()),
                          model=self.served_model_name, system_fingerprint=f"v{self.version}",
                          choices=choices, usage=usage, version=self.version).model_dump()

    def _choice(self, row: _Row, echoed: PromptLogprobs | None) -> CompletionChoice:
        text = row.text if row.text is not None else self._decode_text(row.ids)
        logprobs = None
        if row.req.logprobs is not None:
            tokens = [self._token_str(t) for t in row.ids]
            offsets, at = [], row.prompt_chars
            for tok in tokens:
                offsets.append(at)
                at += len(tok)
            logprobs = CompletionLogprobs(tokens=tokens, token_logprobs=row.token_logprobs,
                                          top_logprobs=row.top_logprobs, text_offset=offsets)
        if row.req.echo:
            text = row.prompt + text
            if echoed is not None and logprobs is not None:
                logprobs = with_prompt(echoed, logprobs)
        return CompletionChoice(index=row.index, text=text, logprobs=logprobs,
                                finish_reason="stop" if row.finish == "stop" else "length")

    # ------------------------------------------------------------------ decode loop
    @torch.inference_mode()
    def _decode(self, rows: list[_Row],
                listened: dict[int, tuple[list[_Row], int]] | None = None) -> None:
        """Decode ``rows`` together until each has finished; fills their state in place and
        tells the listening jobs among them after every step."""
        listened = {r: v for r, v in (listened or {}).items()
                    if any(row.request == r for row in rows)}
        input_ids, mask = left_pad([row.prompt_ids for row in rows], self.pad_id,
                                   self.device)  # (B, P), (B, P)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, P)
        past = None
        for _ in range(max(row.req.max_tokens for row in rows)):
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                             use_cache=True, **{self._cache_arg: past})
            past = getattr(out, "cache", None)
            past = out.past_key_values if past is None else past
            logits = out.logits[:, -1, :].float()  # (B, V)
            chosen = self._pick(rows, logits)  # (B,)
            self._notify(listened)
            if all(row.finish is not None for row in rows):
                break
            input_ids = chosen.to(self.device).unsqueeze(-1)  # (B, 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)  # (B, P + t)
            positions = positions[:, -1:] + 1  # (B, 1)

    def _pick(self, rows: list[_Row], logits: torch.Tensor) -> torch.Tensor:
        """Choose each live row's next token from ``logits`` (B, V); record it; (B,) ids."""
        greedy = logits.argmax(dim=-1).cpu()  # (B,)
        need_logp = any(r.req.logprobs is not None and r.finish is None for r in rows)
        logp = torch.log_softmax(logits, dim=-1).cpu() if need_logp else None  # (B, V)
        cpu_logits = logits.cpu() if any(r.generator is not None for r in rows) else None
        chosen = torch.full((len(rows),), self.pad_id, dtype=torch.long)  # (B,)
        for b, row in enumerate(rows):
            if row.finish is None and row.job.cancel.is_set():
                row.finish = "cancelled"  # the client went away: free its place
            if row.finish is not None:
                continue
            if row.generator is None or cpu_logits is None:
                token = int(greedy[b])
            else:
                token = sample_token(cpu_logits[b], row.req.temperature, row.req.top_p,
                                     row.generator)
            chosen[b] = token
            self._advance(row, token, None if logp is None else logp[b])
        return chosen

    def _advance(self, row: _Row, token: int, logp: torch.Tensor | None) -> None:
        """Append ``token`` to ``row``; logp: (V,) raw log-probs of this step or None."""
        row.generated += 1
        if token in row.eos:
            row.finish = "stop"
            return
        row.ids.append(token)
        k = row.req.logprobs
        if k is not None and logp is not None:
            row.token_logprobs.append(float(logp[token]))
            row.top_logprobs.append(self._top(logp, k))
        if row.stops and self._cut_at_stop(row):
            return
        if row.generated >= row.req.max_tokens:
            row.finish = "length"

    def _cut_at_stop(self, row: _Row) -> bool:
        """Cut ``row`` before its earliest stop string, if one has appeared; True when cut."""
        text = self._decode_text(row.ids)
        hits = [i for i in (text.find(s) for s in row.stops) if i >= 0]
        if not hits:
            return False
        cut = min(hits)
        keep = next(k for k in range(len(row.ids) + 1)
                    if len(self._decode_text(row.ids[:k])) >= cut)
        del row.ids[keep:], row.token_logprobs[keep:], row.top_logprobs[keep:]
        row.text, row.finish = text[:cut], "stop"
        return True

    def _top(self, logp: torch.Tensor, k: int) -> dict[str, float]:
        """Top-``k`` alternatives of logp (V,) as token text -> logprob (higher kept on clash)."""
        if k == 0:
            return {}
        values, ids = torch.topk(logp, min(k, logp.shape[-1]))  # (k,), (k,)
        top: dict[str, float] = {}
        for value, tid in zip(values.tolist(), ids.tolist(), strict=True):
            top.setdefault(self._token_str(tid), value)  # sorted: the first is the highest
        return top

    def _token_str(self, token: int) -> str:
        text = self._token_text.get(token)
        if text is None:
            text = self._token_text[token] = str(self.tokenizer.decode([token]))
        return text

    def _decode_text(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))


def sample_token(logits: torch.Tensor, temperature: float, top_p: float,
                 generator: torch.Generator) -> int:
    """Draw one id from softmax(logits (V,) / temperature) restricted to the top_p nucleus.

    Uses exactly one uniform draw from ``generator`` per call (inverse CDF over the
    probabilities sorted high to low), so a row's draws depend only on its own seed.
    """
    probs = torch.softmax(logits.double() / temperature, dim=-1)  # (V,)
    sorted_probs, order = probs.sort(descending=True, stable=True)  # (V,), (V,)
    if top_p < 1.0:
        before = sorted_probs.cumsum(0) - sorted_probs  # (V,) mass ranked above each token
        sorted_probs = sorted_probs * (before < top_p)  # the top token is always kept
    cdf = sorted_probs.cumsum(0)  # (V,)
    u = torch.rand((), generator=generator, dtype=torch.float64) * cdf[-1]
    pick = int(torch.searchsorted(cdf, u.reshape(1), right=True).clamp(max=len(cdf) - 1))
    return int(order[pick])
