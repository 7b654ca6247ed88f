"""What the learner stage takes in: a record becomes a trainable example, or a reason not to.

Two kinds of "no":
- the record is bad (it does not decode, or the student cannot take it: token ids outside
  its vocabulary, tokens without a top-k): it goes to the dead-letter topic;
- the example is good but not for training now: held out for the gate's probe, dropped by
  the critics, empty, or a prompt id already trained (at-least-once delivery).
Either way the record is *done* for the offset tracker: its offset may be committed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

import numpy as np

from online_distill.messages import LabeledExample
from online_distill.streams import DeadLetterWriter, Record, decode_or_dead_letter

DropReason = Literal["held_out", "critic_dropped", "empty", "duplicates", "stale", "overrun"]
"""Why a good example is not trained (each is a counter of the stage's stats); ``stale`` and
``overrun`` are the freshness policy's skips (:class:`FreshnessPolicy`)."""

T = TypeVar("T")

Critic = Callable[[LabeledExample], LabeledExample | None]
"""The critic chain's filter: the example with its passing pseudo-targets, or None."""


def untrainable(ex: LabeledExample, vocab: int) -> str | None:
    """Why the student (``vocab`` token ids) cannot take ``ex``, or None.

    A token id outside its vocabulary (labels made with another tokenizer) would fail the
    forward; tokens without a top-k (k = 0) leave nothing to distil (the loss needs k >= 1).
    """
    fields: list[tuple[str, np.ndarray]] = [
        ("prompt_token_ids", ex.prompt_token_ids_array(None, copy=False))]
    for i, pt in enumerate(ex.pseudo_targets):
        if pt.num_tokens and not pt.k:
            return (f"pseudo_targets[{i}] has {pt.num_tokens} tokens but no top-k "
                    "log-probabilities (k = 0); label with teacher.top_k_logprobs >= 1")
        fields += [(f"pseudo_targets[{i}].token_ids", pt.token_ids_array(None, copy=False)),
                   (f"pseudo_targets[{i}].topk_ids", pt.topk_ids_array(None, copy=False))]
    for name, ids in fields:  # vectorised: the arrays view the record's bytes
        top = int(ids.max()) if ids.size else -1
        if top >= vocab:
            return (f"{name} holds token id {top}, outside the student's vocabulary of "
                    f"{vocab}; the teacher must label with the student's tokenizer")
    return None


class ExampleFilter:
    """Held out, critics, empty, duplicate: in that order, the first that applies wins.

    ``held_out``: the gate's rule on prompt ids (passed in, so the learner does not import
    the gate); ``seen``: whether a prompt id was trained or is waiting already.
    """

    def __init__(self, held_out: Callable[[str], bool], seen: Callable[[str], bool],
                 critic: Critic | None = None) -> None:
        self.held_out, self.seen, self.critic = held_out, seen, critic

    def __call__(self, ex: LabeledExample) -> tuple[LabeledExample | None, DropReason | None]:
        """``(example to train, None)`` or ``(None, why not)``; the critics may return the
        example with fewer pseudo-targets."""
        if self.held_out(ex.prompt_id):
            return None, "held_out"
        if self.critic is not None and (kept := self.critic(ex)) is None:
            return None, "critic_dropped"  # counted by reason in the critics' own stats
        ex = kept if self.critic is not None and kept is not None else ex
        if ex.num_labeled_tokens == 0:
            return None, "empty"
        if self.seen(ex.prompt_id):
            return None, "duplicates"
        return ex, None


class Intake:
    """Decode a record, dead-letter it if bad, filter the example: one call per record."""

    def __init__(self, dead_letters: DeadLetterWriter, vocab: int, max_message_bytes: int,
                 keep: ExampleFilter) -> None:
        self.dead_letters, self.vocab = dead_letters, vocab
        self.max_message_bytes, self.keep = max_message_bytes, keep

    def __call__(self, rec: Record) -> tuple[LabeledExample | None, DropReason | None]:
        """``(example, None)`` to train; ``(None, reason)`` for a good example not trained;
        ``(None, None)`` for a record sent to the dead-letter topic."""
        ex = decode_or_dead_letter(rec, LabeledExample, self.dead_letters,
                                   self.max_message_bytes)
        if ex is None:
            return None, None
        if (why := untrainable(ex, self.vocab)) is not None:
            self.dead_letters.send(rec, why, "untrainable")
            return None, None
        return self.keep(ex)


class FreshnessPolicy:
    """Which waiting examples a learner that cannot keep up skips (``learner.max_lag_s``).

    An example is ``stale`` once it was labeled more than ``max_lag_s`` ago (the learner's
    own backlog: a teacher that lags makes every prompt old, and skipping its labels would
    starve training without making the student fresher); beyond ``capacity`` waiting
    examples, the oldest are ``overrun``. Off (``max_lag_s`` 0), nothing is skipped and the
    learner reads only as much as it can hold."""

    def __init__(self, max_lag_s: float, capacity: int,
                 wall_clock: Callable[[], float]) -> None:
        self.max_lag_s, self.capacity, self.wall_clock = max_lag_s, capacity, wall_clock

    @property
    def enabled(self) -> bool:
        return self.max_lag_s > 0

    def split(self, waiting: Sequence[T]) -> tuple[list[T], list[tuple[T, DropReason]]]:
        """``(kept, skipped with the reason)`` of ``waiting`` items, oldest first, each a
        pair whose second element is a :class:`LabeledExample`."""
        if not self.enabled:
            return list(waiting), []
        now = self.wall_clock()
        kept: list[T] = []
        skipped: list[tuple[T, DropReason]] = []
        for item in waiting:
            ex: LabeledExample = item[1]  # type: ignore[index]
            if now - ex.created_at > self.max_lag_s:
                skipped.append((item, "stale"))
            else:
                kept.append(item)
        if len(kept) > self.capacity:
            cut = len(kept) - self.capacity
            skipped += [(item, "overrun") for item in kept[:cut]]
            kept = kept[cut:]
        return kept, skipped
