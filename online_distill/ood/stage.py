"""The OOD-feedback stage (GOLD): score traffic under the student, keep the tails, and ask
the teacher for new prompts like them.

One call to :meth:`OODStage.run_once`:

1. poll prompt records (its own consumer group on the prompts topic: it samples the stream
   beside the teacher, it takes nothing away from it);
2. decode each one; malformed ones are dead-lettered (recoverable errors);
3. score the traffic prompts' energies under the current student in one batch, add them to
   the sliding window, and offer those above the window's ``tail_quantile`` (once it holds
   ``min_window`` values) to the tail set; feedback prompts met here are only remembered
   for de-duplication (they never count toward the window, the tails or the budget);
4. flush the sink (dead letters acknowledged), then commit the polled offsets: nothing is
   produced from these records, so once they are scored they are done;
5. every ``feedback_interval_s`` (by the injected clock), with tails present and budget
   allowance left, run a feedback round (:meth:`OODStage.feedback_round`): few-shot texts
   from tail picks -> generator -> parse (``invalid``) -> near-duplicate check against recent
   traffic and earlier feedback (``duplicate``) -> energy and noise rejection (``noise``)
   -> share cap (``over_budget``) -> produce ``PromptMessage(origin="feedback")`` -> flush.

With ``ood.score=answer_gap`` the stage reads the labels topic instead: each traffic label is
scored by the student's gap to the teacher on the teacher's answer (what the student has
not learned and the teacher knows); a tail must also lag by more than ``min_answer_gap``,
a round runs only when such tails arrived since the last one, and generated prompts skip
the noise check (they have no answer to score yet: the format's parser and the share cap
bound them). Labels that do not decode are skipped and counted (``unreadable``): the
learner dead-letters them. ``sample_share`` < 1 scores a random sample of the traffic.

Errors: undecodable records are dead-lettered; a generator failure (a remote teacher timing
out) skips the round and is counted in ``failed_rounds`` (nothing is lost: no input offset
depends on it). When scoring a batch fails, its prompts are scored one by one and the ones
that fail alone are dead-lettered (``scorer_error``: a prompt longer than the student's
context, say), like the teacher's poison prompts; when every one of them fails and the
scorer cannot score even a trivial prompt (the first characters of the shortest one), the
scorer is broken, not the prompts: that, like a failed flush, is fatal (raised: the actor
restarts and re-reads the uncommitted batch).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from online_distill.config import OODConfig
from online_distill.critics.dedup import NearDuplicateIndex
from online_distill.messages import (
    LabeledExample,
    MessageDecodeError,
    PromptMessage,
    Turn,
    decode,
    encode,
)
from online_distill.models.chat import NoChatTemplate
from online_distill.ood.budget import FeedbackBudget
from online_distill.ood.feedback import FeedbackFormat
from online_distill.ood.inputs import (
    ScoringInput,
    as_scoring_input,
    asked_text,
    labeled_prompt,
    scoring_input,
)
from online_distill.ood.stats import OODStats
from online_distill.ood.tail import NoiseFilter, TailExample, TailSet
from online_distill.ood.window import EnergyWindow
from online_distill.streams import (
    DeadLetterWriter,
    MessageSink,
    MessageSource,
    Record,
    next_offsets,
    prompt_or_dead_letter,
)

log = logging.getLogger(__name__)

FeedbackGenerator = Callable[[list[str], int], list[str]]
"""(few-shot texts, n) -> n continuations per text, flattened text by text."""
Item = ScoringInput | LabeledExample
"""What the scorer takes of one record."""
EnergyScorer = Callable[[list[Any]], list[float]]
"""Prompt texts (``ScoringInput``) -> their energies under the current student, same order;
with ``ood.score=answer_gap``: labeled examples -> their answer gaps."""

class OODStage:
    """Picks tail prompts from a source and writes feedback prompts to a sink (module doc)."""

    def __init__(
        self,
        source: MessageSource,
        sink: MessageSink,
        generator: FeedbackGenerator,
        scorer: EnergyScorer,
        fmt: FeedbackFormat,
        cfg: OODConfig,
        feedback_topic: str,
        dead_letters: DeadLetterWriter,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
        max_message_bytes: int = 1 << 20,
        flush_timeout_s: float = 30.0,
        dedup: NearDuplicateIndex | None = None,
    ) -> None:
        self.source, self.sink = source, sink
        self.generator, self.scorer, self.fmt, self.cfg = generator, scorer, fmt, cfg
        self.feedback_topic = feedback_topic
        self.dead_letters = dead_letters
        self.clock = clock
        self.rng = random.Random(seed)
        self.max_message_bytes = max_message_bytes
        # Flush waits for acks=all from the brokers; 30 s covers a leader election.
        self.flush_timeout_s = flush_timeout_s
        self.window = EnergyWindow(cfg.window_size)
        self.tails = TailSet(cfg.tail_capacity)
        self.noise = NoiseFilter(cfg.noise_rejection_zscore)
        self.budget = FeedbackBudget(cfg.feedback_share_cap)
        self.dedup = dedup if dedup is not None else NearDuplicateIndex()
        self.min_window = min(cfg.min_window, cfg.window_size)
        self.reads_labels = cfg.score == "answer_gap"
        self.fresh_tails = 0  # answer_gap: tails offered since the last round
        self.next_round_at = clock()
        self.stats = OODStats()

    # ------------------------------------------------------------------ the loop
    def run_once(self, poll_timeout_s: float = 0.5) -> int:
        """Score one polled batch, commit it, maybe run a feedback round; returns the number
        of records polled."""
        # Step 1: poll (own group: the teacher's reading is untouched).
        records = self.source.poll(timeout_s=poll_timeout_s)
        if records:
            self.stats.polled += len(records)
            for rec in records:
                self.stats.by_topic[rec.topic] = self.stats.by_topic.get(rec.topic, 0) + 1
            # Step 2: decode; bad input goes to the dead-letter topic.
            traffic: list[tuple[Record, PromptMessage, Item]] = []
            for rec in records:
                read = self._read(rec)
                if read is None:
                    continue
                prompt, item = read
                if prompt.origin == "feedback":
                    self.stats.ignored_feedback += 1
                else:  # traffic and served prompts: live traffic, sampled or not
                    self.budget.saw_traffic(1)
                    if (self.cfg.sample_share >= 1.0
                            or self.rng.random() < self.cfg.sample_share):
                        traffic.append((rec, prompt, item))
                    else:
                        self.stats.unsampled += 1
                self.dedup.add(asked_text(prompt))
            # Step 3: score the traffic, feed the window and the tail set.
            if traffic:
                self._score_traffic(traffic)
            self.stats.dead_lettered = self.dead_letters.count
            # Step 4: dead letters acknowledged (raises: fatal), then commit.
            self.sink.flush(self.flush_timeout_s)
            self.source.commit(next_offsets(records))
        # Step 5: a feedback round when it is due, with tails and budget.
        fresh = not self.reads_labels or self.fresh_tails > 0
        if (self.clock() >= self.next_round_at and len(self.tails) and fresh
                and self.budget.allowance()):
            self.fresh_tails = 0
            self.next_round_at = self.clock() + self.cfg.feedback_interval_s
            self.feedback_round()
        return len(records)

    def _read(self, rec: Record) -> tuple[PromptMessage, Item] | None:
        """The prompt of a record and what the scorer takes of it; None when it does not
        decode (a prompt is dead-lettered; a label is counted, the learner dead-letters it)."""
        if not self.reads_labels:
            prompt = prompt_or_dead_letter(rec, self.dead_letters, self.max_message_bytes)
            return None if prompt is None else (prompt, scoring_input(prompt))
        try:
            example = decode(rec.value, LabeledExample, self.max_message_bytes)
            return labeled_prompt(example), example
        except (MessageDecodeError, ValueError):
            self.stats.unreadable += 1
            return None

    def _score_traffic(self, traffic: list[tuple[Record, PromptMessage, Item]]) -> None:
        energies = self._score_isolating(traffic)
        scored = [(p, e) for (_, p, _), e in zip(traffic, energies, strict=True)
                  if e is not None and math.isfinite(e)]
        self.stats.unscored += len(traffic) - len(scored)
        self.stats.scored += len(scored)
        self.window.add(e for _, e in scored)
        if len(self.window) < self.min_window:
            return
        threshold = self.window.quantile(self.cfg.tail_quantile)
        self.stats.threshold = threshold
        self.stats.judged += len(scored)
        floor = self.cfg.min_answer_gap if self.reads_labels else -math.inf
        for prompt, energy in scored:
            if energy > threshold and energy > floor:
                self.stats.tail_hits += 1
                self.fresh_tails += 1
                self.tails.offer(TailExample(asked_text(prompt), energy, prompt.kind,
                                             prompt.id, chat=prompt.is_chat))
        self.stats.tail_size = len(self.tails)
        self.stats.tail_by_kind = dict(self.tails.kinds())

    def _score_isolating(self, traffic: list[tuple[Record, PromptMessage, Item]]
                         ) -> list[float | None]:
        """Energies of the batch; if scoring it fails, of each prompt alone, None (after
        dead-lettering it) for the ones that fail alone. Raises when the scorer is broken."""
        try:
            return list(self._score([item for _, _, item in traffic]))
        except Exception as batch_error:  # noqa: BLE001 - isolate the prompts that fail
            out: list[float | None] = []
            failures: list[tuple[Record, Exception]] = []
            for rec, _prompt, item in traffic:
                try:
                    out += self._score([item])
                except Exception as exc:  # noqa: BLE001 - this prompt's dead letter
                    out.append(None)
                    failures.append((rec, exc))
            if len(failures) == len(traffic) and not self._scorer_answers(traffic):
                raise batch_error
            log.warning("ood: scoring a batch of %d failed (%s); %d prompts fail alone",
                        len(traffic), batch_error, len(failures))
            for rec, error in failures:
                if isinstance(error, NoChatTemplate):
                    self.dead_letters.send(rec, str(error), "no_chat_template")
                    continue
                self.dead_letters.send(rec, f"the student could not score this prompt: "
                                       f"{type(error).__name__}: {error}", "scorer_error")
            return out

    def _scorer_answers(self, traffic: list[tuple[Record, PromptMessage, Item]]) -> bool:
        """Whether the scorer scores a trivial prompt (the first characters of the shortest
        one): if it does, the prompts are what fails, and they are dead-lettered. A label
        scorer cannot be probed so: its failing on every label is fatal."""
        if self.reads_labels:
            return False
        text = min((p.display_text for _, p, _ in traffic), key=len)[:8] or "1"
        try:
            return len(self._score([text])) == 1
        except Exception:  # noqa: BLE001 - any failure means the scorer itself is broken
            return False

    def _score(self, texts: Sequence[Item]) -> list[float]:
        energies = [float(e) for e in self.scorer(list(texts))]
        if len(energies) != len(texts):
            raise ValueError(f"scorer returned {len(energies)} energies for {len(texts)} texts")
        return energies

    # ------------------------------------------------------------------ feedback
    def feedback_round(self) -> int:
        """One round of tail-guided generation; returns the feedback prompts produced."""
        allowance = self.budget.allowance()
        shots: list[list[TailExample]] = []
        texts: list[str] = []
        for _ in range(self.cfg.feedback_per_round):
            picked = self.tails.pick(self.cfg.few_shot_examples, self.rng)
            text = self.fmt.few_shot([e.text for e in picked])
            if text:
                shots.append(picked)
                texts.append(text)
        if not texts or allowance <= 0:
            return 0
        n = self.cfg.generations_per_prompt
        try:
            continuations = self.generator(texts, n)
            if len(continuations) != n * len(texts):
                raise ValueError(f"generator returned {len(continuations)} continuations "
                                 f"for {len(texts)} texts x n={n}")
        except Exception as exc:  # noqa: BLE001 - a failed round is skipped and counted
            self.stats.failed_rounds += 1
            log.warning("ood: feedback round skipped, the generator failed: %s", exc)
            return 0
        self.stats.rounds += 1
        self.stats.generated += len(continuations)
        candidates = self._parse_and_dedup(continuations, shots, n)
        inputs = [as_scoring_input(text, parents) for text, _, parents in candidates]
        # answer_gap: a new prompt has no answer to score yet; no noise check (see module).
        energies = (self._score(inputs) if inputs and not self.reads_labels
                    else [math.nan] * len(inputs))
        kept: list[PromptMessage] = []
        for (text, kind, parents), item, energy in zip(candidates, inputs, energies,
                                                       strict=True):
            # Tails that were conversations inspire conversations: the student meets the
            # new prompt through its chat template, as it meets the traffic.
            chat = not isinstance(item, str)
            parent_scores = [e.energy for e in parents]
            if not self.reads_labels and (not math.isfinite(energy) or not self.noise.keep(
                    energy, self.window, parent_scores)):
                self.stats.drop("noise")
            elif len(kept) >= allowance:
                self.stats.drop("over_budget")
            else:
                kept.append(PromptMessage(
                    text="" if chat else text,
                    messages=(Turn(role="user", content=text),) if chat else (),
                    origin="feedback", kind=kind,
                    parent_ids=tuple(e.id for e in parents if e.id),
                    parent_energies=tuple(e.energy for e in parents if e.id),
                    energy=energy if math.isfinite(energy) else None))
        for msg in kept:
            self.sink.send(self.feedback_topic, encode(msg), key=msg.id.encode())
            self.stats.kept_by_kind[msg.kind] = self.stats.kept_by_kind.get(msg.kind, 0) + 1
        self.sink.flush(self.flush_timeout_s)
        self.budget.sent_feedback(len(kept))
        self.stats.kept += len(kept)
        return len(kept)

    def _parse_and_dedup(
        self, continuations: Sequence[str], shots: list[list[TailExample]], n: int
    ) -> list[tuple[str, str, list[TailExample]]]:
        """(text, kind, parents) of the continuations that parse and are new."""
        out: list[tuple[str, str, list[TailExample]]] = []
        for i, continuation in enumerate(continuations):
            parents = shots[i // n]
            parsed = self.fmt.parse(continuation)
            if parsed is None:
                self.stats.drop("invalid")
                continue
            text, kind = parsed
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate from a remote server's text
                self.stats.drop("invalid")
                continue
            if not self.dedup.add(text):
                self.stats.drop("duplicate")
                continue
            if not kind:  # a format without a validator: inherit the parents' common kind
                parent_kinds = {e.kind for e in parents}
                kind = parent_kinds.pop() if len(parent_kinds) == 1 else ""
            out.append((text, kind, parents))
        return out
