"""Conversations as the models see them: rendered with the tokenizer's chat template."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from transformers import PreTrainedTokenizerBase

from online_distill.messages import PromptMessage, Turn


class NoChatTemplate(ValueError):
    """A conversation for a tokenizer that has no chat template."""


def has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when the tokenizer can render conversations."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(tokenizer: PreTrainedTokenizerBase,
                messages: Sequence[Turn | Mapping[str, str]]) -> str:
    """The conversation rendered with the chat template, ending with the generation prompt
    (the assistant's turn opened), as text; raises :class:`NoChatTemplate` when the
    tokenizer has none."""
    if not has_chat_template(tokenizer):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise NoChatTemplate(
            f"the tokenizer {name} has no chat template, so it cannot render a conversation; "
            "send text prompts, or use a model whose tokenizer_config.json (or "
            "chat_template.jinja) carries one")
    turns = [m.as_dict() if isinstance(m, Turn) else {"role": m["role"],
                                                      "content": m["content"]}
             for m in messages]
    text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    assert isinstance(text, str)
    return text


def model_text(tokenizer: PreTrainedTokenizerBase, prompt: PromptMessage) -> str:
    """What a model reads for ``prompt``: its text, or its conversation rendered."""
    return render_chat(tokenizer, prompt.messages) if prompt.messages else prompt.text


def encode_rendered(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a prompt text as :func:`model_text` gives it; a rendered template
    already holds its special tokens, so none are added."""
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def prompt_ids_of(tokenizer: PreTrainedTokenizerBase, prompt: PromptMessage) -> list[int]:
    """The token ids a model reads for ``prompt``: a text prompt tokenized as ever, a
    conversation rendered with the chat template (its special tokens are in the text)."""
    if prompt.messages:
        return encode_rendered(tokenizer, render_chat(tokenizer, prompt.messages))
    return list(tokenizer(prompt.text).input_ids)
