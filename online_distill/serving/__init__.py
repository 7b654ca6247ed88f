"""OpenAI-compatible completions over a student model: schemas, request checks, the engine.

Plain logic only (no Ray): the Ray Serve deployment wraps these pieces.
"""

from online_distill.serving.engine import CompletionEngine, sample_token
from online_distill.serving.schemas import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionUsage,
    ErrorBody,
    ErrorDetail,
    ModelCard,
    ModelList,
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
    "Completion",
    "CompletionChoice",
    "CompletionEngine",
    "CompletionLogprobs",
    "CompletionRequest",
    "CompletionUsage",
    "ErrorBody",
    "ErrorDetail",
    "ModelCard",
    "ModelList",
    "ServingLimits",
    "check_body_size",
    "error_from_pydantic",
    "sample_token",
    "stop_strings",
    "validate_request",
]
