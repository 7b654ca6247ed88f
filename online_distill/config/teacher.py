"""The teacher: the LM that labels prompts with pseudo-targets, and how it is run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .base import check_nonempty, check_range, check_resources, fail
from .coerce import normalize_fields


@dataclass(frozen=True, kw_only=True)
class TeacherConfig:
    """The teacher LM and how it writes pseudo-targets (PTs) for each prompt."""

    backend: Literal["hf", "vllm", "openai"] = "hf"
    """How the teacher runs: transformers in the actor, vLLM in the actor, or a remote
    OpenAI-compatible server (another online-distill works too)."""

    model: str = ""
    """Hub id or local path of the teacher (for openai: the served model name). Empty: the
    demo teacher shipped in online_distill/tasks."""

    base_url: str = ""
    """Base URL of the OpenAI-compatible server, e.g. http://host:8000/v1; backend=openai only.
    Empty means https://api.openai.com/v1."""

    tokenizer: str = ""
    """Tokenizer of the teacher's token ids (hub id or path). Empty: the teacher model's own
    (hf, vllm) or, for backend=openai, the student's. Teacher and student must share one
    tokenizer: the labels carry token ids."""

    server_max_logprobs: int = 20
    """Most top-k log-probabilities the OpenAI-compatible server returns per token (hosted
    APIs cap this at about 20; vLLM at its --max-logprobs). With backend=openai the PTs keep
    min(top_k_logprobs, this) and the rest of the mass is the tail bucket."""

    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key for backend=openai (unset: no key sent)."""

    n_pseudo_targets: int = 4
    """Pseudo-targets written per prompt with `decoding`; several diverse PTs beat one
    (Calderon et al. 2023)."""

    decoding: Literal["sample", "greedy", "beam"] = "sample"
    """How the PTs are decoded: ancestral sampling with temperature/top_p, greedy (one PT),
    or beam search with n_pseudo_targets beams."""

    include_greedy: bool = True
    """Also write one greedy PT per prompt besides the sampled or beam ones (ignored when
    decoding is greedy)."""

    temperature: float = 1.0
    """Sampling temperature of the teacher's PTs; higher gives more diverse PTs."""

    top_p: float = 1.0
    """Nucleus sampling mass for sampled PTs; 1.0 disables the cut."""

    top_k_logprobs: int = 20
    """Top-k teacher log-probabilities kept per PT token for word-level losses (the rest
    of the distribution is treated as one tail bucket)."""

    max_new_tokens: int = 16
    """Longest PT in tokens."""

    stop: tuple[str, ...] = ()
    """Strings that end a PT early (besides EOS), e.g. ["\\n"] for one-line answers."""

    batch_size: int = 32
    """Prompts one teacher actor labels per generate call."""

    num_actors: int = 1
    """Teacher actors; they share the prompts topic's partitions, so at most `partitions`."""

    num_cpus: float = 0.5
    """CPUs Ray reserves for each teacher actor."""

    device: Literal["cpu", "cuda", "auto"] = "auto"
    """Device of an in-actor teacher (hf, vllm); auto uses CUDA when the actor sees a GPU."""

    num_gpus: float = 0.0
    """GPUs Ray reserves for each teacher actor. Ray shows an actor only the GPUs it
    reserved (CUDA_VISIBLE_DEVICES), so a teacher on a GPU (device=cuda) needs 1 here."""

    ray_resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each teacher actor asks for, e.g. {"teacher_slot": 1} to keep
    teachers on the nodes that advertise it (deploy/k8s: the teacher pods)."""

    timeout_s: float = 30.0
    """backend=openai: longest wait for one HTTP request before it is retried; it bounds a
    hung server, not normal work (a 32-prompt demo batch takes under 1 s). In-process
    backends (hf, vllm) run to completion."""

    max_retries: int = 3
    """Retries of a failed or timed-out batch before its prompts go to the dead-letter topic."""

    retry_backoff_s: float = 0.5
    """First retry delay; each further retry doubles it."""

    max_concurrency: int = 8
    """backend=openai: HTTP requests one teacher actor keeps in flight at once (a batch is
    split into requests of a few prompts each)."""

    seed: int = 0
    """Seed of the teacher's sampling, so a replayed prompt gets the same PTs."""

    def __post_init__(self) -> None:
        normalize_fields(self)
        if self.backend == "openai" and not self.model:
            fail(
                "model",
                self.model,
                "backend=openai needs the served model name; the "
                "demo teacher only runs in-actor (backend=hf or vllm)",
            )
        if self.base_url and self.backend != "openai":
            fail(
                "base_url",
                self.base_url,
                "only backend=openai uses base_url; clear it or set backend=openai",
            )
        if self.decoding == "greedy" and self.n_pseudo_targets != 1:
            fail(
                "n_pseudo_targets",
                self.n_pseudo_targets,
                "greedy decoding gives one PT; set n_pseudo_targets=1 or decoding=sample",
            )
        if self.tokenizer and self.backend != "openai":
            fail("tokenizer", self.tokenizer,
                 "only backend=openai uses a separate tokenizer (in-process teachers use "
                 "their own); clear it or set backend=openai")
        check_range(self, "server_max_logprobs", ge=1, le=1000, fix="a typical value is 20")
        check_nonempty(self, "api_key_env", "a typical value is 'OPENAI_API_KEY'")
        check_range(self, "n_pseudo_targets", ge=1, le=64, fix="a typical value is 4")
        check_range(self, "temperature", gt=0, le=10, fix="a typical value is 1.0")
        check_range(self, "top_p", gt=0, le=1, fix="1.0 disables nucleus sampling")
        check_range(self, "top_k_logprobs", ge=1, le=1000, fix="a typical value is 20")
        check_range(self, "max_new_tokens", ge=1, fix="a typical value is 16-256")
        if any(not s for s in self.stop):
            fail("stop", self.stop, "stop strings must not be empty")
        check_range(self, "batch_size", ge=1, fix="a typical value is 32")
        check_range(self, "num_actors", ge=1, fix="a typical value is 1-4")
        check_range(self, "num_cpus", ge=0, fix="a typical value is 0.5")
        check_range(self, "num_gpus", ge=0, fix="1 for a teacher on its own GPU, else 0")
        if self.device == "cuda" and self.backend != "openai" and self.num_gpus == 0:
            fail("num_gpus", self.num_gpus, "teacher.device=cuda needs a GPU reserved from "
                 "Ray (it hides unreserved GPUs from the actor); set teacher.num_gpus=1")
        check_resources(self, "ray_resources")
        check_range(self, "timeout_s", gt=0, fix="a typical value is 30")
        check_range(self, "max_retries", ge=0, fix="a typical value is 3")
        check_range(self, "retry_backoff_s", ge=0, fix="a typical value is 0.5")
        check_range(self, "max_concurrency", ge=1, fix="a typical value is 8")
        check_range(self, "seed", ge=0, fix="any non-negative integer")
