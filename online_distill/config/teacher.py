"""The data side of the loop: the teacher that labels prompts, the critics that filter its
pseudo-targets, and the OOD-feedback loop that steers new prompts toward the tails."""

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


@dataclass(frozen=True, kw_only=True)
class CriticsConfig:
    """Filters between teacher and learner that drop bad pseudo-targets (Impossible
    Distillation's critics); each is switchable and counted in metrics."""

    enabled: bool = True
    """Run the critics; off passes every PT to the learner."""

    similarity: Literal["embedding", "token_overlap", "off"] = "token_overlap"
    """How PTs of one prompt are compared for agreement: sentence-embedding cosine,
    token-set overlap (Jaccard), or not at all."""

    embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    """Sentence-embedding model for similarity=embedding (hub id, offline cache, or path)."""

    min_similarity: float = 0.5
    """Drop a PT whose mean similarity to the other PTs of its prompt is below this."""

    max_pt_overlap: float = 1.0
    """Surface-diversity critic: drop a PT whose token overlap with a kept PT of the same
    prompt exceeds this; 1.0 keeps exact repeats apart from dedup."""

    min_length_ratio: float = 0.0
    """Drop a PT shorter than this many times its prompt's length (in tokens)."""

    max_length_ratio: float = 10.0
    """Drop a PT longer than this many times its prompt's length (in tokens)."""

    dedup: bool = True
    """Drop PTs identical to another PT of the same prompt."""

    near_dup_threshold: float = 0.9
    """With dedup, also drop PTs whose character-trigram Jaccard with a kept one is at
    least this."""

    task_exactness: bool = True
    """Apply the task's own exactness check to PTs when the task defines one (the demo
    task checks the arithmetic)."""

    min_prompt_similarity: float = 0.0
    """Drop a PT whose similarity to its own prompt is below this, for tasks whose output
    must stay related to the input (paraphrase, summary); 0.0 turns the critic off."""

    def __post_init__(self) -> None:
        normalize_fields(self)
        if self.similarity == "embedding":
            check_nonempty(self, "embedding_model", "name a sentence-embedding model")
        check_range(self, "min_similarity", ge=0, le=1, fix="a typical value is 0.5")
        check_range(self, "max_pt_overlap", ge=0, le=1, fix="1.0 turns the critic off")
        check_range(self, "min_length_ratio", ge=0, fix="0.0 turns the lower bound off")
        check_range(
            self,
            "max_length_ratio",
            gt=self.min_length_ratio,
            fix="must exceed min_length_ratio; a typical value is 10",
        )
        check_range(self, "near_dup_threshold", gt=0, le=1, fix="a typical value is 0.9")
        check_range(self, "min_prompt_similarity", ge=0, le=1, fix="0.0 turns the critic off")


@dataclass(frozen=True, kw_only=True)
class OODConfig:
    """GOLD's out-of-distribution feedback: the prompts the student finds hardest (highest
    energy) become few-shot examples asking the teacher for new prompts like them."""

    enabled: bool = False
    """Run the OOD-feedback actor."""

    energy_temperature: float = 1.0
    """T in the energy score E(x) = -T * logsumexp(f(x) / T) of the student's logits f."""

    score: Literal["nll", "nll_gap", "energy"] = "nll"
    """What makes a prompt out of distribution for the student: the negative log-likelihood
    of its tokens ("nll", GOLD's "lowest likelihood"), the energy -T*logsumexp(f/T)
    ("energy"), or the student's NLL minus the teacher's per token ("nll_gap": what neither
    can predict cancels, what only the student lacks stands out). On the demo, a student
    trained on add2 puts 100% of mul/sub2/add3 prompts above the 99th percentile of add2 by
    NLL, but only 54% of mul by mean energy after 300 steps and 7% after 800 (README "OOD
    feedback")."""

    energy_aggregate: Literal["mean", "max", "last"] = "mean"
    """How per-token scores (energies or NLLs) make one sequence score: their mean, their
    max, or the last token's."""

    window_size: int = 2000
    """Recent prompts whose energies form the reference distribution for tail picks."""

    tail_quantile: float = 0.99
    """Prompts with energy above this quantile of the window are the tail."""

    min_window: int = 200
    """Energies the window must hold before any prompt is picked as a tail (capped at
    window_size), so the first quantiles are not guesses from a handful of prompts."""

    tail_capacity: int = 256
    """Most recent distinct tail prompts kept as few-shot candidates; older ones are
    forgotten, so the examples follow what the current student finds hard."""

    few_shot_examples: int = 4
    """Tail prompts shown to the teacher in each feedback generation prompt."""

    feedback_per_round: int = 8
    """Few-shot generation prompts built (each from its own tail picks) per feedback round."""

    generations_per_prompt: int = 4
    """Continuations the teacher samples per few-shot prompt; each may become one new
    prompt after parsing, de-duplication, noise rejection and the share cap."""

    feedback_share_cap: float = 0.2
    """Most share of the prompts topic that synthetic feedback prompts may take, so real
    traffic always dominates."""

    noise_rejection_zscore: float = 4.0
    """Drop generated prompts whose energy z-score against the window exceeds this (noise,
    not tail)."""

    feedback_interval_s: float = 5.0
    """How often the OOD actor picks tails and asks the teacher for new prompts."""

    num_cpus: float = 0.25
    """CPUs Ray reserves for the OOD-feedback actor."""

    def __post_init__(self) -> None:
        normalize_fields(self)
        check_range(self, "energy_temperature", gt=0, fix="a typical value is 1.0")
        check_range(self, "window_size", ge=10, fix="a typical value is 2000")
        check_range(self, "tail_quantile", gt=0, lt=1, fix="a typical value is 0.95")
        check_range(
            self,
            "few_shot_examples",
            ge=1,
            le=self.window_size,
            fix="at most window_size; a typical value is 4",
        )
        check_range(self, "min_window", ge=1, fix="a typical value is 200")
        check_range(self, "tail_capacity", ge=1, fix="a typical value is 256")
        check_range(self, "feedback_per_round", ge=1, le=1024, fix="a typical value is 8")
        check_range(self, "generations_per_prompt", ge=1, le=64, fix="a typical value is 4")
        check_range(self, "feedback_share_cap", ge=0, le=1, fix="a typical value is 0.2")
        check_range(self, "noise_rejection_zscore", gt=0, fix="a typical value is 4.0")
        check_range(self, "feedback_interval_s", gt=0, fix="a typical value is 5")
        check_range(self, "num_cpus", ge=0, fix="a typical value is 0.25")
