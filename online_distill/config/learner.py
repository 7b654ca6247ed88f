"""The learner: how the student is trained on the labels topic, checkpointed and published."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .base import check_nonempty, check_range, check_resources, fail
from .coerce import normalize_fields

LossKind = Literal["sequence_ce", "forward_kl", "reverse_kl", "jsd", "tvd"]


@dataclass(frozen=True, kw_only=True)
class LearnerConfig:
    """The learner: how the student is trained on the labels topic, checkpointed and published."""

    student_model: str = ""
    """Hub id or local path of the student's initial weights. Empty: the demo student
    initialisation shipped in online_distill/tasks."""

    loss: LossKind = "jsd"
    """Distillation loss: sequence-level cross-entropy on teacher PTs, or a word-level
    divergence between teacher and student next-token distributions (forward KL, reverse
    KL, generalized JSD, total variation)."""

    jsd_beta: float = 0.5
    """Beta of the generalized JSD (loss=jsd), in [0, 1]; 0 and 1 give the KL limits that
    the loss function's docstring states."""

    temperature: float = 1.0
    """Softmax temperature applied to teacher and student logits in word-level losses."""

    seq_ce_weight: float = 0.0
    """Weight of sequence-level CE added to a word-level loss (0 = word-level only)."""

    onpolicy_lambda: float = 0.0
    """GKD's lambda: the share of training sequences sampled from the current student (and
    scored by the teacher) instead of taken from teacher PTs."""

    joint_teaching: bool = False
    """Joint-Teaching: apply word-level KD on PTs written by both teacher and student, so
    the student learns to recover from its own prefixes."""

    onpolicy_samples: int = 0
    """Student samples per prompt on an on-policy or Joint-Teaching step; 0 matches the
    number of teacher PTs of each example, so on- and off-policy steps are the same size."""

    onpolicy_warmup_steps: int = 0
    """Optimizer steps trained off-policy before on-policy mixing and Joint-Teaching start:
    the papers start from a student already fine-tuned on teacher data, whose samples are
    worth scoring; a fresh student's are noise."""

    lr: float = 3e-4
    """Peak AdamW learning rate."""

    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""

    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW (beta1, beta2) moment decay rates."""

    lr_schedule: Literal["constant", "cosine"] = "constant"
    """Learning rate after warmup: held at lr, or cosine decay to lr * min_lr_ratio over
    lr_decay_steps (then held)."""

    warmup_steps: int = 20
    """Optimizer steps of linear warmup from 0 to lr."""

    lr_decay_steps: int = 10000
    """Step at which the cosine schedule reaches its floor (lr_schedule=cosine only)."""

    min_lr_ratio: float = 0.1
    """Floor of the cosine schedule as a fraction of lr."""

    batch_size: int = 32
    """Sequences per micro-batch (one forward/backward)."""

    grad_accum_steps: int = 1
    """Micro-batches summed per optimizer step; losses are normalised by the global count
    of valid tokens across them."""

    max_grad_norm: float = 1.0
    """Gradient norm clip per optimizer step; 0 turns clipping off."""

    max_seq_len: int = 256
    """Longest prompt + PT in tokens the learner trains on; longer sequences are truncated."""

    self_distill_every_steps: int = 0
    """Impossible Distillation's self-distillation rounds: every this many steps the student
    samples pseudo-targets for recent prompts, the critics filter them, and the kept ones
    train as labeled examples with source=student. 0 turns the rounds off."""

    self_distill_prompts: int = 8
    """Recent prompts the student labels in each self-distillation round."""

    self_distill_samples: int = 4
    """Candidate pseudo-targets the student samples per prompt in a round."""

    max_steps: int | None = None
    """Stop after this many optimizer steps; null trains for as long as the daemon runs."""

    max_lag_s: float = 0.0
    """Freshness first under overload: an example labeled more than this many seconds ago
    is skipped instead of trained (counted as ``stale``), and while
    more than 4 batches wait, the oldest are skipped (``overrun``), so a learner slower than
    its teachers trains on the newest labels instead of falling behind without bound.
    Skipped examples are not lost: they stay in the labels topic (and ``export``), and their
    offsets are committed with the next checkpoint like any handled record. 0 trains every
    example in order, however late."""

    replay_buffer_size: int = 2048
    """Recent labeled examples kept in memory and mixed into batches, so a burst of one
    kind does not wash out the rest."""

    checkpoint_dir: str = "runs/demo/checkpoints"
    """Directory of learner checkpoints (student, optimizer, consumed label offsets)."""

    checkpoint_every_steps: int = 50
    """Optimizer steps between checkpoints; a restart resumes from the latest one."""

    keep_checkpoints: int = 3
    """Most recent checkpoints kept on disk; older ones are deleted."""

    resume: bool = True
    """Resume from the latest checkpoint in checkpoint_dir when one exists."""

    publish_every_steps: int = 25
    """Optimizer steps between publishing a student version to the weights store (the
    gate then evaluates it)."""

    publish_every_s: float = 0.0
    """Also publish when this many seconds passed since the last version (0: by steps
    only). Steps are a poor clock for a large student, whose steps are slow: a version
    every 25 steps is then minutes old when served (bench/RESULTS.md, "Freshness under
    overload")."""

    workers: int = 1
    """Training workers; more than 1 runs data-parallel as a Ray Train job."""

    num_cpus: float = 0.5
    """CPUs Ray reserves for each training worker."""

    ray_resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each learner worker asks for, e.g. {"learner_slot": 1} to keep
    the workers on the nodes that advertise it (deploy/k8s: the learner pods). A learner on
    device=cuda reserves one GPU per worker besides these."""

    device: Literal["cpu", "cuda", "auto"] = "auto"
    """Device of each worker; auto uses CUDA when the worker sees a GPU."""

    seed: int = 0
    """Seed of student initialisation, batch order and on-policy sampling."""

    def __post_init__(self) -> None:
        normalize_fields(self)
        word_level = self.loss != "sequence_ce"
        if self.onpolicy_lambda > 0 and not word_level:
            fail(
                "onpolicy_lambda",
                self.onpolicy_lambda,
                "on-policy distillation needs a "
                "word-level loss; set loss=jsd (or a KL) or onpolicy_lambda=0",
            )
        if self.joint_teaching and not word_level:
            fail(
                "joint_teaching",
                self.joint_teaching,
                "Joint-Teaching needs a word-level "
                "loss; set loss=jsd (or a KL) or joint_teaching=false",
            )
        check_range(self, "jsd_beta", ge=0, le=1, fix="a typical value is 0.5")
        check_range(self, "temperature", gt=0, le=10, fix="a typical value is 1.0")
        check_range(self, "seq_ce_weight", ge=0, fix="0 uses the word-level loss alone")
        check_range(self, "onpolicy_lambda", ge=0, le=1, fix="0 is off-policy; GKD uses 0.5")
        check_range(self, "onpolicy_samples", ge=0, fix="0 matches the teacher PTs per prompt")
        check_range(self, "self_distill_every_steps", ge=0, fix="0 turns the rounds off")
        check_range(self, "self_distill_prompts", ge=1, fix="a typical value is 8")
        check_range(self, "self_distill_samples", ge=1, fix="a typical value is 4")
        check_range(self, "onpolicy_warmup_steps", ge=0, fix="0 mixes from the first step")
        check_range(self, "lr", gt=0, fix="a typical value is 3e-4")
        check_range(self, "weight_decay", ge=0, fix="a typical value is 0.0-0.1")
        for beta in self.betas:
            if not 0 <= beta < 1:
                fail(
                    "betas",
                    self.betas,
                    "each beta must be in [0, 1); a typical value is [0.9, 0.95]",
                )
        check_range(self, "warmup_steps", ge=0, fix="a typical value is 20")
        if self.lr_schedule == "cosine":
            check_range(
                self,
                "lr_decay_steps",
                gt=self.warmup_steps,
                fix="must exceed warmup_steps; a typical value is 10000",
            )
        check_range(self, "min_lr_ratio", ge=0, le=1, fix="a typical value is 0.1")
        check_range(self, "batch_size", ge=1, fix="a typical value is 32")
        check_range(self, "grad_accum_steps", ge=1, fix="1 updates after every micro-batch")
        check_range(self, "max_grad_norm", ge=0, fix="0 turns clipping off; typical is 1.0")
        check_range(self, "max_seq_len", ge=8, fix="a typical value is 256")
        check_range(self, "max_steps", ge=1, fix="null trains until stopped")
        check_range(self, "max_lag_s", ge=0, fix="0 trains everything; a typical value is 30")
        check_range(
            self,
            "replay_buffer_size",
            ge=self.batch_size,
            fix="must hold one batch (batch_size); a typical value is 2048",
        )
        check_nonempty(self, "checkpoint_dir", "a typical value is 'runs/demo/checkpoints'")
        check_range(self, "checkpoint_every_steps", ge=1, fix="a typical value is 50")
        check_range(self, "keep_checkpoints", ge=1, fix="a typical value is 3")
        check_range(self, "publish_every_steps", ge=1, fix="a typical value is 25")
        check_range(self, "publish_every_s", ge=0, fix="0 (off) or a few seconds")
        check_range(self, "workers", ge=1, fix="1 trains in one actor")
        check_resources(self, "ray_resources")
        check_range(self, "num_cpus", ge=0, fix="a typical value is 0.5")
        check_range(self, "seed", ge=0, fix="any non-negative integer")
