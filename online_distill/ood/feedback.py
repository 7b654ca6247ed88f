"""How tail prompts become a few-shot text for the teacher, and how its continuation becomes
a new prompt (GOLD's generation prompt, written for a base LM that continues documents)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from online_distill.tasks.arithmetic import parse_line, parse_prompt

if TYPE_CHECKING:
    from online_distill.config import Config


@runtime_checkable
class FeedbackFormat(Protocol):
    """Renders tail prompts as a text to continue, and reads a new prompt off a continuation."""

    def few_shot(self, examples: Sequence[str]) -> str:
        """The text the teacher continues, made from tail prompt texts; "" when none fits."""
        ...

    def parse(self, continuation: str) -> tuple[str, str] | None:
        """(new prompt text, its kind or "") from the teacher's continuation, or None."""
        ...


class ArithmeticFeedback:
    """The demo task: each example as a full line with its correct answer (the task can
    compute it), one per line; the teacher writes the next line, usually of the same kind.

    A continuation is valid when its first line is a well-formed problem (``parse_line``);
    its answer may be wrong, only the problem becomes a prompt (the teacher labels it).
    """

    def few_shot(self, examples: Sequence[str]) -> str:
        problems = [parse_prompt(text) for text in examples]
        return "".join(p.line for p in problems if p is not None)

    def parse(self, continuation: str) -> tuple[str, str] | None:
        parsed = parse_line(continuation.split("\n", 1)[0])
        if parsed is None:
            return None
        problem = parsed[0]
        return problem.prompt, problem.kind


class LineFeedback:
    """Generic tasks: one prompt per line (inner line breaks become spaces); the new prompt
    is the continuation's first non-empty line, stripped, ``min_chars``..``max_chars`` long.
    There is no validator, so the kind is "" (the stage falls back to the parents' kind)."""

    def __init__(self, min_chars: int = 1, max_chars: int = 2000) -> None:
        if not 1 <= min_chars <= max_chars:
            raise ValueError(f"need 1 <= min_chars <= max_chars, got {min_chars}, {max_chars}")
        self.min_chars, self.max_chars = min_chars, max_chars

    def few_shot(self, examples: Sequence[str]) -> str:
        lines = [" ".join(text.split()) for text in examples]
        return "".join(f"{line}\n" for line in lines if line)

    def parse(self, continuation: str) -> tuple[str, str] | None:
        for line in continuation.split("\n"):
            text = line.strip()
            if text:
                return (text, "") if self.min_chars <= len(text) <= self.max_chars else None
        return None


def feedback_format(cfg: Config) -> FeedbackFormat:
    """ArithmeticFeedback when the demo task runs (``demo.enabled``), else LineFeedback."""
    return ArithmeticFeedback() if cfg.demo.enabled else LineFeedback()
