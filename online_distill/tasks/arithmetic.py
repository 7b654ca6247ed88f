"""The demo task: arithmetic problems with exact answers, written one per line.

A line is ``"<a><op><b>=<answer>\\n"`` where the answer is written **reversed** (least
significant digit first): ``"47+38=58\\n"`` means 47 + 38 = 85. Reversed answers let a small
causal model produce each digit after seeing the digits it depends on (carries flow
left to right in the output), which is what makes 3-digit addition and multiplication
learnable by a sub-1M-parameter model on two CPU cores (MACHINE.md calibration).

A *prompt* is everything up to and including ``"="``; the *completion* is the reversed
answer followed by a newline. Nothing else in online-distill knows about arithmetic: the
loop sees prompts and completions as text; only the demo's scorer and traffic use this file.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["add2", "add3", "sub2", "mul"]
KINDS: tuple[Kind, ...] = ("add2", "add3", "sub2", "mul")
"""Every kind of problem the demo knows. ``add2`` is the head of demo traffic."""

HEAD_KINDS: tuple[Kind, ...] = ("add2",)
TAIL_KINDS: tuple[Kind, ...] = ("add3", "sub2", "mul")

_OPERATORS: dict[Kind, str] = {"add2": "+", "add3": "+", "sub2": "-", "mul": "*"}
# Operand ranges (inclusive) per kind: (a_lo, a_hi, b_lo, b_hi).
_RANGES: dict[Kind, tuple[int, int, int, int]] = {
    "add2": (0, 99, 0, 99),
    "add3": (100, 999, 100, 999),
    "sub2": (0, 99, 0, 99),  # with a >= b so that answers are never negative
    "mul": (2, 9, 10, 99),
}
_LINE = re.compile(r"^(\d{1,3})([+\-*])(\d{1,3})=(\d{1,4})$")


@dataclass(frozen=True, slots=True)
class Problem:
    """One arithmetic problem of a known kind."""

    kind: Kind
    a: int
    b: int

    @property
    def prompt(self) -> str:
        """The prompt text, e.g. ``"47+38="``."""
        return f"{self.a}{_OPERATORS[self.kind]}{self.b}="

    @property
    def value(self) -> int:
        """The exact numeric answer."""
        if self.kind == "sub2":
            return self.a - self.b
        if self.kind == "mul":
            return self.a * self.b
        return self.a + self.b

    @property
    def answer(self) -> str:
        """The answer as the model writes it: digits reversed, e.g. 85 -> ``"58"``."""
        return str(self.value)[::-1]

    @property
    def line(self) -> str:
        """Prompt and answer with the terminating newline."""
        return f"{self.prompt}{self.answer}\n"


def sample_problem(kind: Kind, rng: random.Random) -> Problem:
    """Draw one problem of ``kind`` uniformly from its operand ranges."""
    a_lo, a_hi, b_lo, b_hi = _RANGES[kind]
    a, b = rng.randint(a_lo, a_hi), rng.randint(b_lo, b_hi)
    if kind == "sub2" and a < b:
        a, b = b, a
    return Problem(kind, a, b)


def parse_line(line: str) -> tuple[Problem, str] | None:
    """Parse ``"a<op>b=answer"`` (trailing newline optional) into (problem, answer text).

    Returns None when the line is not a well-formed problem of a known kind: operands out of
    the kind's range, leading zeros, a negative difference, or an answer with no digits.
    The answer is returned as written (it may be wrong; see :func:`is_correct`).
    """
    m = _LINE.match(line.rstrip("\n"))
    if m is None:
        return None
    a_txt, op, b_txt, answer = m.groups()
    if any(len(t) > 1 and t[0] == "0" for t in (a_txt, b_txt)):
        return None
    a, b = int(a_txt), int(b_txt)
    for kind in KINDS:
        a_lo, a_hi, b_lo, b_hi = _RANGES[kind]
        if _OPERATORS[kind] != op or not (a_lo <= a <= a_hi and b_lo <= b <= b_hi):
            continue
        if kind == "sub2" and a < b:
            return None
        return Problem(kind, a, b), answer
    return None


def parse_prompt(prompt: str) -> Problem | None:
    """Parse a bare prompt such as ``"47+38="`` into its problem, or None."""
    if not prompt.endswith("="):
        return None
    parsed = parse_line(prompt + "0")
    return parsed[0] if parsed else None


def is_correct(problem: Problem, completion: str) -> bool:
    """Exact match: the completion's first line equals the reversed answer."""
    return completion.split("\n", 1)[0].strip() == problem.answer


def exact_match(prompt: str, completion: str) -> bool:
    """Score a (prompt, completion) pair of the demo task; unparseable prompts score False."""
    problem = parse_prompt(prompt.rsplit("\n", 1)[-1])
    return problem is not None and is_correct(problem, completion)
