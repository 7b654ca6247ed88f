"""How far the sparse (top-k + tail bin) divergences are from the dense ones, k = 5, 20, 64.

Real models: the demo teacher against the demo student (fresh, and after a short seq-KD
warm-up so the two are closer, as in training), on demo-traffic lines. For each divergence:
dense value, sparse value per k, and the relative gap (dense - sparse) / dense. The sparse
value is a lower bound (folding bins can only lose divergence).

    .venv/bin/python bench/sparse_gap.py
"""

from __future__ import annotations

import argparse

import torch

from online_distill.losses import DIVERGENCES, divergence, sparse_divergence, sparse_from_logits
from online_distill.models.loader import load_causal_lm, load_tokenizer
from online_distill.tasks.models import DEMO_STUDENT_DIR, DEMO_TEACHER_DIR
from online_distill.tasks.traffic import DemoTraffic


@torch.no_grad()
def gap_table(student, teacher, input_ids: torch.Tensor, mask: torch.Tensor, ks: list[int]
              ) -> list[str]:
    s_logits = student(input_ids=input_ids).logits  # (B, T, V)
    t_logits = teacher(input_ids=input_ids).logits  # (B, T, V)
    lines = []
    for kind in DIVERGENCES:
        dense = divergence(kind, s_logits, t_logits, mask).item()
        cells = []
        for k in ks:
            sparse = sparse_divergence(kind, s_logits, sparse_from_logits(t_logits, k), mask).item()
            cells.append(f"{sparse:.4f} ({(dense - sparse) / max(dense, 1e-12):+.1%})")
        lines.append(f"| {kind} | {dense:.4f} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lines", type=int, default=256)
    p.add_argument("--ks", default="5,20,64")
    args = p.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    tok = load_tokenizer(DEMO_TEACHER_DIR)
    teacher = load_causal_lm(DEMO_TEACHER_DIR, eval_mode=True)
    student = load_causal_lm(DEMO_STUDENT_DIR, eval_mode=True)
    texts = [item.problem.line for item in DemoTraffic(seed=5).take(args.lines)]
    enc = tok(texts, padding=True, return_tensors="pt")
    ids, mask = enc.input_ids, enc.attention_mask.bool()
    header = ["| divergence | dense | " + " | ".join(f"sparse k={k} (gap)" for k in ks) + " |",
              "| --- | --- | " + " | ".join("---" for _ in ks) + " |"]
    print(f"V = {len(tok)}; {args.lines} demo lines; teacher vs fresh student")
    print("\n".join(header + gap_table(student, teacher, ids, mask, ks)))
    # A student closer to the teacher: 200 steps of plain CE on teacher-labeled lines.
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    student.train()
    for _ in range(200):
        loss = student(input_ids=ids, attention_mask=enc.attention_mask, labels=ids.masked_fill(
            ~mask, -100)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    student.eval()
    print("\nteacher vs student after 200 CE steps on the same lines")
    print("\n".join(header + gap_table(student, teacher, ids, mask, ks)))


if __name__ == "__main__":
    main()
