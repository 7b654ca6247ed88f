"""The HTTP-facing logic of the Serve app, without Ray: parse, check, batch, answer.

Every answer is ``(status, body, headers)``; every header set names the served version
(``X-Model-Version``), errors included, so a client always knows which student answered.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from online_distill.serving.engine import CompletionEngine
from online_distill.serving.schemas import CompletionRequest
from online_distill.serving.swap import ModelSlot
from online_distill.serving.validation import (
    ApiError,
    ServingLimits,
    check_body_size,
    error_from_pydantic,
    validate_request,
)

VERSION_HEADER = "X-Model-Version"
REPLICA_HEADER = "X-Replica"
Item = tuple[CompletionRequest, list[str]]
Answer = tuple[int, dict[str, Any], dict[str, str]]
RunBatch = Callable[[Item], Awaitable[dict[str, Any]]]


class CompletionService:
    """Turns raw request bodies into OpenAI answers using the slot's current engine."""

    def __init__(self, slot: ModelSlot, limits: ServingLimits, served_model_name: str,
                 on_answer: Callable[[list[str]], None] | None = None) -> None:
        """``on_answer``: sees the prompts of every request answered 200 (the capture of
        served traffic); it must not block."""
        self.slot, self.limits, self.name = slot, limits, served_model_name
        self.on_answer = on_answer
        self.replica = ""

    def headers(self, version: int | None = None) -> dict[str, str]:
        v = self.slot.version if version is None else version
        out = {VERSION_HEADER: "none" if v is None else str(v)}
        if self.replica:
            out[REPLICA_HEADER] = self.replica
        return out

    def engine(self) -> CompletionEngine:
        engine = self.slot.current()
        if engine is None:
            raise ApiError(503, "no student version has been promoted yet; the first version "
                                "is served as soon as the evaluation gate promotes it (see "
                                "`online-distill versions`)", code="no_model_yet")
        return engine

    def parse(self, raw: bytes) -> Item:
        """The validated request and its prompts, or an :class:`ApiError`."""
        check_body_size(len(raw), self.limits)
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON ({exc}); send a JSON "
                                "object such as {\"model\": ..., \"prompt\": ...}",
                           code="invalid_json") from exc
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object with the fields of a "
                                "completion request", code="invalid_body")
        try:
            req = CompletionRequest.model_validate(data)
        except ValidationError as exc:
            raise error_from_pydantic(exc) from exc
        prompts = validate_request(req, self.limits, self.name)
        self.engine().check_context(req, prompts)
        return req, prompts

    async def complete(self, raw: bytes | Callable[[], Awaitable[bytes]],
                       run_batch: RunBatch) -> Answer:
        """``POST /v1/completions``; ``raw`` is the body or reads it (an :class:`ApiError`
        from reading, such as 413, is answered too); ``run_batch`` decodes one item
        (batched by the caller)."""
        try:
            item = self.parse(raw if isinstance(raw, bytes) else await raw())
            body = await run_batch(item)
        except ApiError as err:
            return err.status, err.body(), self.headers()
        if self.on_answer is not None:
            self.on_answer(item[1])
        return 200, body, self.headers(int(body["version"]))

    def models(self) -> Answer:
        try:
            engine = self.engine()
        except ApiError as err:
            return err.status, err.body(), self.headers()
        return 200, engine.models(), self.headers(engine.version)

    def health(self) -> Answer:
        self.slot.current()
        version = self.slot.version
        body = {"status": "ok" if version is not None else "waiting for a promoted version",
                "version": version, "swaps": self.slot.stats.swaps}
        return (200 if version is not None else 503), body, self.headers(version)


def run_items(slot: ModelSlot, items: list[Item]) -> list[dict[str, Any] | ApiError]:
    """Decode a batch on the engine in the slot now; a failing item fails alone."""
    engine = slot.current()
    if engine is None:
        err = ApiError(503, "no student version is loaded", code="no_model_yet")
        return [err for _ in items]
    try:
        return list(engine.complete_many(items))
    except ApiError:
        out: list[dict[str, Any] | ApiError] = []
        for item in items:  # find the culprit: answer the others
            try:
                out.append(engine.complete_many([item])[0])
            except ApiError as err:
                out.append(err)
        return out
