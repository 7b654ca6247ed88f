"""OpenAI-compatible completions and chat completions over a student model, streamed or not:
schemas, request checks, the engine, the chat route and the server-sent events.

Plain logic only (no Ray): the Ray Serve deployment wraps these pieces.
"""

from online_distill.serving.engine import CompletionEngine, sample_token
from online_distill.serving.jobs import Job, Progress, RowProgress
from online_distill.serving.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionUsage,
    ErrorBody,
    ErrorDetail,
    ModelCard,
    ModelList,
    StreamOptions,
)
from online_distill.serving.validation import (
    ApiError,
    ServingLimits,
    check_body_size,
    error_from_pydantic,
    stop_strings,
    validate_request,
)

__all__ = [
    "ApiError",
    "ChatCompletion",
    "ChatCompletionRequest",
    "Completion",
    "CompletionChoice",
    "CompletionEngine",
    "CompletionLogprobs",
    "CompletionRequest",
    "CompletionUsage",
    "ErrorBody",
    "ErrorDetail",
    "Job",
    "ModelCard",
    "ModelList",
    "Progress",
    "RowProgress",
    "ServingLimits",
    "check_body_size",
    "error_from_pydantic",
    "StreamOptions",
    "sample_token",
    "stop_strings",
    "validate_request",
]
