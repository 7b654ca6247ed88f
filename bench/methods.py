"""The method table: every distillation method of the learner on the demo task, side by side.

Fixed teacher budget: the same ``--prompts`` demo-traffic prompts are labeled once by the
shipped teacher (n sampled PTs + 1 greedy PT, top-k log-probabilities) and every row trains
a fresh demo student on them for the same ``--steps`` steps of ``--batch`` prompts. On-policy
rows also ask the teacher to *score* student samples (no new prompts; counted in the table).

    .venv/bin/python bench/methods.py                       # our rows
    .venv/bin/python bench/methods.py --trl .venv-trl/bin/python   # plus TRL's GKDTrainer

Writes the table into bench/RESULTS.md (between the method-table markers) and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from online_distill.config import LearnerConfig
from online_distill.learner.trainer import Learner
from online_distill.messages import LabeledExample, encode
from online_distill.models.loader import load_causal_lm, load_tokenizer
from online_distill.tasks.models import DEMO_STUDENT_DIR, DEMO_TEACHER_DIR
from online_distill.tasks.probes import probe_scores
from online_distill.tasks.traffic import DemoTraffic
from online_distill.teachers.hf import HFTeacher
from online_distill.teachers.protocol import LabelRequest

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
BEGIN, END = "<!-- methods:begin -->", "<!-- methods:end -->"


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    cfg: dict[str, object]
    pts: Callable[[LabeledExample], LabeledExample] = lambda ex: ex


def only(decoding: str) -> Callable[[LabeledExample], LabeledExample]:
    def pick(ex: LabeledExample) -> LabeledExample:
        pts = tuple(pt for pt in ex.pseudo_targets if pt.decoding == decoding)
        return dataclasses.replace(ex, pseudo_targets=pts)
    return pick


METHODS = [
    Method("seq-KD, 1 greedy PT", {"loss": "sequence_ce"}, only("greedy")),
    Method("seq-KD, 4 sampled PTs", {"loss": "sequence_ce"}, only("sample")),
    Method("word-level forward KL (4 sampled PTs)", {"loss": "forward_kl"}, only("sample")),
    Method("GKD JSD(0.5), lambda=0.5", {"loss": "jsd", "jsd_beta": 0.5, "onpolicy_lambda": 0.5},
           only("sample")),
    Method("GKD reverse KL, lambda=1", {"loss": "reverse_kl", "onpolicy_lambda": 1.0},
           only("sample")),
    Method("Joint-Teaching (JSD(0.5))", {"loss": "jsd", "jsd_beta": 0.5, "joint_teaching": True},
           only("sample")),
]


class CountingScorer:
    """Wraps the teacher to count how many sequences it scored for on-policy rows."""

    def __init__(self, teacher: HFTeacher) -> None:
        self.teacher, self.sequences = teacher, 0

    def score(self, prompt_ids, continuation_ids, top_k):  # type: ignore[no-untyped-def]
        self.sequences += len(prompt_ids)
        return self.teacher.score(prompt_ids, continuation_ids, top_k)


def label_budget(teacher: HFTeacher, n_prompts: int, seed: int, top_k: int) -> list[LabeledExample]:
    traffic = DemoTraffic(drift_after=0, seed=seed)
    items = traffic.take(n_prompts)
    tok = teacher.tokenizer
    ids = [tok(item.text).input_ids for item in items]
    request = LabelRequest(n=4, include_greedy=True, temperature=1.0, top_k_logprobs=top_k,
                           max_new_tokens=8, seed=seed)
    labeled = teacher.label(ids, request)
    return [
        LabeledExample(prompt_id=f"b{i}", prompt_text=item.text, prompt_token_ids=tuple(x),
                       pseudo_targets=tuple(pts), teacher_id=teacher.teacher_id,
                       kind=item.problem.kind)
        for i, (item, x, pts) in enumerate(zip(items, ids, labeled, strict=True))
    ]


def evaluate(model_dir_or_model, tokenizer) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    model = model_dir_or_model
    if isinstance(model, (str, Path)):
        model = load_causal_lm(model)
    model.eval()
    scores = probe_scores(model, tokenizer, size=300)
    return scores["head"], scores["tail"]


def run_method(m: Method, pool: list[LabeledExample], teacher: HFTeacher, args) -> dict:  # type: ignore[no-untyped-def]
    student = load_causal_lm(DEMO_STUDENT_DIR)
    cfg = LearnerConfig(lr=args.lr, warmup_steps=min(50, args.steps // 2), lr_schedule="cosine",
                        lr_decay_steps=args.steps, min_lr_ratio=0.1, device="cpu",
                        batch_size=args.batch, seed=args.seed, **m.cfg)  # type: ignore[arg-type]
    scorer = CountingScorer(teacher)
    learner = Learner(student, cfg, pad_id=0, scorer=scorer, top_k=args.top_k, max_new_tokens=8)
    data = [m.pts(ex) for ex in pool]
    rng = random.Random(args.seed)
    tokens, start = 0, time.perf_counter()
    for step in range(args.steps):
        stats = learner.train_step(rng.sample(data, args.batch))
        tokens += stats.tokens
        if (step + 1) % max(1, args.steps // 5) == 0:
            print(f"  [{m.name}] step {step + 1}/{args.steps} loss={stats.loss:.4f}", flush=True)
    seconds = time.perf_counter() - start
    head, tail = evaluate(learner.model, teacher.tokenizer)
    return {"method": m.name, "head": head, "tail": tail, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "teacher_scored": scorer.sequences}


def run_trl(python: str, pool: list[LabeledExample], args, lmbda: float = 0.5,  # type: ignore[no-untyped-def]
            steps: int | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pool.jsonl"
        with data.open("w") as f:
            # The same 4 sampled PTs per prompt as our GKD row, one TRL row each; a TRL batch
            # of 4 x batch rows holds the same tokens as one of our steps.
            for ex in pool:
                for pt in ex.pseudo_targets:
                    if pt.decoding == "sample":
                        row = {"prompt": ex.prompt_text, "completion": pt.text}
                        f.write(json.dumps(row) + "\n")
        out = Path(tmp) / "student"
        cmd = [python, str(HERE / "trl_gkd.py"), "--data", str(data), "--out", str(out),
               "--teacher", str(args.teacher), "--threads", str(args.threads),
               "--steps", str(steps or args.steps), "--batch", str(4 * args.batch),
               "--lr", str(args.lr), "--seed", str(args.seed), "--lmbda", str(lmbda),
               "--beta", "0.5"]
        print("  [TRL] " + " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"TRL run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        tok = load_tokenizer(args.teacher)
        head, tail = evaluate(out, tok)
    return {"method": f"TRL GKDTrainer JSD(0.5), lambda={lmbda}", "head": head, "tail": tail,
            "seconds": info["seconds"], "tokens_per_s": info["tokens_per_s"],
            "teacher_scored": "live"}


def step_speed(pool: list[LabeledExample], teacher: HFTeacher, args) -> str:  # type: ignore[no-untyped-def]
    """Same loss (JSD 0.5), model and batch, off-policy (lambda = 0): tokens/s, ours vs TRL."""
    m = Method("ours JSD(0.5), lambda=0", {"loss": "jsd", "jsd_beta": 0.5}, only("sample"))
    quick = argparse.Namespace(**{**vars(args), "steps": args.speed_steps})
    ours = run_method(m, pool, teacher, quick)
    trl = run_trl(args.trl, pool, args, lmbda=0.0, steps=args.speed_steps)
    ratio = ours["tokens_per_s"] / trl["tokens_per_s"]
    return (f"Step speed, JSD(0.5), lambda=0, {args.speed_steps} steps of {args.batch} prompts x 4 "
            f"PTs: ours {ours['tokens_per_s']:.0f} tok/s, TRL GKDTrainer "
            f"{trl['tokens_per_s']:.0f} tok/s, ratio ours/TRL = {ratio:.2f}. (Ours reads the "
            f"teacher's top-{args.top_k} from the labeled stream; TRL runs the teacher forward "
            f"every step: that is the design difference the ratio measures.)")


def table(rows: list[dict], teacher_acc: tuple[float, float], args) -> str:  # type: ignore[no-untyped-def]
    lines = [
        f"Teacher budget: {args.prompts} demo-traffic prompts labeled once (4 sampled PTs + 1 "
        f"greedy, top-{args.top_k}); {args.steps} student steps of {args.batch} prompts, "
        f"lr {args.lr} cosine; fresh demo student each row; fixed head/tail probes (300 each).",
        f"Teacher itself: head {teacher_acc[0]:.1%}, tail {teacher_acc[1]:.1%}.",
        "",
        "| method | head EM | tail EM | head vs teacher | wall s | student tok/s | "
        "teacher-scored seqs |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['head']:.1%} | {r['tail']:.1%} | "
            f"{r['head'] / max(teacher_acc[0], 1e-9):.2f} | {r['seconds']:.0f} | "
            f"{r['tokens_per_s']:.0f} | {r['teacher_scored']} |"
        )
    return "\n".join(lines)


def write_results(text: str, command: str) -> None:
    block = f"{BEGIN}\n```\n{command}\n```\n\n{text}\n{END}"
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if BEGIN in current:
        head, rest = current.split(BEGIN, 1)
        current = head + block + rest.split(END, 1)[1]
    else:
        current += f"\n## Method table (bench/methods.py)\n\n{block}\n"
    RESULTS.write_text(current)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--prompts", type=int, default=4000)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default="", help="comma-separated substrings of method names")
    p.add_argument("--trl", default="", help="python of a venv with trl installed")
    p.add_argument("--teacher", default=str(DEMO_TEACHER_DIR), help="teacher model directory")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--speed-steps", type=int, default=200, help="steps of the speed comparison")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    teacher = HFTeacher(args.teacher, device="cpu", batch_size=256)
    t0 = time.perf_counter()
    pool = label_budget(teacher, args.prompts, args.seed, args.top_k)
    print(f"labeled {len(pool)} prompts in {time.perf_counter() - t0:.1f}s "
          f"({sum(len(ex.pseudo_targets) for ex in pool)} PTs)", flush=True)
    blob = sum(len(encode(ex)) for ex in pool[:100]) / 100
    print(f"mean labeled-example size on the wire: {blob:.0f} bytes", flush=True)
    teacher_acc = evaluate(teacher.model, teacher.tokenizer)
    rows = [dict(zip(("head", "tail"), evaluate(DEMO_STUDENT_DIR, teacher.tokenizer),
                     strict=True), method="fresh student (no training)", seconds=0.0,
                 tokens_per_s=0.0, teacher_scored=0)]
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    for m in METHODS:
        if wanted and not any(w in m.name for w in wanted):
            continue
        rows.append(run_method(m, pool, teacher, args))
        print(json.dumps(rows[-1]), flush=True)
    if args.trl:
        rows.append(run_trl(args.trl, pool, args))
        print(json.dumps(rows[-1]), flush=True)
    text = table(rows, teacher_acc, args)
    if args.trl:
        text += "\n\n" + step_speed(pool, teacher, args)
    print(text)
    if not args.no_write:
        write_results(text, "python bench/methods.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
