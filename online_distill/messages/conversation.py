"""Conversations: OpenAI's chat shape (``{"role": ..., "content": ...}`` turns) as messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ._checks import check_choice, check_seq, check_text

Role = Literal["system", "user", "assistant"]
"""Who speaks a turn of a conversation (OpenAI's chat roles)."""
ROLES: tuple[str, ...] = get_args(Role)


@dataclass(frozen=True, slots=True, kw_only=True)
class Turn:
    """One turn of a conversation: ``{"role": ..., "content": ...}`` in OpenAI's shape."""

    role: Role
    content: str

    def __post_init__(self) -> None:
        check_choice("role", self.role, ROLES)
        check_text("content", self.content)

    def as_dict(self) -> dict[str, str]:
        """The turn as ``apply_chat_template`` and the chat APIs take it."""
        return {"role": self.role, "content": self.content}


def check_turns(name: str, value: object) -> tuple[Turn, ...]:
    """A conversation as a tuple of :class:`Turn`; accepts Turns or ``{role, content}``
    dicts, and raises ValueError naming the turn and field at fault."""
    items = check_seq(name, value)
    turns = []
    for i, item in enumerate(items):
        if isinstance(item, Turn):
            turns.append(item)
            continue
        if not isinstance(item, dict):
            raise ValueError(f"{name}[{i}] must be an object with role and content, "
                             f"got {type(item).__name__}")
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            raise ValueError(f"{name}[{i}].role must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"{name}[{i}].content must be a string, got "
                             f"{type(content).__name__}")
        turns.append(Turn(role=role, content=content))
    return tuple(turns)


def conversation_text(messages: tuple[Turn, ...]) -> str:
    """A conversation as plain text for people and text heuristics ("role: content" lines);
    the models see it through the chat template instead."""
    return "\n".join(f"{t.role}: {t.content}" for t in messages)
