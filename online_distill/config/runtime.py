"""Where the loop runs and how it is reached: Ray, the Serve HTTP app, Prometheus metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import check_nonempty, check_range
from .coerce import normalize_fields


@dataclass(frozen=True, kw_only=True)
class RayConfig:
    """The Ray cluster that hosts every actor and the Serve app."""

    address: str = ""
    """Address of an existing Ray cluster (`auto`, `ray://host:10001`, ...). Empty: start a
    local Ray instance inside the daemon."""

    namespace: str = "online-distill"
    """Ray namespace of the daemon's named actors; two daemons on one cluster need two."""

    num_cpus: int = 2
    """CPUs a local Ray instance may use; 0 lets Ray count the machine's cores. Ignored
    when address is set."""

    include_dashboard: bool = False
    """Start the Ray dashboard with a local Ray instance (costs memory and start time)."""

    dashboard_host: str = "127.0.0.1"
    """Interface the Ray dashboard binds; 0.0.0.0 exposes it to the network."""

    def __post_init__(self) -> None:
        normalize_fields(self)
        check_nonempty(self, "namespace", "a typical value is 'online-distill'")
        check_range(self, "num_cpus", ge=0, fix="0 lets Ray detect the cores; 2 fits the demo")


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

    def __post_init__(self) -> None:
        normalize_fields(self)
        check_range(self, "port", ge=1, le=65535, fix="a typical value is 8000")
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


@dataclass(frozen=True, kw_only=True)
class MetricsConfig:
    """The Prometheus /metrics endpoint and the input-drift monitor."""

    enabled: bool = True
    """Export Prometheus metrics (online_distill_* names) on /metrics."""

    host: str = "127.0.0.1"
    """Interface the /metrics endpoint binds; 0.0.0.0 lets a remote Prometheus scrape it."""

    port: int = 9100
    """Port of the /metrics endpoint; 0 picks a free port (logged at start)."""

    push_interval_s: float = 1.0
    """How often each loop process sends its metrics to the /metrics endpoint (the metrics
    hub merges every process's metrics into that one endpoint)."""

    drift_method: Literal["psi", "ks"] = "psi"
    """Drift statistic between the reference window and the current window of live prompts,
    on each signal (the prompts' energy under the student, their length, their tokens, and
    the student-teacher KL): the population stability index over the reference's decile
    bins, or the Kolmogorov-Smirnov distance (total variation for the token distribution)."""

    drift_threshold: float = 0.2
    """Drift score above which the drift alert metric is raised (0.2 is the usual PSI bar
    for a significant shift)."""

    drift_window: int = 500
    """Live prompts in each of the two adjacent windows the drift statistic compares (the
    current one and the one just before it)."""

    def __post_init__(self) -> None:
        normalize_fields(self)
        check_range(self, "port", ge=0, le=65535, fix="0 picks a free port; default 9100")
        check_range(self, "drift_threshold", gt=0, fix="a typical value is 0.2 for psi, 0.1 for ks")
        if self.drift_method == "ks":
            check_range(
                self,
                "drift_threshold",
                gt=0,
                le=1,
                fix="the KS distance lies in [0, 1]; a typical value is 0.1",
            )
        check_range(self, "drift_window", ge=10, fix="a typical value is 500")
        check_range(self, "push_interval_s", gt=0, le=60, fix="a typical value is 1")
