"""Pydantic models of the subset of OpenAI's completions API that the student server speaks.

Request fields carry plain types only (no range constraints): pydantic rejects wrong types,
and :func:`online_distill.serving.validation.validate_request` checks values against the
server's limits so that every rejection explains what to change.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StreamOptions(BaseModel):
    """``stream_options``: with ``include_usage``, a last chunk carries the usage."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class CompletionRequest(BaseModel):
    """Body of ``POST /v1/completions``.

    ``presence_penalty``, ``frequency_penalty``, ``best_of``, ``logit_bias`` and ``suffix``
    are OpenAI fields this server accepts only at their neutral values; ``user`` is accepted
    and ignored. Any other unknown field is rejected.
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    prompt: str | list[str]
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    logprobs: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    echo: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    best_of: int | None = None
    logit_bias: dict[str, float] | None = None
    suffix: str | None = None
    user: str | None = None


class CompletionLogprobs(BaseModel):
    """Per token: its text, log-probability, top alternatives and text offset.

    The tokens are the generated ones, preceded by the prompt's with ``echo=true`` (then the
    first prompt token's log-probability and alternatives are null: nothing predicts it).
    """

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    """One completion of one prompt."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"]


class CompletionUsage(BaseModel):
    """Token counts of one request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    """Response of ``POST /v1/completions``, plus ``version``: the student version served."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: CompletionUsage
    version: int


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models``, plus ``version``: the student version served."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "online-distill"
    version: int


class ModelList(BaseModel):
    """Response of ``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)


class ErrorDetail(BaseModel):
    """The inner object of an OpenAI error response."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """OpenAI's error response: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail


# ---------------------------------------------------------------------- chat completions
class ChatMessage(BaseModel):
    """One turn of a conversation; ``content`` is a string (no content parts)."""

    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None


class ChatCompletionRequest(BaseModel):
    """Body of ``POST /v1/chat/completions``.

    ``logprobs`` (bool) asks for the chosen tokens' log-probabilities and ``top_logprobs``
    (0 to 20) for that many alternatives; ``max_completion_tokens`` is the newer name of
    ``max_tokens`` (send one; without either the server's cap applies). ``presence_penalty``,
    ``frequency_penalty`` and ``logit_bias`` are accepted at their neutral values only;
    ``user`` is accepted and ignored; any other unknown field is rejected.
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None


class TopLogprob(BaseModel):
    """One alternative token: its text, log-probability and UTF-8 bytes."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    """One generated token with its top alternatives."""

    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    """``choices[i].logprobs`` of a chat completion."""

    content: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    """The generated turn."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    """One generated turn of the conversation."""

    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    """Response of ``POST /v1/chat/completions``, plus ``version``: the student version."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: CompletionUsage
    version: int
