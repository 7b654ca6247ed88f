"""``POST /v1/chat/completions``: a conversation in, the assistant's next turn out.

The conversation is checked turn by turn (so an error names ``messages[i].role``), rendered
with the student's chat template (ending with the assistant's turn opened) and decoded by
the same engine and batches as completions: a chat request becomes a
:class:`~online_distill.serving.jobs.Job` whose prompt is the rendered template, whose
rows also end at the tokenizer's end-of-sequence token (the template's end of turn, never
part of the content), and whose answer is the completion's, reshaped as OpenAI's
``chat.completion``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from transformers import PreTrainedTokenizerBase

from online_distill.messages import Turn
from online_distill.messages.conversation import ROLES
from online_distill.models.chat import NoChatTemplate, render_chat
from online_distill.serving.jobs import Job
from online_distill.serving.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    CompletionRequest,
)
from online_distill.serving.validation import (
    ApiError,
    ServingLimits,
    check_stream,
    error_from_pydantic,
    validate_request,
)


def _bad(param: str, code: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def check_messages(value: object, limits: ServingLimits) -> tuple[Turn, ...]:
    """The conversation as turns, or a 400 naming the first turn and field at fault."""
    if not isinstance(value, list) or not value:
        raise _bad("messages", "invalid_messages",
                   "messages must be a non-empty list of {\"role\", \"content\"} objects; send "
                   "at least one turn, e.g. [{\"role\": \"user\", \"content\": \"Hi\"}]")
    turns, chars = [], 0
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"messages[{i}]", "invalid_message",
                       f"messages[{i}] is a {type(item).__name__}; send an object with a role "
                       "and a string content")
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            raise _bad(f"messages[{i}].role", "invalid_role",
                       f"messages[{i}].role is {role!r}; send one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise _bad(f"messages[{i}].content", "invalid_content",
                       f"messages[{i}].content is {type(content).__name__}, not a string; "
                       "send the turn's text as a string (content parts are not supported)")
        turns.append(Turn(role=role, content=content))
        chars += len(content)
    if chars > limits.max_prompt_chars:
        raise _bad("messages", "prompt_too_long",
                   f"the messages' contents are {chars} characters, over this server's limit "
                   f"of {limits.max_prompt_chars}; shorten the conversation to at most "
                   f"{limits.max_prompt_chars} characters")
    return tuple(turns)


def parse_chat(data: Mapping[str, Any], limits: ServingLimits, served_model_name: str
               ) -> tuple[ChatCompletionRequest, tuple[Turn, ...], CompletionRequest]:
    """The chat request, its turns and the equivalent completion settings; an
    :class:`ApiError` for the first problem (404 for another model, else 400)."""
    turns = check_messages(data.get("messages"), limits)
    try:
        chat = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise error_from_pydantic(exc) from exc
    tokens_name = "max_completion_tokens" if chat.max_completion_tokens is not None \
        else "max_tokens"
    if (chat.max_tokens is not None and chat.max_completion_tokens is not None
            and chat.max_tokens != chat.max_completion_tokens):
        raise _bad("max_completion_tokens", "conflicting_max_tokens",
                   f"max_tokens={chat.max_tokens} and max_completion_tokens="
                   f"{chat.max_completion_tokens} disagree; send only one of them")
    max_tokens = chat.max_completion_tokens if chat.max_completion_tokens is not None \
        else chat.max_tokens if chat.max_tokens is not None else limits.max_tokens_cap
    if not 1 <= max_tokens <= limits.max_tokens_cap:
        raise _bad(tokens_name, "max_tokens_out_of_range",
                   f"{tokens_name}={max_tokens} is outside this server's range "
                   f"1..{limits.max_tokens_cap}; ask for 1 to {limits.max_tokens_cap} tokens")
    if chat.top_logprobs is not None:
        if not chat.logprobs:
            raise _bad("top_logprobs", "top_logprobs_without_logprobs",
                       "top_logprobs needs logprobs=true; send logprobs=true or leave "
                       "top_logprobs out")
        if not 0 <= chat.top_logprobs <= limits.max_logprobs:
            raise _bad("top_logprobs", "top_logprobs_out_of_range",
                       f"top_logprobs={chat.top_logprobs} is outside this server's range "
                       f"0..{limits.max_logprobs}; ask for 0 to {limits.max_logprobs} "
                       "alternatives")
    options = chat.stream_options
    check_stream(chat.stream, None if options is None else options.include_usage,
                 chat.logprobs)
    # The rest (model name, n, temperature, top_p, stop, neutral-only fields) is checked as
    # for completions: the fields have the same names and ranges.
    req = CompletionRequest(
        model=chat.model, prompt="", max_tokens=max_tokens, temperature=chat.temperature,
        top_p=chat.top_p, n=chat.n, logprobs=(chat.top_logprobs or 0) if chat.logprobs else None,
        stop=chat.stop, seed=chat.seed, stream=chat.stream, stream_options=chat.stream_options,
        presence_penalty=chat.presence_penalty, frequency_penalty=chat.frequency_penalty,
        logit_bias=chat.logit_bias, user=chat.user)
    validate_request(req, limits, served_model_name)
    return chat, turns, req


def render(tokenizer: PreTrainedTokenizerBase, turns: tuple[Turn, ...]) -> str:
    """The conversation as the student reads it, or a 400 when it cannot be rendered."""
    try:
        return render_chat(tokenizer, turns)
    except NoChatTemplate as exc:
        raise _bad("messages", "no_chat_template",
                   "the served student's tokenizer has no chat template, so it cannot read a "
                   "conversation; send a text prompt to /v1/completions instead") from exc
    except Exception as exc:  # noqa: BLE001 - a template may refuse a conversation (jinja)
        raise _bad("messages", "chat_template_error",
                   f"the student's chat template refused this conversation ({exc}); change "
                   "the turns as the message says") from exc


def chat_job(req: CompletionRequest, rendered: str) -> Job:
    """The engine's job for a checked chat request and its rendered conversation."""
    return Job(req, [rendered], chat=True)


def chat_completion(completion: dict[str, Any]) -> dict[str, Any]:
    """The engine's completion of a chat job, reshaped as OpenAI's ``chat.completion``."""
    choices = []
    for choice in completion["choices"]:
        lp = choice.get("logprobs")
        choices.append({"index": choice["index"],
                        "message": {"role": "assistant", "content": choice["text"]},
                        "logprobs": None if lp is None else {"content": token_logprobs(lp)},
                        "finish_reason": choice["finish_reason"]})
    body = {**completion, "id": "chatcmpl-" + completion["id"].removeprefix("cmpl-"),
            "object": "chat.completion", "choices": choices}
    return ChatCompletion.model_validate(body).model_dump()


def token_logprobs(lp: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Completion logprobs (parallel lists) as chat's list of per-token objects.

    ``bytes`` is the UTF-8 of the token's text as decoded alone (a byte-level token that
    ends inside a character decodes to U+FFFD, so its bytes are those of U+FFFD).
    """
    out = []
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"],
                                   strict=True):
        alternatives = [{"token": t, "logprob": v, "bytes": list(t.encode())}
                        for t, v in (top or {}).items()]
        out.append({"token": token, "logprob": logprob, "bytes": list(token.encode()),
                    "top_logprobs": alternatives})
    return out
