"""Checks of completion requests against the server's limits, with messages that say the fix.

Every rejection is an :class:`ApiError` carrying an HTTP status and OpenAI's error body; the
message names the field, the value that was sent, the limit, and what to send instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import GenericAlias
from typing import Any

from pydantic import ValidationError

from online_distill.serving.schemas import CompletionRequest, ErrorBody, ErrorDetail


@dataclass(frozen=True)
class ServingLimits:
    """What one request may ask of the server."""

    max_tokens_cap: int = 64
    max_prompt_chars: int = 2048
    max_n: int = 8
    max_logprobs: int = 20
    max_prompts: int = 64
    max_stop: int = 4
    max_body_bytes: int = 65536


class ApiError(Exception):
    """A request the server refuses: HTTP ``status`` and OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str = "invalid_request", type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ("server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
        detail = ErrorDetail(message=self.message, type=self.type, param=self.param,
                             code=self.code)
        return ErrorBody(error=detail).model_dump()

    def __repr__(self) -> str:
        return (f"ApiError({self.status}, {self.message!r}, param={self.param!r}, "
                f"code={self.code!r})")


def _bad(param: str, code: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code=code)


async def read_bounded(chunks: AsyncIterator[bytes], content_length: str | None,
                       max_bytes: int) -> bytes:
    """A request body read from its ``chunks``, refused with 413 as soon as it is known to
    be over ``max_bytes``: from its Content-Length header before reading anything, or once
    the bytes read pass the limit (a chunked body), so a huge body is never held whole."""
    if content_length is not None and content_length.strip().isdigit():
        _refuse_over(int(content_length), max_bytes)
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        _refuse_over(len(body), max_bytes, at_least=True)
    return bytes(body)


def _refuse_over(num_bytes: int, max_bytes: int, at_least: bool = False) -> None:
    if num_bytes > max_bytes:
        size = f"over {max_bytes}" if at_least else str(num_bytes)
        raise ApiError(413, f"the request body is {size} bytes, over this server's limit "
                            f"of {max_bytes} bytes; send a smaller request "
                            f"(fewer or shorter prompts)", code="body_too_large")


def check_body_size(num_bytes: int, limits: ServingLimits) -> None:
    """Raise 413 when a request body is larger than ``limits.max_body_bytes``."""
    if num_bytes > limits.max_body_bytes:
        raise ApiError(413, f"the request body is {num_bytes} bytes, over this server's limit "
                            f"of {limits.max_body_bytes} bytes; send a smaller request "
                            f"(fewer or shorter prompts)", code="body_too_large")


def validate_request(req: CompletionRequest, limits: ServingLimits,
                     served_model_name: str) -> list[str]:
    """Check ``req`` against ``limits``; return its prompts as a list.

    Raises :class:`ApiError` (404 for another model name, else 400) on the first problem.
    """
    if req.model != served_model_name:
        raise ApiError(404, f"the model {req.model!r} does not exist on this server; it serves "
                            f"{served_model_name!r}: send model={served_model_name!r}",
                       param="model", code="model_not_found")
    _check_unsupported(req)
    prompts = _check_prompts(req.prompt, limits)
    _check_numbers(req, limits)
    _check_stop(req.stop, limits)
    return prompts


def check_stream(stream: bool, include_usage: bool | None, logprobs: bool, echo: bool = False
                 ) -> None:
    """Streams carry text only: refuse what a stream cannot carry, saying what to send."""
    if include_usage is not None and not stream:
        raise _bad("stream_options", "stream_options_without_stream",
                   "stream_options is only allowed with stream=true; send stream=true or "
                   "leave stream_options out")
    if stream and logprobs:
        raise _bad("logprobs", "stream_logprobs_unsupported",
                   "logprobs are not streamed by this server; leave logprobs out or send "
                   "stream=false")
    if stream and echo:
        raise _bad("echo", "stream_echo_unsupported",
                   "echo is not streamed by this server; leave echo out or send stream=false")


def _check_unsupported(req: CompletionRequest) -> None:
    options = req.stream_options
    check_stream(req.stream, None if options is None else options.include_usage,
                 req.logprobs is not None, req.echo)
    neutral: list[tuple[str, object, bool, str]] = [
        ("presence_penalty", req.presence_penalty, req.presence_penalty == 0, "0"),
        ("frequency_penalty", req.frequency_penalty, req.frequency_penalty == 0, "0"),
        ("best_of", req.best_of, req.best_of in (None, 1), "1"),
        ("logit_bias", req.logit_bias, not req.logit_bias, "{}"),
        ("suffix", req.suffix, req.suffix is None, "null"),
    ]
    for name, value, ok, fix in neutral:
        if not ok:
            raise _bad(name, "unsupported_parameter",
                       f"{name}={value!r} is not supported by this server; leave {name} out "
                       f"or send {name}={fix}")


def _check_prompts(prompt: str | list[str], limits: ServingLimits) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise _bad("prompt", "empty_prompt_list",
                   "prompt is an empty list; send a string or a list of 1 to "
                   f"{limits.max_prompts} strings")
    if len(prompts) > limits.max_prompts:
        raise _bad("prompt", "too_many_prompts",
                   f"prompt is a list of {len(prompts)} strings, over this server's limit of "
                   f"{limits.max_prompts}; split it into requests of at most "
                   f"{limits.max_prompts} prompts")
    for i, text in enumerate(prompts):
        if len(text) > limits.max_prompt_chars:
            where = "prompt" if isinstance(prompt, str) else f"prompt[{i}]"
            raise _bad("prompt", "prompt_too_long",
                       f"{where} is {len(text)} characters, over this server's limit of "
                       f"{limits.max_prompt_chars}; shorten it to at most "
                       f"{limits.max_prompt_chars} characters")
    return prompts


def _check_numbers(req: CompletionRequest, limits: ServingLimits) -> None:
    if req.max_tokens < (0 if req.echo else 1):  # echo with 0 tokens scores the prompt
        fix = ("ask for 0 (score the prompt only) to" if req.echo else
               "ask for 1 (or 0 with echo=true, to score the prompt only) to")
        raise _bad("max_tokens", "max_tokens_too_small",
                   f"max_tokens={req.max_tokens} must be at least {0 if req.echo else 1}; "
                   f"{fix} {limits.max_tokens_cap} tokens")
    if req.max_tokens > limits.max_tokens_cap:
        raise _bad("max_tokens", "max_tokens_over_cap",
                   f"max_tokens={req.max_tokens} is over this server's cap of "
                   f"{limits.max_tokens_cap}; ask for at most {limits.max_tokens_cap} tokens")
    if not 1 <= req.n <= limits.max_n:
        raise _bad("n", "n_out_of_range",
                   f"n={req.n} is outside this server's range 1..{limits.max_n}; ask for 1 to "
                   f"{limits.max_n} completions per prompt")
    if req.logprobs is not None and not 0 <= req.logprobs <= limits.max_logprobs:
        raise _bad("logprobs", "logprobs_out_of_range",
                   f"logprobs={req.logprobs} is outside this server's range "
                   f"0..{limits.max_logprobs}; ask for 0 to {limits.max_logprobs} alternatives "
                   f"or leave logprobs out")
    if not 0.0 <= req.temperature <= 2.0:  # also rejects NaN
        raise _bad("temperature", "temperature_out_of_range",
                   f"temperature={req.temperature} is outside [0, 2]; send a value from 0 "
                   f"(greedy) to 2")
    if not 0.0 < req.top_p <= 1.0:
        raise _bad("top_p", "top_p_out_of_range",
                   f"top_p={req.top_p} is outside (0, 1]; send a value above 0 and at most 1 "
                   f"(1 disables nucleus filtering)")


def _check_stop(stop: str | list[str] | None, limits: ServingLimits) -> None:
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if len(stops) > limits.max_stop:
        raise _bad("stop", "too_many_stop_strings",
                   f"stop has {len(stops)} strings, over this server's limit of "
                   f"{limits.max_stop}; send at most {limits.max_stop} stop strings")
    if any(s == "" for s in stops):
        raise _bad("stop", "empty_stop_string",
                   "stop contains an empty string; remove it (every stop string needs at "
                   "least one character)")


def stop_strings(req: CompletionRequest) -> list[str]:
    """The request's stop strings as a list (empty when none)."""
    if req.stop is None:
        return []
    return [req.stop] if isinstance(req.stop, str) else list(req.stop)


# ---------------------------------------------------------------------- pydantic errors
def error_from_pydantic(exc: ValidationError | Sequence[Mapping[str, Any]] | Any) -> ApiError:
    """One 400 naming each bad field, from a pydantic ``ValidationError``, FastAPI's
    ``RequestValidationError`` (anything with ``.errors()``) or a list of pydantic errors.

    Example message: ``"prompt: Input should be a valid string (expected str | list[str],
    got 5)"``.
    """
    errors = list(exc.errors() if hasattr(exc, "errors") else exc)
    clauses: dict[str, str] = {}
    codes: dict[str, str] = {}
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if loc[:1] == ("body",):  # FastAPI prefixes body fields with "body"
            loc = loc[1:]
        field = str(loc[0]) if loc and isinstance(loc[0], str) else ""
        if field in clauses:
            continue  # the first error of a field says enough (unions give one per member)
        clauses[field], codes[field] = _clause(field, err)
    if not clauses:
        return ApiError(400, "the request body is not valid; send a JSON object",
                        code="invalid_body")
    first = next(iter(clauses))
    return ApiError(400, "; ".join(clauses.values()), param=first or None, code=codes[first])


def _clause(field: str, err: Mapping[str, Any]) -> tuple[str, str]:
    kind = str(err.get("type", ""))
    msg = str(err.get("msg", "invalid value"))
    if not field:
        return f"request body: {msg}; send a JSON object with the fields of a completion " \
               f"request", "invalid_body"
    if kind == "extra_forbidden":
        return f"{field}: this server does not accept the field {field!r}; remove it", \
               "unknown_field"
    expected = _expected_type(field)
    if kind == "missing":
        return f"{field}: Field required; add {field} ({expected})", "missing_field"
    got = repr(err.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    return f"{field}: {msg} (expected {expected}, got {got})", "invalid_type"


def _expected_type(field: str) -> str:
    info = CompletionRequest.model_fields.get(field)
    if info is None:
        return "a valid value"
    annotation = info.annotation
    if isinstance(annotation, type) and not isinstance(annotation, GenericAlias):
        return annotation.__name__
    return repr(annotation)
