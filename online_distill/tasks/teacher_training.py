"""Train the demo teacher from scratch on two CPU cores (``online-distill demo-teacher``).

The recipe follows the calibration in shared/MACHINE.md:
- a *balanced* corpus: every kind is equally likely per document (traffic is head-heavy,
  the teacher's corpus need not be, and rare kinds stay unlearned otherwise);
- one kind per document (``<bos>`` + up to ~12 lines + ``<eos>``), so that given a few lines
  of a kind the teacher continues with new lines of that kind (GOLD's feedback prompts);
- answers reversed (see :mod:`online_distill.tasks.arithmetic`);
- the loss weighted towards answer tokens (question tokens keep a smaller weight, because
  the teacher must also *write* questions when it continues a few-shot prompt);
- step count over model size: a ~0.8M-parameter model, small batches, many steps.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerFast

from online_distill.tasks.arithmetic import KINDS, sample_problem
from online_distill.tasks.evaluate import exact_match_by_kind
from online_distill.tasks.models import TEACHER_SHAPE, ModelShape, new_model, save_model


@dataclass(frozen=True, slots=True)
class TeacherRecipe:
    """Hyper-parameters of the demo teacher's training run."""

    steps: int = 6000
    batch_size: int = 32
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup_steps: int = 200
    weight_decay: float = 0.1
    question_weight: float = 0.25
    short_doc_share: float = 0.3
    """Share of documents with 1-4 lines (the rest are filled to the context length)."""
    eval_every: int = 500
    eval_problems: int = 100
    seed: int = 0
    threads: int = 2


class CorpusSampler:
    """Draws padded batches of single-kind documents with per-token loss weights."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, max_len: int, recipe: TeacherRecipe):
        self.max_len = max_len
        self.recipe = recipe
        self.rng = random.Random(recipe.seed)
        vocab = tokenizer.get_vocab()
        # Byte -> token id lookup: every character of the demo task is ASCII.
        self.lut = np.full(256, vocab["<unk>"], dtype=np.int64)
        for ch, idx in vocab.items():
            if len(ch) == 1 and ord(ch) < 256:
                self.lut[ord(ch)] = idx
        self.bos, self.eos, self.pad = tokenizer.bos_token_id, tokenizer.eos_token_id, 0

    def document(self) -> tuple[list[int], list[float]]:
        """One document's token ids and the loss weight of *predicting* each token."""
        kind = self.rng.choice(KINDS)
        ids, weights = [self.bos], [0.0]
        short = self.rng.random() < self.recipe.short_doc_share
        max_lines = self.rng.randint(1, 4) if short else 99
        q = self.recipe.question_weight
        for _ in range(max_lines):
            problem = sample_problem(kind, self.rng)
            line = problem.line
            if len(ids) + len(line) + 1 > self.max_len:
                break
            ids.extend(self.lut[np.frombuffer(line.encode(), dtype=np.uint8)].tolist())
            n_question = len(problem.prompt)
            weights.extend([q] * n_question + [1.0] * (len(line) - n_question))
        ids.append(self.eos)
        weights.append(q)
        return ids, weights

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids (B, T) right-padded, weights (B, T) (0 on padding and on ``<bos>``)."""
        docs = [self.document() for _ in range(self.recipe.batch_size)]
        length = max(len(ids) for ids, _ in docs)
        ids_out = torch.full((len(docs), length), self.pad, dtype=torch.long)
        w_out = torch.zeros((len(docs), length))
        for row, (ids, w) in enumerate(docs):
            ids_out[row, : len(ids)] = torch.tensor(ids)
            w_out[row, : len(w)] = torch.tensor(w)
        return ids_out, w_out


def weighted_lm_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Next-token cross-entropy weighted per target token.

    logits (B, T, V), input_ids (B, T), weights (B, T) where weights[b, t] weighs the
    prediction of input_ids[b, t] from position t-1. Returns sum(w * ce) / sum(w).
    """
    ce = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten(), reduction="none"
    )  # (B * (T-1),)
    w = weights[:, 1:].flatten()
    return (ce * w).sum() / w.sum().clamp_min(1e-8)


def lr_at(step: int, recipe: TeacherRecipe) -> float:
    """Linear warm-up then cosine decay from ``lr`` to ``min_lr``."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1 + math.cos(math.pi * progress))


def train_teacher(
    out_dir: Path,
    recipe: TeacherRecipe = TeacherRecipe(),
    shape: ModelShape = TEACHER_SHAPE,
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Train a teacher from scratch, save it to ``out_dir``, return its final accuracies."""
    torch.set_num_threads(recipe.threads)
    model, tokenizer = new_model(shape, seed=recipe.seed)
    sampler = CorpusSampler(tokenizer, shape.n_positions, recipe)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, betas=(0.9, 0.98), weight_decay=recipe.weight_decay
    )
    eval_rng = random.Random(recipe.seed + 10_000)
    probes = [sample_problem(k, eval_rng) for k in KINDS for _ in range(recipe.eval_problems)]
    log(f"demo-teacher: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{recipe.steps} steps of {recipe.batch_size} documents -> {out_dir}")
    start = time.monotonic()
    accuracy: dict[str, float] = {}
    for step in range(recipe.steps):
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, recipe)
        input_ids, weights = sampler.batch()
        loss = weighted_lm_loss(model(input_ids=input_ids).logits, input_ids, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        last = step + 1 == recipe.steps
        if (step + 1) % recipe.eval_every == 0 or last:
            model.eval()
            accuracy = exact_match_by_kind(model, tokenizer, probes)
            elapsed = time.monotonic() - start
            eta = elapsed / (step + 1) * (recipe.steps - step - 1)
            accs = " ".join(f"{k}={v:.2f}" for k, v in accuracy.items())
            log(f"step {step + 1}/{recipe.steps} loss={loss.item():.4f} "
                f"lr={lr_at(step, recipe):.2e} {accs} "
                f"[{elapsed / 60:.1f} min, eta {eta / 60:.1f} min]")
    save_model(model, tokenizer, out_dir)
    (out_dir / "training_recipe.json").write_text(
        json.dumps({"recipe": asdict(recipe), "shape": asdict(shape),
                                  "final_accuracy": accuracy}, indent=2) + "\n"
    )
    return accuracy
