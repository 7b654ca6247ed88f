"""What the OOD loop reads of a prompt: text, or a conversation the scorer renders."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from online_distill.messages import PromptMessage, Turn
from online_distill.models.chat import encode_rendered, render_chat

from .tail import TailExample

ScoringInput = str | tuple[Turn, ...]
"""A text prompt, or a conversation (rendered with the student's chat template when scored:
the student is scored on what it reads)."""


def scoring_input(prompt: PromptMessage) -> ScoringInput:
    """The prompt as the energy scorer takes it."""
    return prompt.messages if prompt.messages else prompt.text


def asked_text(prompt: PromptMessage) -> str:
    """What a prompt asks, as one text: the text, or a conversation's last user turn (the
    few-shot examples the teacher sees, and the key of de-duplication)."""
    if not prompt.messages:
        return prompt.text
    users = [t.content for t in prompt.messages if t.role == "user"]
    return users[-1] if users else prompt.display_text


def as_scoring_input(text: str, parents: Sequence[TailExample]) -> ScoringInput:
    """A feedback prompt's text as it will be sent: a one-turn conversation when most of
    its parents were conversations."""
    if sum(e.chat for e in parents) * 2 > len(parents):
        return (Turn(role="user", content=text),)
    return text


def scoring_ids(tokenizer: PreTrainedTokenizerBase, item: ScoringInput) -> list[int]:
    """Token ids the student reads for a scoring input."""
    if isinstance(item, str):
        return list(tokenizer(item).input_ids)
    return encode_rendered(tokenizer, render_chat(tokenizer, item))
