"""The teacher stage: prompts in, labeled examples out, offsets committed only when safe.

One call to :meth:`TeacherStage.run_once` handles one polled batch:

1. poll up to ``teacher.batch_size`` prompt records (prompts and feedback topics);
2. decode each one; malformed or over-long ones are dead-lettered (recoverable errors);
3. label the batch with the backend, retrying with exponential backoff. If the batch still
   fails, ask the backend for a trivial label (the first tokens of the shortest prompt):
   - it answers: the prompts are the problem; label them one by one and dead-letter the
     ones that keep failing;
   - it does not: the backend is down, not the prompts. Nothing is dead-lettered or
     committed; the stage holds the batch, pauses its partitions (polling on, so the
     consumer stays in its group) and retries after a wait that doubles up to
     ``OUTAGE_MAX_WAIT_S``, then carries on from step 4;
4. produce one ``LabeledExample`` per prompt to the labels topic (key = prompt id);
5. flush the sink: raises if any labeled example or dead letter was not acknowledged
   (fatal: the actor restarts and re-reads the uncommitted batch, nothing is lost);
6. only then commit the batch's input offsets.

Model work happens between polls, one batch at a time (seconds), far inside
``kafka.max_poll_interval_ms``, so the consumer never falls out of its group.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from online_distill.config import TeacherConfig
from online_distill.messages import LabeledExample, PromptMessage, PseudoTarget, Timings, encode
from online_distill.models.chat import NoChatTemplate, model_text, prompt_ids_of
from online_distill.streams import (
    DeadLetterWriter,
    MessageSink,
    MessageSource,
    Record,
    next_offsets,
    prompt_or_dead_letter,
)
from online_distill.teachers.protocol import LabelRequest, TeacherBackend
from online_distill.teachers.stats import TeacherStats

log = logging.getLogger(__name__)

OUTAGE_MAX_WAIT_S = 30.0
"""Longest wait between attempts while the teacher backend is down (every prompt failing)."""


class BackendDown(Exception):
    """Every prompt of a batch failed, alone as well as together: a backend outage."""


def label_request(cfg: TeacherConfig) -> LabelRequest:
    """The backend request the teacher config describes."""
    return LabelRequest(n=cfg.n_pseudo_targets, decoding=cfg.decoding,
                        include_greedy=cfg.include_greedy, temperature=cfg.temperature,
                        top_p=cfg.top_p, top_k_logprobs=cfg.top_k_logprobs,
                        max_new_tokens=cfg.max_new_tokens)


class TeacherStage:
    """Labels prompts from a source into a sink (see the module docstring for the order)."""

    def __init__(
        self,
        source: MessageSource,
        sink: MessageSink,
        backend: TeacherBackend,
        tokenizer: PreTrainedTokenizerBase,
        cfg: TeacherConfig,
        labels_topic: str,
        dead_letters: DeadLetterWriter,
        max_prompt_tokens: int,
        max_message_bytes: int = 1 << 20,
        flush_timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.source, self.sink, self.backend = source, sink, backend
        self.tokenizer, self.cfg = tokenizer, cfg
        self.labels_topic = labels_topic
        self.dead_letters = dead_letters
        self.max_prompt_tokens = max_prompt_tokens
        self.max_message_bytes = max_message_bytes
        # Flush waits for acks=all from the brokers; 30 s covers a leader election.
        self.flush_timeout_s = flush_timeout_s
        self.sleep = sleep
        self.request = label_request(cfg)
        self.stats = TeacherStats()
        self._outage_wait = 0.0
        self._held: tuple[list[Record], list[tuple[Record, PromptMessage, list[int]]]] | None
        self._held = None

    def run_once(self, poll_timeout_s: float = 1.0) -> int:
        """Handle one polled batch; returns the number of records polled."""
        if self._held is not None:
            return self._retry_held()
        # Step 1: poll.
        records = self.source.poll(max_records=self.cfg.batch_size, timeout_s=poll_timeout_s)
        if not records:
            return 0
        self.stats.polled += len(records)
        self.stats.by_topic.update(rec.topic for rec in records)
        # Step 2: decode; bad input goes to the dead-letter topic.
        good: list[tuple[Record, PromptMessage, list[int]]] = []
        for rec in records:
            prompt = prompt_or_dead_letter(rec, self.dead_letters, self.max_message_bytes)
            if prompt is None:
                continue
            try:
                ids = prompt_ids_of(self.tokenizer, prompt)
            except NoChatTemplate as exc:
                self.dead_letters.send(rec, str(exc), "no_chat_template")
                continue
            if len(ids) > self.max_prompt_tokens:
                self.dead_letters.send(
                    rec, f"prompt is {len(ids)} tokens, over the limit of "
                    f"{self.max_prompt_tokens} (learner.max_seq_len - teacher.max_new_tokens); "
                    "shorten the prompt or raise learner.max_seq_len", "prompt_too_long")
                continue
            good.append((rec, prompt, ids))
        # Steps 3-4: label and produce.
        if good:
            try:
                self._label_and_produce(good)
            except BackendDown as exc:
                self._hold(records, good, exc)
                return len(records)
        self._finish(records)
        return len(records)

    def _finish(self, records: list[Record]) -> None:
        """Steps 5-6 for a handled batch."""
        self.stats.dead_lettered = self.dead_letters.count
        # Step 5: every output acknowledged (raises SinkError otherwise: fatal).
        self.sink.flush(self.flush_timeout_s)
        # Step 6: commit.
        self.source.commit(next_offsets(records))
        self.stats.batches += 1

    # ------------------------------------------------------------------ backend outages
    def _answers(self, good: list[tuple[Record, PromptMessage, list[int]]]) -> bool:
        """Whether the backend labels a trivial prompt (the first tokens of the shortest
        one): if it does, the prompts are what fails, and they are dead-lettered."""
        ids = min((ids for _, _, ids in good), key=len)[:3]
        probe = LabelRequest(n=1, decoding="greedy", include_greedy=True, top_k_logprobs=1,
                             max_new_tokens=1)
        try:
            return len(self.backend.label([ids], probe)) == 1
        except Exception:  # noqa: BLE001 - any failure means the backend is not answering
            return False

    def _hold(self, records: list[Record],
              good: list[tuple[Record, PromptMessage, list[int]]], exc: BackendDown) -> None:
        self._held = (records, good)
        self.source.pause()
        self.stats.outages += 1
        self._wait(exc)

    def _retry_held(self) -> int:
        """Keep the consumer alive (its partitions are paused), then retry the held batch."""
        assert self._held is not None
        records, good = self._held
        self.source.poll(timeout_s=0.0)
        if not self._answers(good):
            self._wait(BackendDown("the backend still cannot label a trivial prompt"))
            return 0
        try:
            self._label_and_produce(good)
        except BackendDown as exc:
            self._wait(exc)
            return 0
        log.info("teacher: the backend answers again; labeled the held batch of %d",
                 len(good))
        self._held, self._outage_wait = None, 0.0
        self.source.resume()
        self._finish(records)
        return len(records)

    def _wait(self, exc: BackendDown) -> None:
        self._outage_wait = min(OUTAGE_MAX_WAIT_S,
                                max(self.cfg.retry_backoff_s, 0.5, 2 * self._outage_wait))
        self.stats.outage_seconds += self._outage_wait
        log.warning("teacher: the backend failed every prompt of a batch (%s); holding the "
                    "batch (nothing dead-lettered or committed), next try in %.1fs",
                    exc, self._outage_wait)
        self.sleep(self._outage_wait)

    # ------------------------------------------------------------------ labeling
    def _label_and_produce(self, good: list[tuple[Record, PromptMessage, list[int]]]) -> None:
        start = time.time()
        results: list[list[PseudoTarget] | Exception]
        try:
            results = list(self._label_with_retries([ids for _, _, ids in good],
                                                    self.cfg.max_retries,
                                                    [p for _, p, _ in good]))
        except Exception as exc:  # noqa: BLE001 - isolate the prompts that fail on their own
            # First: does the backend answer at all? (one cheap call, not one per prompt)
            if not self._answers(good):
                raise BackendDown(str(exc)) from None
            results = [self._label_one(ids, p) for _, p, ids in good]
        seconds = time.time() - start
        self.stats.label_seconds += seconds
        self.stats.batch_seconds.append(seconds)
        for (rec, prompt, ids), pts in zip(good, results, strict=True):
            if isinstance(pts, Exception):
                self.dead_letters.send(rec, f"teacher failed after {self.cfg.max_retries + 1} "
                                       f"attempts: {pts}", "teacher_error")
                continue
            example = LabeledExample(
                prompt_id=prompt.id, prompt_text=model_text(self.tokenizer, prompt),
                prompt_token_ids=tuple(ids), messages=prompt.messages,
                pseudo_targets=tuple(pts), teacher_id=self.backend.teacher_id,
                origin=prompt.origin, kind=prompt.kind,
                timings=Timings(label_seconds=seconds,
                                queue_seconds=max(0.0, start - prompt.created_at)),
                prompt_created_at=prompt.created_at,
            )
            self.sink.send(self.labels_topic, encode(example), key=prompt.id.encode())
            self.stats.labeled += 1
            self.stats.labeled_tokens += example.num_labeled_tokens
            self.stats.pseudo_targets += len(pts)
            self.stats.queue_seconds.append(example.timings.queue_seconds)
            self.stats.by_origin[prompt.origin] = self.stats.by_origin.get(prompt.origin, 0) + 1

    def _label_with_retries(self, prompt_ids: Sequence[Sequence[int]], retries: int,
                            prompts: Sequence[PromptMessage]) -> list[list[PseudoTarget]]:
        """The backend's answer, after up to ``retries`` retries with exponential backoff;
        raises the last error when every attempt failed. Conversations go to the backend
        as such too (an OpenAI-compatible teacher labels them on its chat route)."""
        convs = [[t.as_dict() for t in p.messages] if p.messages else None for p in prompts]
        extra: dict[str, Any] = {"conversations": convs} if any(convs) else {}
        for attempt in range(retries + 1):
            try:
                out = self.backend.label(prompt_ids, self.request, **extra)
                if len(out) != len(prompt_ids) or any(not pts for pts in out):
                    raise ValueError(f"backend returned {len(out)} results for "
                                     f"{len(prompt_ids)} prompts, or an empty one")
                return out
            except Exception as exc:  # noqa: BLE001 - any backend failure is retried
                if attempt == retries:
                    log.warning("teacher: batch of %d failed %d times: %s", len(prompt_ids),
                                attempt + 1, exc)
                    raise
                self.stats.retries += 1
                delay = self.cfg.retry_backoff_s * 2**attempt
                log.info("teacher: label attempt %d failed (%s); retrying in %.2fs",
                         attempt + 1, exc, delay)
                self.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _label_one(self, ids: Sequence[int], prompt: PromptMessage
                   ) -> list[PseudoTarget] | Exception:
        try:
            return self._label_with_retries([ids], 0, [prompt])[0]
        except Exception as exc:  # noqa: BLE001 - becomes this prompt's dead letter
            return exc
