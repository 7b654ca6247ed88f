"""TRL's GKDTrainer on the demo task: the peer row of bench/methods.py.

Trains the demo student with ``trl.experimental.gkd.GKDTrainer`` (TRL 1.16) against a teacher,
on a JSONL file of ``{"prompt": "47+38=", "completion": "58\\n"}`` rows. Runs in .venv-trl:

    .venv-trl/bin/python bench/trl_gkd.py --data pool.jsonl --out /tmp/trl-student \\
        --steps 1500 --batch 32 --lr 3e-3 --seed 0 --lmbda 0.5 --beta 0.5

The last stdout line is one JSON object: ``seconds`` (wall time of ``Trainer.train``, setup
and the final save excluded), ``tokens_per_s`` (loss tokens / seconds), ``step_seconds_mean``,
``steps``, plus ``loss_tokens`` and ``onpolicy_steps`` for context.

How our data reaches TRL
------------------------
Our tokenizer is char-level with no chat template, and GKDTrainer's default collator
(``DataCollatorForChatML``) only renders ``messages`` through a chat template when a row has
no ``input_ids``. It also accepts pre-tokenized rows ``{prompt, input_ids, attention_mask,
completion_mask}`` and then takes the prompt/completion boundary from ``completion_mask``
("tracked boundary"; the ``prompt`` string must be present but is not re-tokenized). We use
that path (TRL 1.16's GKD has no plain prompt/completion mode): no template is invented, and the
token ids are exactly those of our learner (``tok(prompt)`` with its leading ``<bos>``, then
``tok(completion, add_special_tokens=False)``, whose trailing ``\\n`` is an end-of-sequence id
of the demo models). The collator sets labels to -100 on the prompt, so the loss is on
completion tokens only (``generalized_jsd_loss`` masks ``labels[:, 1:] == -100``).

What TRL does per optimizer step (read from trl/experimental/gkd/gkd_trainer.py)
--------------------------------------------------------------------------------
- On-policy is a *batch-level* Bernoulli: ``if random.random() <= lmbda`` the whole batch's
  completions are replaced by student samples (``generate`` from the left-padded prompts,
  temperature ``GKDConfig.temperature`` with top_k=0/top_p=1, cut after the first EOS of the
  student's generation config, up to ``max_new_tokens``). Else, if ``seq_kd``, the teacher
  samples them; else the dataset completions are used. (We run seq_kd=False, as ours.)
- The loss is ``generalized_jsd_loss(beta)`` on student and teacher logits of the same
  sequences; ``GKDConfig.temperature`` only drives sampling (compute_loss does not pass it to
  the loss, which runs at temperature 1). We set temperature=1.0 (TRL's default is 0.9).
- It is divided by the Trainer's ``num_items_in_batch``, counted from the *collated* labels
  before the on-policy swap, so on an on-policy step the sum over generated tokens is divided
  by the dataset completion count (a TRL quirk we keep: it scales those steps' gradient by
  generated/dataset tokens; clipping at 1.0 bounds its effect).

One correction (on by default, ``--no-position-fix`` to run TRL verbatim)
-----------------------------------------------------------------------
The collator left-pads, and compute_loss calls the models without ``position_ids``. GPT-2 has
*absolute* position embeddings, so a row padded by k tokens is seen at positions k..k+L-1 (by
the student and the teacher) while ``generate`` and evaluation use 0..L-1: on the pilot
teacher one left-padded row's log-probs moved by up to 7.8 nats and most argmaxes changed.
(Rotary models, TRL's usual case, are unaffected: only relative positions matter there.)
A forward pre-hook on both models fills ``position_ids = cumsum(attention_mask) - 1`` when the
caller passes none, which is what ``generate`` does and what our right-padded batches get.

Optimizer, as our learner in bench/methods.py: AdamW (betas 0.9/0.95, no weight decay), lr
with 50 linear warm-up steps then cosine to 0.1 * lr at the last step, grad-norm clip 1.0,
fp32, no dropout, no eval, no checkpoint until the final ``save_pretrained``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl.experimental.gkd import GKDConfig, GKDTrainer

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "online_distill" / "tasks" / "assets"


def load_rows(path: Path, tokenizer: Any) -> Dataset:
    """JSONL prompt/completion rows -> pre-tokenized rows for DataCollatorForChatML."""
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        prompt = tokenizer(item["prompt"]).input_ids  # with <bos>, as our learner
        completion = tokenizer(item["completion"], add_special_tokens=False).input_ids
        if not completion:
            continue
        ids = prompt + completion
        rows.append({
            # Read by the collator before it looks at input_ids, unused once
            # completion_mask gives the boundary.
            "prompt": item["prompt"],
            "input_ids": ids,
            "attention_mask": [1] * len(ids),
            "completion_mask": [0] * len(prompt) + [1] * len(completion),
        })
    if not rows:
        raise SystemExit(f"{path}: no usable rows (need non-empty 'completion')")
    return Dataset.from_list(rows)


def positions_from_mask(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: left-padded rows get positions 0..L-1 (see module docstring)."""
    mask, ids = kwargs.get("attention_mask"), kwargs.get("input_ids")
    if kwargs.get("position_ids") is None and mask is not None and ids is not None \
            and mask.dim() == 2:
        pos = (mask.long().cumsum(-1) - 1).clamp_min(0)  # (B, S_total)
        kwargs["position_ids"] = pos[:, -ids.shape[1]:]  # (B, S): the new tokens only
    return args, kwargs


class Timer(TrainerCallback):
    """Wall time of train() and of each optimizer step."""

    def __init__(self) -> None:
        self.train_start = self.train_end = self.step_start = 0.0
        self.step_seconds: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.train_start = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.step_seconds.append(time.perf_counter() - self.step_start)

    def on_train_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.train_end = time.perf_counter()


class CountingGKDTrainer(GKDTrainer):
    """GKDTrainer unchanged, plus counters: loss tokens and on-policy (swapped) batches."""

    loss_tokens = 0
    onpolicy_steps = 0

    def training_step(self, model, inputs, num_items_in_batch=None):  # type: ignore[no-untyped-def]
        before = inputs["input_ids"]
        loss = super().training_step(model, inputs, num_items_in_batch)
        # The same mask generalized_jsd_loss uses: shifted labels that are not -100.
        self.loss_tokens += int((inputs["labels"][:, 1:] != -100).sum())
        self.onpolicy_steps += int(inputs["input_ids"] is not before)
        return loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="JSONL of {prompt, completion}")
    p.add_argument("--out", type=Path, required=True, help="where the trained student is saved")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lmbda", type=float, required=True, help="on-policy batch probability")
    p.add_argument("--beta", type=float, required=True, help="JSD beta (0 fwd KL, 1 rev KL)")
    p.add_argument("--teacher", type=Path, default=ASSETS / "demo-teacher")
    p.add_argument("--student", type=Path, default=ASSETS / "demo-student-init")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-position-fix", action="store_true",
                   help="run TRL verbatim: left-padded rows get shifted absolute positions")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    tokenizer = AutoTokenizer.from_pretrained(str(args.student))
    # .venv-trl has no online_distill, so not its loader; the same rule: safetensors only.
    student = AutoModelForCausalLM.from_pretrained(str(args.student), dtype=torch.float32,
                                                   use_safetensors=True)
    teacher = AutoModelForCausalLM.from_pretrained(str(args.teacher), dtype=torch.float32,
                                                   use_safetensors=True)
    if not args.no_position_fix:
        for model in (student, teacher):
            model.register_forward_pre_hook(positions_from_mask, with_kwargs=True)
    dataset = load_rows(args.data, tokenizer)

    config = GKDConfig(
        output_dir=str(args.out),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        learning_rate=args.lr,
        optim="adamw_torch",
        adam_beta1=0.9,
        adam_beta2=0.95,
        weight_decay=0.0,
        max_grad_norm=1.0,
        warmup_steps=50,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1},
        lmbda=args.lmbda,
        beta=args.beta,
        temperature=1.0,
        seq_kd=False,
        max_new_tokens=args.max_new_tokens,
        max_length=student.config.n_positions,
        disable_dropout=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=0,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_steps=max(1, args.steps // 5),
        disable_tqdm=True,
    )
    timer = Timer()
    trainer = CountingGKDTrainer(
        model=student, teacher_model=teacher, args=config, train_dataset=dataset,
        processing_class=tokenizer, callbacks=[timer],
    )
    trainer.train()
    trainer.model.save_pretrained(str(args.out))
    tokenizer.save_pretrained(str(args.out))

    seconds = timer.train_end - timer.train_start
    steps = len(timer.step_seconds)
    print(json.dumps({
        "seconds": seconds,
        "tokens_per_s": trainer.loss_tokens / seconds,
        "step_seconds_mean": sum(timer.step_seconds) / max(1, steps),
        "steps": steps,
        "loss_tokens": trainer.loss_tokens,
        "onpolicy_steps": trainer.onpolicy_steps,
    }), flush=True)


if __name__ == "__main__":
    main()
