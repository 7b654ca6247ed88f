"""A teacher behind any OpenAI-compatible server (``/v1/completions`` and
``/v1/chat/completions``), spoken with ``httpx``.

Works with vLLM, OpenAI-compatible hosted APIs and another online-distill's Serve app.

Labeling: prompts are decoded to text and sent ``batch_size`` per request (``n`` samples per
prompt, plus one temperature-0 request when a greedy PT is asked for); the returned
``logprobs`` are the server's raw distribution (vLLM and online-distill return temperature-1
log-probabilities whatever the sampling settings), kept as top-k plus
``tail_logmass = log(1 - sum(p_topk))`` like the local HF backend. Beam search is not part
of the OpenAI API: ``decoding="beam"`` writes ``n`` sampled PTs instead (marked "sample").

Conversations (``label(..., conversations=...)``): hosted APIs return log-probabilities only
on ``/v1/chat/completions``, so a prompt that is a conversation is sent there as ``messages``
(one request per conversation and mode: the chat API takes one conversation per request),
with ``logprobs: true`` and ``top_logprobs: k`` (k at most 20, the hosted APIs' limit) and
``max_completion_tokens`` (``max_tokens`` for a server that refuses the newer name); the
server renders its chat template. ``choices[i].logprobs.content`` is read into the same
top-k and tail mass as a completion, and a choice that ended with ``finish_reason="stop"``
gets the end-of-turn token (the tokenizer's EOS, e.g. ``<|im_end|>``) as its last token, as
below. Text prompts in the same call still go to ``/v1/completions``.

Scoring given (prompt, continuation) ids: ``echo=true, max_tokens=0, logprobs=k`` returns the
log-probabilities of the prompt's own tokens (online-distill and vLLM support it); vLLM's
``prompt_logprobs`` field is the other way. ``score_mode="auto"`` tries echo, then
prompt_logprobs, and remembers what worked; a server with neither raises
:class:`ScoringUnsupported` ("sampled" mode labels only and never scores). Scoring a
conversation (GKD on-policy steps, Joint-Teaching) takes this completions path too, with the
prompt ids the teacher stage rendered with the chat template: the chat API cannot score
given tokens.

Reading answers (token ids, tail mass, EOS) is :mod:`online_distill.teachers.openai_parse`:
a PT the teacher ended at EOS keeps EOS as its last token, like the in-process backends; one
cut at a stop string does not. The top-k is capped at ``max_top_k``
(``teacher.server_max_logprobs``: 20 for online-distill and vLLM, 5 for OpenAI's hosted API).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import httpx
from transformers import PreTrainedTokenizerBase

from online_distill.config.teacher import TeacherConfig
from online_distill.messages import PseudoTarget
from online_distill.messages.scores import TokenScores
from online_distill.teachers.openai_parse import (
    AS_IDS,
    ScoringUnsupported,
    TeacherHTTPError,
    TeacherResponseError,
    TokenizationMismatch,
    TokenMap,
    chat_logprobs_of,
    choices_of,
    ended_at_eos,
    json_body,
    logprobs_of,
    prompt_logprob_scores,
    retry_after,
    server_message,
    with_eos,
)
from online_distill.teachers.protocol import LabelRequest, teacher_pseudo_target

__all__ = ["DEFAULT_BASE_URL", "OpenAITeacher", "ScoreMode", "ScoringUnsupported",
           "TeacherHTTPError", "TeacherResponseError", "TokenizationMismatch"]

log = logging.getLogger(__name__)

ScoreMode = Literal["auto", "echo", "prompt_logprobs", "sampled"]
DEFAULT_BASE_URL = "https://api.openai.com/v1"
CHAT_MAX_TOP_K = 20  # the most top_logprobs hosted chat APIs (OpenAI) return per token
Conversation = Sequence[Mapping[str, str]]  # OpenAI-style messages: {"role", "content"}
Labeled = list[tuple[int, PseudoTarget]]  # (prompt index, one of its PTs)


class OpenAITeacher:
    """Labels and scores token ids through an OpenAI-compatible completions endpoint.

    ``base_url`` ends in /v1 (empty: OpenAI's); ``tokenizer`` is the one the student shares.
    Up to ``max_concurrency`` requests of ``batch_size`` prompts are in flight; each waits at
    most ``timeout_s``; connect errors, timeouts, 429 and 5xx are retried ``max_retries``
    times after ``retry_backoff_s * 2**attempt`` seconds (or the server's Retry-After);
    other 4xx raise :class:`TeacherHTTPError` at once. The key is ``api_key`` or the
    environment variable ``api_key_env``, sent as a Bearer token and never logged.
    ``client`` and ``sleep`` are for tests.
    """

    def __init__(self, base_url: str, model: str, tokenizer: PreTrainedTokenizerBase, *,
                 timeout_s: float = 30.0, max_retries: int = 3, retry_backoff_s: float = 0.5,
                 max_concurrency: int = 8, teacher_id: str | None = None,
                 batch_size: int = 32, score_mode: ScoreMode = "auto", max_top_k: int = 20,
                 api_key_env: str = "OPENAI_API_KEY", api_key: str | None = None,
                 stop: Sequence[str] = (),
                 client: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not model:
            raise ValueError("model is empty; name the model the server serves "
                             "(GET {base_url}/models lists them)")
        if score_mode not in ("auto", "echo", "prompt_logprobs", "sampled"):
            raise ValueError(f"score_mode={score_mode!r} is not one of auto, echo, "
                             "prompt_logprobs, sampled")
        for name, value in (("max_concurrency", max_concurrency), ("batch_size", batch_size),
                            ("max_top_k", max_top_k)):
            if value < 1:
                raise ValueError(f"{name}={value} must be at least 1")
        if timeout_s <= 0 or max_retries < 0 or retry_backoff_s < 0:
            raise ValueError("timeout_s must be > 0, max_retries and retry_backoff_s >= 0")
        root = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.url, self.chat_url = root + "/completions", root + "/chat/completions"
        self.model, self.tokenizer, self.score_mode = model, tokenizer, score_mode
        self.timeout_s, self.max_retries, self.retry_backoff_s = timeout_s, max_retries, \
            retry_backoff_s
        self.batch_size, self.max_top_k, self.stop = batch_size, max_top_k, list(stop)
        self.teacher_id = teacher_id or model
        self.api_key_env = api_key_env
        self._key = api_key or os.environ.get(api_key_env) or ""  # never logged
        self._headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._client, self._owns_client = client or httpx.Client(), client is None
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="openai-teacher")
        self._sleep = sleep
        self._as_ids: bool | None = None  # does the server take return_tokens_as_token_ids?
        self._echo_tokens = 0  # max_tokens sent with echo: 1 once a server refuses 0
        self._score_via: str | None = None if score_mode == "auto" else score_mode
        self._warned_beam = False
        self._max_field = "max_completion_tokens"  # "max_tokens" once a server refuses it
        self._warned_uncapped = False
        self._tokens = TokenMap(tokenizer)
        eos = getattr(tokenizer, "eos_token_id", None)
        self._eos: int | None = None if eos is None else int(eos)

    @classmethod
    def from_config(cls, cfg: TeacherConfig, tokenizer: PreTrainedTokenizerBase,
                    **kwargs: Any) -> OpenAITeacher:
        """Build from ``teacher.*`` config fields (kwargs override or add, e.g. score_mode)."""
        fields: dict[str, Any] = dict(
            timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
            retry_backoff_s=cfg.retry_backoff_s, max_concurrency=cfg.max_concurrency,
            batch_size=cfg.batch_size, api_key_env=cfg.api_key_env, stop=cfg.stop,
            max_top_k=cfg.server_max_logprobs)
        fields.update(kwargs)
        return cls(cfg.base_url, cfg.model, tokenizer, **fields)

    def close(self) -> None:
        """Stop the worker threads and close the HTTP client if this teacher made it."""
        self._pool.shutdown(wait=True)
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> OpenAITeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ labeling
    def label(self, prompt_ids: Sequence[Sequence[int]], request: LabelRequest, *,
              conversations: Sequence[Conversation | None] | None = None
              ) -> list[list[PseudoTarget]]:
        """Pseudo-targets per prompt: one greedy first (if asked), then ``request.n`` sampled.

        ``conversations[i]`` (when given) is prompt i's messages, or None for a text prompt:
        conversations go to the chat endpoint, text prompts (their ids decoded) to
        completions.
        """
        if conversations is not None and len(conversations) != len(prompt_ids):
            raise ValueError(f"label got {len(prompt_ids)} prompts but {len(conversations)} "
                             "conversations; pass one entry per prompt (None for text)")
        chats = list(conversations) if conversations is not None else [None] * len(prompt_ids)
        texts = [i for i, c in enumerate(chats) if c is None]
        k = min(request.top_k_logprobs, self.max_top_k)
        modes = ["greedy"] if request.include_greedy or request.decoding == "greedy" else []
        if request.decoding != "greedy":
            if request.decoding == "beam" and not self._warned_beam:
                self._warned_beam = True
                log.warning("beam search is not part of the OpenAI API: writing %d sampled "
                            "PTs per prompt instead", request.n)
            modes.append("sample")
        # One job per request; jobs are listed greedy first for each prompt and their
        # answers read in that order, so each prompt's greedy PT comes first.
        jobs: list[Callable[[], Labeled]] = [
            self._texts_job(texts[a : a + self.batch_size], prompt_ids, mode, request, k)
            for a in range(0, len(texts), self.batch_size) for mode in modes]
        jobs += [self._chat_job(i, chat, mode, request, min(k, CHAT_MAX_TOP_K))
                 for i, chat in enumerate(chats) if chat is not None for mode in modes]
        out: list[list[PseudoTarget]] = [[] for _ in prompt_ids]
        for labeled in self._pool.map(lambda job: job(), jobs):
            for index, pt in labeled:
                out[index].append(pt)
        return out

    def _texts_job(self, rows: list[int], prompt_ids: Sequence[Sequence[int]], mode: str,
                   request: LabelRequest, k: int) -> Callable[[], Labeled]:
        """One /v1/completions request labeling prompts ``rows`` (their ids as text)."""
        body = self._label_body([self._tokens.text(prompt_ids[i]) for i in rows], mode,
                                request, k)

        def run() -> Labeled:
            resp, as_ids = self._post_adaptive(body)
            n, out = body["n"], []
            for choice in choices_of(resp, len(rows) * n):
                ids, scores = self._tokens.read(logprobs_of(choice), 0, None, k, as_ids)
                ids, scores = self._ended(choice, ids, scores, request, k)
                out.append((rows[choice["index"] // n],
                            teacher_pseudo_target(self.tokenizer, ids, scores, mode)))
            return out

        return run

    def _chat_job(self, index: int, chat: Conversation, mode: str, request: LabelRequest,
                  k: int) -> Callable[[], Labeled]:
        """One /v1/chat/completions request labeling conversation ``index``."""
        body: dict[str, Any] = {
            "messages": [{"role": str(m["role"]), "content": str(m["content"])}
                         for m in chat],
            "logprobs": True, "top_logprobs": k, **self._sampling(mode, request)}

        def run() -> Labeled:
            resp, as_ids = self._post_chat(body, request.max_new_tokens)
            out = []
            for choice in choices_of(resp, body["n"]):
                ids, scores = self._tokens.read_chat(chat_logprobs_of(choice), k, as_ids)
                if len(ids) > request.max_new_tokens:  # a server that ignored the cap
                    self._warn_uncapped(len(ids), request.max_new_tokens)
                    m = request.max_new_tokens
                    ids, scores = ids[:m], TokenScores(
                        scores.topk_ids[:m], scores.topk_logprobs[:m], scores.tail_logmass[:m],
                        scores.token_logprobs[:m])
                    choice = {**choice, "finish_reason": "length"}
                ids, scores = self._ended(choice, ids, scores, request, k)
                out.append((index, teacher_pseudo_target(self.tokenizer, ids, scores, mode)))
            return out

        return run

    def _ended(self, choice: dict[str, Any], ids: list[int], scores: TokenScores,
               request: LabelRequest, k: int) -> tuple[list[int], TokenScores]:
        """A PT the model ended at EOS (end of turn) gets EOS as its last token."""
        # EOS counts toward max_tokens on the server; never exceed the budget here.
        if (self._eos is not None and len(ids) < request.max_new_tokens
                and ended_at_eos(choice, self.stop)):
            return with_eos(ids, scores, self._eos, k)
        return ids, scores

    def _warn_uncapped(self, got: int, cap: int) -> None:
        if not self._warned_uncapped:
            self._warned_uncapped = True
            log.warning("the chat server returned %d tokens where %s=%d was sent: it ignores "
                        "the field; PTs are cut to %d tokens", got, self._max_field, cap, cap)

    def _label_body(self, texts: list[str], mode: str, request: LabelRequest, k: int
                    ) -> dict[str, Any]:
        return {"prompt": texts, "max_tokens": request.max_new_tokens, "logprobs": k,
                **self._sampling(mode, request)}

    def _sampling(self, mode: str, request: LabelRequest) -> dict[str, Any]:
        """The fields both routes share: model, n, temperature, top_p, seed, stop."""
        greedy = mode == "greedy"
        fields: dict[str, Any] = {
            "model": self.model, "n": 1 if greedy else request.n,
            "temperature": 0.0 if greedy else request.temperature,
            "top_p": 1.0 if greedy else request.top_p}
        if request.seed is not None:
            fields["seed"] = request.seed
        if self.stop:
            fields["stop"] = self.stop
        return fields


    # ------------------------------------------------------------------ scoring
    def score(self, prompt_ids: Sequence[Sequence[int]],
              continuation_ids: Sequence[Sequence[int]], top_k: int) -> list[TokenScores]:
        """Teacher top-k at each continuation token, L = len(continuation) rows per pair."""
        if len(prompt_ids) != len(continuation_ids):
            raise ValueError(f"score got {len(prompt_ids)} prompts but "
                             f"{len(continuation_ids)} continuations; pass one per prompt")
        if self.score_mode == "sampled":
            raise ScoringUnsupported(self._unsupported("score_mode='sampled' labels only"))
        seqs = [list(p) + list(c) for p, c in zip(prompt_ids, continuation_ids, strict=True)]
        texts = [self._tokens.checked_text(i, s) for i, s in enumerate(seqs)]
        starts = [len(p) for p in prompt_ids]
        k = min(top_k, self.max_top_k)
        chunks = [range(a, min(a + self.batch_size, len(seqs)))
                  for a in range(0, len(seqs), self.batch_size)]
        scored = self._pool.map(lambda rows: self._score_chunk(
            [texts[i] for i in rows], [seqs[i] for i in rows], [starts[i] for i in rows], k),
            chunks)
        return [sc for chunk in scored for sc in chunk]

    def _score_chunk(self, texts: list[str], seqs: list[list[int]], starts: list[int], k: int
                     ) -> list[TokenScores]:
        via = self._score_via or "echo"
        while True:
            try:
                out = (self._score_echo if via == "echo" else self._score_prompt_logprobs)(
                    texts, seqs, starts, k)
                self._score_via = via
                return out
            except TeacherHTTPError as err:
                if via == "echo" and err.refuses("max_tokens") and self._echo_tokens == 0:
                    self._echo_tokens = 1  # some servers need one generated token with echo
                elif via == "echo" and err.refuses("echo") and self.score_mode == "auto":
                    via = "prompt_logprobs"
                elif err.refuses("echo") or err.refuses("prompt_logprobs"):
                    raise ScoringUnsupported(self._unsupported(err.server_message)) from err
                else:
                    raise

    def _score_echo(self, texts: list[str], seqs: list[list[int]], starts: list[int], k: int
                    ) -> list[TokenScores]:
        body = {"model": self.model, "prompt": texts, "echo": True, "n": 1, "logprobs": k,
                "max_tokens": self._echo_tokens, "temperature": 0.0}
        resp, as_ids = self._post_adaptive(body)
        out = []
        for choice, seq, start in zip(choices_of(resp, len(texts)), seqs, starts, strict=True):
            # Echo lists the prompt's tokens (the first with a null logprob), then any
            # generated token (max_tokens=1 servers): keep positions start .. len(seq) - 1.
            logprobs = logprobs_of(choice)
            self._tokens.read(logprobs, 0, len(seq), 0, as_ids, expect=seq, ids_only=True)
            out.append(self._tokens.read(logprobs, start, len(seq), k, as_ids,
                                         expect=seq[start:])[1])
        return out

    def _score_prompt_logprobs(self, texts: list[str], seqs: list[list[int]],
                               starts: list[int], k: int) -> list[TokenScores]:
        body = {"model": self.model, "prompt": texts, "n": 1, "max_tokens": 1,
                "temperature": 0.0, "prompt_logprobs": k}
        out = []
        for choice, seq, start in zip(choices_of(self._post(body), len(texts)), seqs, starts,
                                      strict=True):
            entries = choice.get("prompt_logprobs")
            if not isinstance(entries, list):
                raise ScoringUnsupported(self._unsupported("the answer has no prompt_logprobs"))
            out.append(prompt_logprob_scores(entries, seq, start, k))
        return out

    def _unsupported(self, why: str) -> str:
        return (f"the teacher at {self.url} cannot score given sequences ({why}): scoring "
                "needs echo=true with logprobs or vLLM's prompt_logprobs. Only GKD on-policy "
                "steps, Joint-Teaching and ood.score=nll_gap score; set "
                "learner.onpolicy_lambda=0, learner.joint_teaching=false and ood.score=nll "
                "(or energy), or serve the teacher with vLLM or online-distill")

    # ------------------------------------------------------------------ HTTP
    def _post_chat(self, body: dict[str, Any], max_new_tokens: int
                   ) -> tuple[dict[str, Any], bool]:
        """POST a chat request with its token budget under the field the server takes
        (``max_completion_tokens``, else ``max_tokens``; the first refusal is remembered)."""
        field = self._max_field
        try:
            return self._post_adaptive({**body, field: max_new_tokens}, self.chat_url)
        except TeacherHTTPError as err:
            if field != "max_completion_tokens" or not err.refuses(field):
                raise
            log.info("the teacher server does not take max_completion_tokens; "
                     "sending max_tokens")
            self._max_field = "max_tokens"
            return self._post_adaptive({**body, "max_tokens": max_new_tokens}, self.chat_url)

    def _post_adaptive(self, body: dict[str, Any], url: str | None = None
                       ) -> tuple[dict[str, Any], bool]:
        """POST asking for tokens as ids unless the server refused that before; the answer
        and whether tokens come as ids. The first refusal is remembered."""
        if self._as_ids is False:
            return self._post(body, url), False
        try:
            resp = self._post({**body, AS_IDS: True}, url)
        except TeacherHTTPError as err:
            if not err.refuses(AS_IDS):
                raise
            log.info("the teacher server does not take %s; mapping token texts", AS_IDS)
            self._as_ids = False
            return self._post(body, url), False
        self._as_ids = True
        return resp, True

    def _post(self, body: dict[str, Any], url: str | None = None) -> dict[str, Any]:
        """POST one request (to ``url``, the completions endpoint by default); retry connect
        errors, timeouts, 429 and 5xx with backoff."""
        url = url or self.url
        for attempt in range(self.max_retries + 1):
            delay = self.retry_backoff_s * 2**attempt
            try:
                # timeout_s bounds a hung server or network; the request is then retried.
                resp = self._client.post(url, json=body, headers=self._headers,
                                         timeout=self.timeout_s)
            except httpx.TransportError as exc:  # connect errors and timeouts included
                failure = TeacherHTTPError(f"POST {url} failed: {type(exc).__name__}: "
                                           f"{self._scrub(str(exc))}", retryable=True)
            else:
                if resp.status_code < 400:
                    return json_body(resp, url)
                failure = self._http_error(resp, url)
                if not failure.retryable:
                    raise failure
                delay = retry_after(resp, delay)
            if attempt == self.max_retries:
                raise TeacherHTTPError(f"{failure} (gave up after {attempt + 1} attempts)",
                                       failure.status, True, failure.server_message)
            log.warning("teacher request failed, retry %d/%d in %.2fs: %s", attempt + 1,
                        self.max_retries, delay, failure)
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _http_error(self, resp: httpx.Response, url: str) -> TeacherHTTPError:
        status = resp.status_code
        message = self._scrub(server_message(resp))
        fix = {401: f"check the API key in ${self.api_key_env}",
               403: f"check the API key in ${self.api_key_env}",
               404: f"check base_url (it ends in /v1) and model={self.model!r}"}.get(status, "")
        text = f"POST {url} answered {status}: {message}" + (f"; {fix}" if fix else "")
        return TeacherHTTPError(text, status, status == 429 or status >= 500, message)

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text
