"""What the OOD loop reads of a prompt: text, or a conversation the scorer renders."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from online_distill.messages import LabeledExample, PromptMessage, Turn
from online_distill.models.chat import encode_rendered, render_chat
from online_distill.models.scores import Answer

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


def label_answer(example: LabeledExample) -> Answer:
    """What ``ood.score=answer_gap`` scores of a label: its prompt's ids, the teacher's
    answer (the greedy pseudo-target when there is one, else the first), and the teacher's
    log-probability of each answer token."""
    targets = example.pseudo_targets
    best = next((t for t in targets if t.decoding == "greedy"), targets[0])
    return (example.prompt_token_ids, best.token_ids, best.sampled_logprobs)


def labeled_prompt(example: LabeledExample) -> PromptMessage:
    """The prompt a label answers, as the tail set and the de-duplication keep it."""
    return PromptMessage(text="" if example.messages else example.prompt_text,
                         messages=example.messages, origin=example.origin,
                         id=example.prompt_id, kind=example.kind,
                         created_at=example.prompt_created_at or example.created_at)
