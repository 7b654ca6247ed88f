"""Reading OpenAI-compatible ``/v1/completions`` answers: token ids, teacher scores, errors.

The pure half of :mod:`online_distill.teachers.openai_http` (which holds the HTTP client and
:class:`~online_distill.teachers.openai_http.OpenAITeacher`): the error classes, the map
between token ids and the texts servers name tokens by, and the top-k / tail-mass math.

Token ids: with vLLM, ``return_tokens_as_token_ids`` makes tokens come back as
``"token_id:123"`` (exact). Other servers name tokens by text; they are mapped back through a
table of each vocabulary id decoded alone. Limits of the table: a text several ids decode to
(byte pieces of one multi-byte character, duplicated specials) maps to the lowest such id,
and a top-k alternative whose text is in no entry is dropped (its mass goes to the tail).
Chat answers (``/v1/chat/completions``, ``logprobs.content``) also give each token's UTF-8
``bytes``; they are looked up first, in a table of each id's own bytes (exact for byte-level
BPE, where a piece of a multi-byte character decodes to U+FFFD as text).
Scoring sends text, so a sequence must survive decode -> encode with the shared tokenizer
(the demo's character tokenizer always does; a BPE tokenizer may not for sampled ids):
otherwise :class:`TokenizationMismatch` is raised rather than scoring other tokens.

End of sequence: the in-process backends keep the EOS token as a PT's last token, so the
student learns where to stop. OpenAI-compatible servers (OpenAI, online-distill's Serve app)
leave EOS out of the returned tokens and logprobs when the model ends a completion, and so
do not return the teacher's distribution at that position either. When a choice ended at EOS
(see :func:`ended_at_eos`), :func:`with_eos` appends the tokenizer's ``eos_token_id`` with
that distribution taken as certain -- the teacher did stop there: top-k row ``[eos, ...]``
with log-probabilities ``[0, -inf, ...]``, tail ``-inf``, chosen log-probability 0 (for a
sampled PT this overstates a teacher that stopped with probability below 1). When the server
does return the EOS token (vLLM may, with ``return_tokens_as_token_ids``) it is used as is.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Collection, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import numpy as np
from transformers import PreTrainedTokenizerBase

from online_distill.messages.scores import TokenScores

log = logging.getLogger(__name__)

AS_IDS = "return_tokens_as_token_ids"
ID_PREFIX = "token_id:"
FULL_MASS = 1e-6  # top-k covering all but this much probability: no tail (-inf)
MAX_RETRY_AFTER_S = 300.0  # a Retry-After longer than this is a misconfigured server
Entries = list[tuple[int, float]]  # one position's top entries, (id, logprob), best first


class TeacherHTTPError(RuntimeError):
    """A request the server refused, or one that still failed after every retry."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False,
                 server_message: str = "") -> None:
        super().__init__(message)
        self.status, self.retryable, self.server_message = status, retryable, server_message

    def refuses(self, field: str) -> bool:
        """True when this is a validation error naming ``field`` (the server lacks it)."""
        return self.status in (400, 422) and field in self.server_message


class TeacherResponseError(ValueError):
    """The server answered, but not in a shape this backend can turn into labels or scores."""


class TokenizationMismatch(TeacherResponseError):
    """Text sent to the server does not tokenize back into the ids it was decoded from."""


class ScoringUnsupported(RuntimeError):
    """The server can label but cannot score given sequences."""


class TokenMap:
    """Token ids <-> the texts a server reads and names tokens by, for one shared tokenizer.

    The reverse table (text -> id) is built on first need, once, under a lock.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.lead = list(tokenizer("").input_ids)  # ids the tokenizer puts before any text
        self._table: dict[str, int] | None = None
        self._bytes_table: dict[bytes, int] | None = None
        self._lock = threading.Lock()

    def text(self, ids: Sequence[int]) -> str:
        """The text the server tokenizes back into ``ids`` (the tokenizer's lead ids, such
        as <bos>, are left for the server to add)."""
        ids, n = list(ids), len(self.lead)
        return str(self.tokenizer.decode(ids[n:] if n and ids[:n] == self.lead else ids,
                                         skip_special_tokens=False))

    def checked_text(self, index: int, seq: list[int]) -> str:
        """:meth:`text` of sequence ``index``, refused if it does not encode back to ``seq``."""
        text = self.text(seq)
        again = list(self.tokenizer(text).input_ids)
        if again != seq:
            at = next((j for j, (a, b) in enumerate(zip(seq, again, strict=False)) if a != b),
                      min(len(seq), len(again)))
            raise TokenizationMismatch(
                f"sequence {index} does not survive decode -> encode with the shared "
                f"tokenizer (first difference at token {at} of {len(seq)}; re-encoded to "
                f"{len(again)} tokens), so the server would score other tokens than the "
                "student's. Sampled ids of BPE tokenizers can be non-canonical; score such "
                "students with an in-actor teacher (teacher.backend=hf or vllm)")
        return text

    def id_of(self, token: str, as_ids: bool, raw: Sequence[int] | None = None
              ) -> int | None:
        """The id a server's token string names (``token_id:N``, its UTF-8 ``raw`` bytes
        when given, or its text), None if none."""
        if as_ids and token.startswith(ID_PREFIX):
            return int(token[len(ID_PREFIX) :])
        if raw is not None:
            if self._bytes_table is None:
                with self._lock:
                    if self._bytes_table is None:
                        self._bytes_table = bytes_table(self.tokenizer)
            found = self._bytes_table.get(bytes(raw))
            if found is not None:
                return found
        if self._table is None:
            with self._lock:
                if self._table is None:
                    self._table = reverse_table(self.tokenizer)
        return self._table.get(token)

    def read(self, logprobs: dict[str, Any], start: int, end: int | None, k: int,
             as_ids: bool, expect: Sequence[int] | None = None, ids_only: bool = False
             ) -> tuple[list[int], TokenScores]:
        """Token ids and scores of positions ``start:end`` of an OpenAI ``logprobs`` object."""
        tokens = list(logprobs.get("tokens") or [])
        end = len(tokens) if end is None else end
        if len(tokens) < end:
            raise TokenizationMismatch(f"the server returned {len(tokens)} tokens where "
                                       f"{end} were expected: its tokenizer differs")
        ids: list[int] = []
        for t in range(start, end):
            tid = self.id_of(tokens[t], as_ids)
            if tid is None:
                raise TeacherResponseError(f"token {tokens[t]!r} is no token of the shared "
                                           "tokenizer: serve the student's tokenizer, or a "
                                           f"vLLM server (it takes {AS_IDS})")
            if expect is not None and tid != expect[t - start]:
                raise TokenizationMismatch(f"position {t}: the server has token {tid} "
                                           f"({tokens[t]!r}) where {expect[t - start]} was sent")
            ids.append(tid)
        if ids_only:
            return ids, token_scores([], [], 0)
        rows, chosen = [], []
        for t in range(start, end):
            lp, top = logprobs["token_logprobs"][t], logprobs["top_logprobs"][t]
            if lp is None or not top:
                raise TeacherResponseError(f"no logprobs at position {t}; the server must "
                                           "return top_logprobs for every token")
            entries = ((self.id_of(s, as_ids), logprob(v)) for s, v in top.items())
            rows.append(sorted(((i, v) for i, v in entries if i is not None),
                               key=lambda e: -e[1]))
            chosen.append(logprob(lp))
        return ids, token_scores(rows, chosen, k)


    def read_chat(self, content: Sequence[dict[str, Any]], k: int, as_ids: bool
                  ) -> tuple[list[int], TokenScores]:
        """Token ids and scores of a chat choice's ``logprobs.content`` (one entry per
        generated token: token, logprob, bytes, top_logprobs [{token, logprob, bytes}])."""
        ids: list[int] = []
        rows, chosen = [], []
        for t, entry in enumerate(content):
            tid = self.id_of(str(entry.get("token", "")), as_ids, entry.get("bytes"))
            if tid is None:
                raise TeacherResponseError(f"token {entry.get('token')!r} is no token of the "
                                           "shared tokenizer: serve the student's tokenizer, "
                                           f"or a vLLM server (it takes {AS_IDS})")
            top = entry.get("top_logprobs")
            if entry.get("logprob") is None or not top:
                raise TeacherResponseError(f"no top_logprobs at position {t}; the server must "
                                           "return top_logprobs for every token (send "
                                           "top_logprobs >= 1 with logprobs: true)")
            found = ((self.id_of(str(e.get("token", "")), as_ids, e.get("bytes")),
                      logprob(e["logprob"])) for e in top)
            rows.append(sorted(((i, v) for i, v in found if i is not None),
                               key=lambda e: -e[1]))
            chosen.append(logprob(entry["logprob"]))
            ids.append(tid)
        return ids, token_scores(rows, chosen, k)


def prompt_logprob_scores(entries: list[Any], seq: list[int], start: int, k: int
                          ) -> TokenScores:
    """Scores of ``seq[start:]`` from vLLM's ``prompt_logprobs`` (one dict per prompt token)."""
    if len(entries) != len(seq):
        raise TokenizationMismatch(f"the server tokenized a scored sequence into "
                                   f"{len(entries)} tokens, not {len(seq)}: "
                                   "its tokenizer differs from the student's")
    rows, chosen = [], []
    for t in range(start, len(seq)):
        step = {int(i): logprob(v if isinstance(v, (int, float)) else v["logprob"])
                for i, v in (entries[t] or {}).items()}
        if seq[t] not in step:
            raise TokenizationMismatch(f"prompt_logprobs at position {t} lack token "
                                       f"{seq[t]}: the server tokenized differently")
        chosen.append(step[seq[t]])
        rows.append(sorted(step.items(), key=lambda e: -e[1]))
    return token_scores(rows, chosen, k)


def ended_at_eos(choice: dict[str, Any], stops: Collection[str]) -> bool:
    """True when a choice stopped because the model emitted EOS.

    ``finish_reason="stop"`` also covers a stop string. vLLM tells them apart
    (``stop_reason``: None for EOS, else the stop string or stop token id); other servers
    do not, and drop the stop string from the text, so with stop strings configured such a
    stop is ambiguous and taken as not EOS (appending EOS where a stop string cut would
    teach the student to end mid-text).
    """
    if choice.get("finish_reason") != "stop":
        return False
    if "stop_reason" in choice:
        return choice["stop_reason"] is None
    return not stops


def with_eos(ids: list[int], scores: TokenScores, eos: int, k: int
             ) -> tuple[list[int], TokenScores]:
    """``ids`` and ``scores`` with ``eos`` appended as a certain last token, unless it is
    already last. The row keeps the PT's top-k width (``k``, at least 1, when it is empty):
    ``eos`` first, then other ids at -inf."""
    if ids and ids[-1] == eos:
        return ids, scores
    width = scores.topk_ids.shape[1] if ids else max(k, 1)
    row = np.array([[eos, *[i for i in range(width) if i != eos][: width - 1]]], np.int64)
    lps = np.full((1, width), -np.inf, np.float32)
    lps[0, 0] = 0.0
    return [*ids, eos], TokenScores(
        np.concatenate([scores.topk_ids.reshape(len(ids), width), row]),
        np.concatenate([scores.topk_logprobs.reshape(len(ids), width), lps]),
        np.append(scores.tail_logmass, np.float32(-np.inf)).astype(np.float32),
        np.append(scores.token_logprobs, np.float32(0.0)).astype(np.float32))


def logprob(value: Any) -> float:
    """A server log-probability as a float <= 0; -9999 (OpenAI's stand-in for -inf) is -inf."""
    x = float(value)
    return -math.inf if x <= -9999.0 else min(x, 0.0)


def token_scores(rows: list[Entries], chosen: list[float], k: int) -> TokenScores:
    """TokenScores from per-position entries sorted best first; one k for all positions."""
    kk = min([k, *(len(r) for r in rows)]) if rows else 0
    if rows and kk == 0:
        raise TeacherResponseError("a position has no usable top_logprobs entry; ask for "
                                   "logprobs >= 1 from a server with the student's tokenizer")
    shape = (len(rows), kk)
    ids = np.array([[i for i, _ in r[:kk]] for r in rows], dtype=np.int64).reshape(shape)
    lps = np.array([[v for _, v in r[:kk]] for r in rows], dtype=np.float64).reshape(shape)
    covered = np.exp(lps).sum(axis=1)  # (L,)
    with np.errstate(divide="ignore"):
        tail = np.where(covered >= 1.0 - FULL_MASS, -np.inf,
                        np.log1p(-np.minimum(covered, 1.0 - FULL_MASS)))
    return TokenScores(ids, lps.astype(np.float32), tail.astype(np.float32),
                       np.asarray(chosen, dtype=np.float32).reshape(len(rows)))


def reverse_table(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Token text -> id, each id decoded alone; a text several ids share keeps the lowest."""
    table: dict[str, int] = {}
    shared = 0
    for i, text in enumerate(tokenizer.batch_decode([[i] for i in range(len(tokenizer))])):
        shared += text in table
        table.setdefault(text, i)
    if shared:
        log.warning("%d token ids decode to a text another id has; those texts map to the "
                    "lowest id (ask a vLLM server for %s to avoid this)", shared, AS_IDS)
    return table


def byte_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's table), char -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1),
                 *range(ord("\xae"), ord("\xff") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:  # bytes without a printable glyph are moved past 255, in order
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def is_byte_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when a fast tokenizer's decoder is byte-level (GPT-2, Llama 3, Qwen2 families)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return False
    try:
        state = decoder.__getstate__()  # the decoder's JSON, a Sequence's parts included
    except Exception:  # noqa: BLE001 - an exotic decoder: not byte-level as far as we know
        return False
    return b'"ByteLevel"' in (state if isinstance(state, bytes) else str(state).encode())


def bytes_table(tokenizer: PreTrainedTokenizerBase) -> dict[bytes, int]:
    """Each id's own UTF-8 bytes -> id (the lowest id when several share them).

    Byte-level BPE pieces are mapped back to their raw bytes (a piece of a multi-byte
    character too); special tokens and other tokenizers' ids use their decoded text.
    """
    alphabet = byte_alphabet() if is_byte_level(tokenizer) else None
    special = {int(i) for i in getattr(tokenizer, "all_special_ids", [])}
    special |= {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    table: dict[bytes, int] = {}
    for i, (piece, text) in enumerate(zip(pieces, texts, strict=True)):
        raw = text.encode("utf-8")
        if alphabet is not None and i not in special and piece is not None \
                and all(c in alphabet for c in piece):
            raw = bytes(alphabet[c] for c in piece)
        table.setdefault(raw, i)
    return table


def choices_of(resp: dict[str, Any], expected: int) -> list[dict[str, Any]]:
    """The answer's choices in index order (prompt_index * n + j), all present."""
    choices = resp.get("choices")
    if not isinstance(choices, list) or len(choices) != expected:
        got = len(choices) if isinstance(choices, list) else "no"
        raise TeacherResponseError(f"the server returned {got} choices where {expected} "
                                   "were asked for")
    ordered = sorted(choices, key=lambda c: int(c.get("index", -1)))
    if [c.get("index") for c in ordered] != list(range(expected)):
        raise TeacherResponseError(f"choice indices are not 0..{expected - 1}")
    return ordered


def logprobs_of(choice: dict[str, Any]) -> dict[str, Any]:
    """A choice's legacy-format ``logprobs`` object (tokens, token_logprobs, top_logprobs)."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict) or "tokens" not in logprobs:
        raise TeacherResponseError("a choice has no logprobs: the server must support the "
                                   "completions `logprobs` field (legacy format)")
    return logprobs


def chat_logprobs_of(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat choice's ``logprobs.content``: one entry per generated token."""
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if content is None and isinstance(logprobs, dict):
        message = choice.get("message") or {}
        if not message.get("content"):
            return []  # an empty answer: no tokens, so no entries (some servers send null)
    if not isinstance(content, list):
        raise TeacherResponseError("a chat choice has no logprobs.content: the server must "
                                   "return log-probabilities on /v1/chat/completions "
                                   "(`logprobs: true`, `top_logprobs: k`); use a server "
                                   "that does (vLLM, OpenAI, online-distill)")
    return content


def json_body(resp: httpx.Response, url: str) -> dict[str, Any]:
    """A successful answer's JSON object."""
    try:
        data = resp.json()
    except ValueError as exc:
        raise TeacherResponseError(f"POST {url} answered {resp.status_code} with a body that "
                                   f"is not JSON: {resp.text[:200]!r}") from exc
    if not isinstance(data, dict):
        raise TeacherResponseError(f"POST {url} answered with JSON that is not an object")
    return data


def server_message(resp: httpx.Response) -> str:
    """The error text of an OpenAI ({"error": {"message"}}), vLLM or FastAPI error body."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:500] or resp.reason_phrase
    if isinstance(data, dict):
        inner = data.get("error", data)
        if isinstance(inner, dict):
            for key in ("message", "detail"):
                if inner.get(key):
                    return str(inner[key])
        elif inner:
            return str(inner)
    return str(data)[:500]


def retry_after(resp: httpx.Response, default: float) -> float:
    """Seconds from a Retry-After header (seconds or an HTTP date), else ``default``."""
    value = resp.headers.get("retry-after")
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return default
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
