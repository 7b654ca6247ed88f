"""An OpenAI-compatible teacher server with a fault switch, for the fault suite.

It answers /v1/completions with the project's own completion engine on the demo teacher
(the same code Ray Serve runs), in a thread of the test process. ``mode`` makes it fail on
purpose: "error" (HTTP 503), "hang" (no answer for ``hang_s``, past the client's timeout),
"garbage" (HTTP 200 with a body that is not JSON); "ok" answers normally.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pydantic import ValidationError

from online_distill.models.loader import load_causal_lm, load_tokenizer
from online_distill.serving.engine import CompletionEngine
from online_distill.serving.schemas import CompletionRequest
from online_distill.serving.validation import (
    ApiError,
    ServingLimits,
    error_from_pydantic,
    validate_request,
)
from online_distill.tasks.models import DEMO_TEACHER_DIR

NAME = "demo-teacher"


class FaultyTeacherServer:
    def __init__(self, hang_s: float = 5.0) -> None:
        model = load_causal_lm(DEMO_TEACHER_DIR)
        self.engine = CompletionEngine(model, load_tokenizer(DEMO_TEACHER_DIR), version=1,
                                       served_model_name=NAME)
        self.limits = ServingLimits()
        self.mode, self.hang_s = "ok", hang_s
        self.until, self.need, self.faulted = 0.0, 0, 0  # the fault window (set_for)
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status, payload = server.answer(body)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/v1"

    def answer(self, body: bytes) -> tuple[int, bytes]:
        with self.lock:
            mode = self.mode
            if mode != "ok" and time.monotonic() >= self.until and self.faulted >= self.need:
                mode = self.mode = "ok"
            self.faulted += mode != "ok"
            self.counts[mode] = self.counts.get(mode, 0) + 1
        if mode == "error":
            return 503, b'{"error": {"message": "overloaded (injected)"}}'
        if mode == "hang":
            time.sleep(self.hang_s)
            return 503, b'{"error": {"message": "hung (injected)"}}'
        if mode == "garbage":
            return 200, b'{"choices": [{"text": "\\u0000'
        try:
            try:
                req = CompletionRequest.model_validate(json.loads(body))
            except ValidationError as exc:  # e.g. vLLM's extra fields: a 400, as Serve says
                raise error_from_pydantic(exc) from exc
            prompts = validate_request(req, self.limits, NAME)
            with self.lock:
                out = self.engine.complete(req, prompts)
        except ApiError as err:
            return err.status, json.dumps(err.body()).encode()
        return 200, json.dumps(out).encode()

    def set_for(self, mode: str, seconds: float, min_requests: int = 1) -> None:
        """Fail in ``mode`` for ``seconds`` and at least ``min_requests`` requests, then
        answer normally again: the fault is met however slowly the teacher asks (a slow
        machine once let a whole window pass without a request)."""
        with self.lock:
            self.mode, self.until = mode, time.monotonic() + seconds
            self.need, self.faulted = min_requests, 0

    def close(self) -> None:
        self.http.shutdown()
