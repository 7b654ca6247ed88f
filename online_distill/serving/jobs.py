"""What the engine decodes for one request (a :class:`Job`) and what a stream hears of it.

A job is one client's request: its checked settings, its prompts (texts, or chat
conversations already rendered with the template), and, when the client streams, a
listener the engine calls after every decode step with the job's :class:`Progress`, and a
cancel flag the client's side sets when it goes away (its rows stop at the next step).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from online_distill.serving.schemas import CompletionRequest


@dataclass(frozen=True, slots=True)
class RowProgress:
    """One choice so far: its text (cut before a stop string once one appeared)."""

    index: int
    text: str
    finish: str | None  # "stop", "length", "cancelled" or None while decoding
    generated: int  # tokens produced, EOS included (the usage count)


@dataclass(frozen=True, slots=True)
class Progress:
    """A job's choices after one decode step, and the version decoding them."""

    version: int
    prompt_tokens: int
    rows: tuple[RowProgress, ...]

    @property
    def done(self) -> bool:
        return all(row.finish is not None for row in self.rows)


Listener = Callable[[Progress], None]


@dataclass(eq=False)
class Job:
    """One request for the engine (see the module docstring).

    ``chat``: the prompts are rendered chat templates, encoded without added special
    tokens, and the tokenizer's end-of-sequence token (the template's end of turn) ends a
    row too. ``listener`` is called from the decoding thread: it must not block.
    """

    req: CompletionRequest
    prompts: list[str]
    chat: bool = False
    listener: Listener | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


def as_job(item: Job | tuple[CompletionRequest, Sequence[str]]) -> Job:
    """A job from a job or a plain ``(request, prompts)`` pair."""
    if isinstance(item, Job):
        return item
    req, prompts = item
    return Job(req, list(prompts))
