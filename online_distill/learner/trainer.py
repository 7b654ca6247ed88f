"""The Learner: owns the student, its optimizer and schedule, and takes one step per batch.

What a step does, by ``LearnerConfig``:

- ``loss = sequence_ce``: sequence-level KD, cross-entropy on every teacher pseudo-target
  (n sampled and/or greedy PTs per prompt; Calderon et al. 2023).
- ``loss in {forward_kl, reverse_kl, jsd, tvd}``: word-level KD on teacher PTs against the
  teacher's per-token top-k distributions (plus ``seq_ce_weight`` x sequence CE).
- ``onpolicy_lambda = lambda``: GKD (Agarwal et al. 2024). With probability lambda the step's
  sequences are sampled from the current student instead (no gradient through sampling),
  the teacher scores them through a :class:`TeacherScorer`, and the divergence is taken there.
- ``joint_teaching``: word-level KD on PTs of both the teacher and the student every step
  (Calderon et al. 2023), so the student learns to recover from its own prefixes.

Gradient accumulation normalises by the valid tokens of the *whole* step, so the update
equals the full-batch one. With N data-parallel workers (a :class:`StepSync` and a
DDP-wrapped ``train_model``) the normaliser is the whole step's count over all workers and
each worker's loss is scaled by N (DDP averages gradients), so the update again equals the
one of a single worker on the union of the batches (:mod:`online_distill.learner.lockstep`).
A step whose loss or gradient norm is not finite is skipped and counted. Checkpoints hold
the student, optimizer, schedule, RNG states and an opaque ``progress`` dict (the stream
offsets), written atomically; loading one reproduces the following steps bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from online_distill.config import LearnerConfig
from online_distill.learner.batching import Row, TrainingBatch, collate, rows_from_examples
from online_distill.learner.checkpoint import load_checkpoint, save_checkpoint
from online_distill.learner.live_signals import LiveSignals, per_example, row_signals
from online_distill.learner.lockstep import SingleSync, StepSync
from online_distill.losses import reduce_valid, sequence_ce, sparse_bins, token_divergence
from online_distill.messages import LabeledExample
from online_distill.models.device import resolve_device
from online_distill.models.generation import generate
from online_distill.teachers.protocol import TeacherScorer


@dataclass(frozen=True, slots=True)
class StepStats:
    """What one call to :meth:`Learner.train_step` did."""

    step: int
    """Optimizer steps taken so far (unchanged by a skipped step)."""
    loss: float
    losses: dict[str, float]
    """The loss by kind (``sequence_ce``, ``jsd``, ...), before weighting."""
    grad_norm: float
    tokens: int
    """Continuation tokens trained on."""
    rows: int
    onpolicy: bool
    skipped: bool
    lr: float
    seconds: float
    sources: dict[str, int] = field(default_factory=dict)
    """Rows by who wrote the continuation (teacher / student)."""
    signals: LiveSignals | None = None
    """Per-example divergence, agreement and prompt energy of the student before this step
    (teacher rows only; None for on-policy steps)."""


def lr_factor(step: int, cfg: LearnerConfig) -> float:
    """Linear warm-up, then constant or cosine decay to ``min_lr_ratio`` over lr_decay_steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.lr_decay_steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + 0.5 * (1 - cfg.min_lr_ratio) * (1 + math.cos(math.pi * progress))


class Learner:
    """Trains a student causal LM on labeled examples (see the module docstring)."""

    def __init__(
        self,
        model: PreTrainedModel,
        cfg: LearnerConfig,
        pad_id: int,
        scorer: TeacherScorer | None = None,
        top_k: int = 20,
        max_new_tokens: int = 16,
        sync: StepSync | None = None,
    ) -> None:
        if (cfg.onpolicy_lambda > 0 or cfg.joint_teaching) and scorer is None:
            raise ValueError(
                "learner.onpolicy_lambda > 0 or learner.joint_teaching needs a teacher scorer "
                "to score the student's own sequences; pass scorer=..."
            )
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.model = model.to(self.device)
        context = (getattr(model.config, "n_positions", None)
                   or getattr(model.config, "max_position_embeddings", None))
        self.max_len = min(cfg.max_seq_len, int(context)) if context else cfg.max_seq_len
        """Longest sequence trained: learner.max_seq_len, or the student's context if
        shorter (a longer example loses its end instead of crashing every step)."""
        self.pad_id = pad_id
        self.scorer = scorer
        self.top_k = top_k
        self.max_new_tokens = max_new_tokens
        self.rng = random.Random(cfg.seed)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg)
        )
        self.step = 0
        self.skipped_steps = 0
        self.sync: StepSync = sync or SingleSync()
        self.train_model: torch.nn.Module = self.model
        """What the training forward calls: the model, or its DDP wrapper (see
        :meth:`wrap_for_data_parallel`); sampling, saving and scoring use ``model``."""

    def wrap_for_data_parallel(self) -> None:
        """Wrap the student in DDP for the training forward (after loading a checkpoint:
        DDP broadcasts rank 0's weights to every worker when it wraps)."""
        if self.sync.world_size == 1:
            return
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index or 0] if self.device.type == "cuda" else None
        self.train_model = DistributedDataParallel(self.model, device_ids=ids)

    # ------------------------------------------------------------------ one step
    def train_step(self, examples: Sequence[LabeledExample]) -> StepStats:
        """One optimizer step on the examples' pseudo-targets (and student samples)."""
        start = time.perf_counter()
        rows = rows_from_examples(examples)
        onpolicy = False
        mixing = self.step >= self.cfg.onpolicy_warmup_steps
        if self.cfg.joint_teaching and mixing:
            rows += self.student_rows(examples)
        elif (self.cfg.onpolicy_lambda > 0 and mixing
              and self.rng.random() < self.cfg.onpolicy_lambda):
            rows = self.student_rows(examples)
            onpolicy = True
        return self.train_on_rows(rows, onpolicy=onpolicy, start=start)

    def train_on_rows(self, rows: Sequence[Row], onpolicy: bool = False,
                      start: float | None = None) -> StepStats:
        """One optimizer step on prepared rows, split into ``grad_accum_steps`` micro-batches."""
        start = time.perf_counter() if start is None else start
        if not rows:
            raise ValueError("train_on_rows got no rows with tokens to train on")
        n_micro = min(self.cfg.grad_accum_steps, len(rows))
        micro = [rows[i::n_micro] for i in range(n_micro)]
        batches = [collate(m, self.pad_id, self.max_len) for m in micro]
        # Global normalisers: every micro-batch divides by the whole step's token counts
        # (over every worker); DDP averages gradients over workers, so scale back by N.
        local_valid = sum(b.num_tokens for b in batches)
        num_valid, num_ce = self.sync.sum_counts(
            [local_valid, sum(int(b.ce_mask.sum()) for b in batches)])
        scale = float(self.sync.world_size)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        loss_sum = 0.0
        signals = torch.full((len(rows), 4), float("nan"))  # (R, 4) per row, see live_signals
        for i, batch in enumerate(batches):
            # Gradients sync across workers once, on the last micro-batch's backward.
            with self._no_sync(last=i == len(batches) - 1):
                loss, parts, row_values = self._loss(batch, num_valid, num_ce)
                signals[i::n_micro] = row_values.cpu()
                (loss * scale).backward()
            loss_sum += float(loss.detach())
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + value
        if self.sync.world_size > 1:  # the whole step's loss, as one worker would see it
            loss_sum = self.sync.sum_value(loss_sum)
            totals = {k: self.sync.sum_value(v) for k, v in sorted(totals.items())}
        grad_norm = float(torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), self.cfg.max_grad_norm))
        skipped = not (math.isfinite(loss_sum) and math.isfinite(grad_norm))
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
        else:
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
        sources: dict[str, int] = {}
        for r in rows:
            sources[r.source] = sources.get(r.source, 0) + 1
        return StepStats(
            step=self.step, loss=loss_sum, losses=totals, grad_norm=grad_norm,
            tokens=local_valid, rows=len(rows), onpolicy=onpolicy, skipped=skipped,
            lr=self.optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - start,
            sources=sources,
            signals=None if onpolicy else per_example(
                signals, [r.example if r.source == "teacher" else -1 for r in rows]),
        )

    def _no_sync(self, last: bool) -> Any:
        """DDP's no_sync() for all but the last micro-batch; a no-op otherwise."""
        no_sync = getattr(self.train_model, "no_sync", None)
        return contextlib.nullcontext() if last or no_sync is None else no_sync()

    def weights_finite(self) -> bool:
        """Whether every weight of the student is finite (no NaN, no inf)."""
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    @torch.no_grad()
    def loss_alone(self, example: LabeledExample) -> float:
        """The loss of ``example`` alone (its teacher PTs), forward only: no update, no
        collective (the unwrapped model), so one worker can ask without the others."""
        rows = rows_from_examples([example])
        if not rows:
            return 0.0
        b = collate(rows, self.pad_id, self.max_len)
        loss, _, _ = self._loss(b, b.num_tokens, int(b.ce_mask.sum()), model=self.model)
        return float(loss)

    def _loss(self, b: TrainingBatch, num_valid: int, num_ce: int,
              model: torch.nn.Module | None = None
              ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """The micro-batch's loss, its parts by kind, and its rows' live signals (B, 4)."""
        dev = self.device
        logits = (model or self.train_model)(
            input_ids=b.input_ids.to(dev), attention_mask=b.attention_mask.to(dev)
        ).logits  # (B, S, V)
        cfg = self.cfg
        parts: dict[str, float] = {}
        loss = logits.new_zeros((), dtype=torch.float32)
        if cfg.loss == "sequence_ce" or cfg.seq_ce_weight > 0:
            ce = sequence_ce(logits, b.target_ids.to(dev), b.ce_mask.to(dev), num_valid=num_ce)
            weight = 1.0 if cfg.loss == "sequence_ce" else cfg.seq_ce_weight
            loss = loss + weight * ce
            parts["sequence_ce"] = float(ce.detach())
        teacher = type(b.teacher)(b.teacher.ids.to(dev), b.teacher.logprobs.to(dev),
                                  b.teacher.tail_logmass.to(dev))
        mask = b.loss_mask.to(dev)
        s_bins, t_bins = sparse_bins(logits, teacher, mask, cfg.temperature)  # (N, k+1) each
        if cfg.loss != "sequence_ce":
            div = reduce_valid(token_divergence(s_bins, t_bins, cfg.loss, cfg.jsd_beta), mask,
                          num_valid)
            loss = loss + div
            parts[cfg.loss] = float(div.detach())
        top = teacher.ids[mask].gather(-1, teacher.logprobs[mask].argmax(-1, keepdim=True))
        values = row_signals(logits.detach(), mask, s_bins.detach(), t_bins, top.squeeze(-1))
        return loss, parts, values

    # ------------------------------------------------------------------ on-policy
    def student_rows(self, examples: Sequence[LabeledExample]) -> list[Row]:
        """Sample continuations from the student (``onpolicy_samples`` per prompt, default
        as many as the teacher PTs); the teacher scores them. No gradient flows here."""
        if self.scorer is None:
            raise ValueError("student_rows needs a teacher scorer")
        n = self.cfg.onpolicy_samples or max(1, round(
            sum(len(ex.pseudo_targets) for ex in examples) / max(1, len(examples))))
        prompts = [ex.prompt_token_ids for ex in examples]
        gen = generate(self.model, prompts, self.pad_id, self.max_new_tokens, n=n,
                       mode="sample", temperature=1.0)
        # Row i of the output is sample i % n of prompt i // n.
        keep = [i for i, c in enumerate(gen.continuations) if c]
        scores = self.scorer.score([prompts[i // n] for i in keep],
                                   [gen.continuations[i] for i in keep], self.top_k)
        return [Row(tuple(prompts[i // n]), tuple(gen.continuations[i]), sc, "student")
                for i, sc in zip(keep, scores, strict=True)]

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory: str | Path, progress: dict[str, Any] | None = None,
             keep: int | None = None) -> Path:
        """Atomically write a checkpoint under ``directory``; returns its folder.

        The state is tensors and JSON data only (see :mod:`online_distill.learner.checkpoint`):
        the optimizer's moments and the torch RNG state go to safetensors, the parameter
        groups, the schedule and the Python RNG state to JSON.
        """
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),  # a uint8 tensor
            "python_rng": self.rng.getstate(),  # (version, 625 ints, gauss) tuples
        }
        meta = {"step": self.step, "skipped_steps": self.skipped_steps,
                "progress": progress or {}}
        return save_checkpoint(Path(directory), self.step, self.model, state, meta,
                               keep=keep if keep is not None else self.cfg.keep_checkpoints)

    def load(self, directory: str | Path) -> dict[str, Any] | None:
        """Load the latest checkpoint under ``directory``; returns its progress, or None.

        Raises :class:`~online_distill.learner.checkpoint.CheckpointError` for a checkpoint
        whose trainer state is in the old pickled ``trainer_state.pt``.
        """
        loaded = load_checkpoint(Path(directory), self.model)
        if loaded is None:
            return None
        state, meta = loaded
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.rng.setstate(state["python_rng"])
        self.step = int(meta["step"])
        self.skipped_steps = int(meta["skipped_steps"])
        return dict(meta["progress"])
