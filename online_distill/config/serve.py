"""How the served student is reached: the Ray Serve HTTP app."""

from __future__ import annotations

from dataclasses import dataclass

from .base import check_nonempty, check_range
from .coerce import normalize_fields


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """The Ray Serve app that serves the promoted student over an OpenAI-compatible API."""

    enabled: bool = True
    """Serve the student over HTTP (POST /v1/completions, GET /v1/models, /healthz)."""

    host: str = "127.0.0.1"
    """Interface the HTTP proxy binds; 0.0.0.0 exposes it to the network."""

    port: int = 8000
    """HTTP port of the Serve proxy."""

    served_model_name: str = "online-distill-student"
    """Model name reported by /v1/models and accepted in the `model` field of requests."""

    num_replicas: int = 1
    """Serve replicas of the student; each swaps weights in place on promotion."""

    num_cpus: float = 0.25
    """CPUs Ray reserves for each replica."""

    device: str = "cpu"
    """Device each replica runs the student on: cpu, cuda or cuda:N."""

    max_batch_size: int = 16
    """Most requests one replica batches into a single forward pass."""

    batch_wait_timeout_s: float = 0.0
    """How long a replica waits to fill a batch. 0 (the default) decodes at once whatever
    queued while the previous batch ran: batches still form under load, and a lone request
    pays no wait (bench/serving.py: p50 8.3 ms at 0 vs 20 ms at 0.01 on the demo)."""

    max_tokens_cap: int = 64
    """Upper bound on a request's max_tokens; a larger request gets HTTP 400 saying so."""

    max_prompt_chars: int = 2048
    """Longest prompt accepted; longer requests get HTTP 400."""

    max_body_bytes: int = 65536
    """Largest request body accepted; larger requests get HTTP 413."""

    max_concurrency: int = 32
    """Requests one replica handles at once; more wait in Serve's queue."""

    max_queued_requests: int = 256
    """Requests that may wait for a replica (every replica at max_concurrency); past that
    Serve answers 503 at once instead of letting an overload pile up. -1: no bound."""

    admin_token_env: str = "ONLINE_DISTILL_ADMIN_TOKEN"
    """Environment variable holding the bearer token for the admin routes (``POST
    /admin/promote``, ``POST /admin/rollback``, ``GET /admin/versions``). If the variable is
    unset, admin requests are refused (403)."""

    poll_interval_s: float = 0.25
    """How often each replica checks the promoted-version pointer for a new version."""

    swap_delay_s: float = 0.5
    """A promotion takes effect this long after it is written: every replica loads the new
    version meanwhile and all switch at the same moment, so a client's versions never go
    backwards across replicas. Keep it above poll_interval_s plus a model load."""

    capture: float = 0.0
    """Share of the requests the served student answers (0-1) whose prompts go back to the
    prompts topic as prompts with origin=served, so the apps' own traffic keeps it learning.
    Only the prompt is kept. Asynchronous and bounded: it never delays or fails a request;
    what cannot be produced (queue full, broker down) is counted as dropped. 0: off."""

    capture_queue: int = 1000
    """Captured prompts waiting to be produced, at most, per replica; beyond it they are
    dropped (counted)."""

    def __post_init__(self) -> None:
        normalize_fields(self)
        check_range(self, "port", ge=1, le=65535, fix="a typical value is 8000")
        check_range(self, "capture", ge=0, le=1, fix="a share of requests: 0 (off) to 1 (all)")
        check_range(self, "capture_queue", ge=1, fix="a typical value is 1000")
        check_nonempty(self, "served_model_name", "a typical value is 'online-distill-student'")
        check_range(self, "num_replicas", ge=1, fix="a typical value is 1-4")
        check_range(self, "num_cpus", gt=0, fix="a typical value is 0.25-1")
        check_range(self, "max_batch_size", ge=1, fix="a typical value is 16")
        check_range(self, "batch_wait_timeout_s", ge=0, le=10, fix="0 (the default) or up to 0.01")
        check_range(self, "max_tokens_cap", ge=1, fix="a typical value is 64")
        check_range(self, "max_prompt_chars", ge=1, fix="a typical value is 2048")
        check_range(
            self,
            "max_body_bytes",
            ge=self.max_prompt_chars,
            fix=f"must hold the longest prompt (serve.max_prompt_chars = "
            f"{self.max_prompt_chars}); raise it or lower max_prompt_chars",
        )
        check_range(self, "max_concurrency", ge=1, fix="a typical value is 32")
        if self.max_queued_requests != -1:
            check_range(self, "max_queued_requests", ge=1,
                        fix="a typical value is 256, or -1 for no bound")
        check_range(self, "poll_interval_s", gt=0, le=60, fix="a typical value is 0.25")
        check_range(self, "swap_delay_s", ge=0, le=600, fix="a typical value is 0.5")
