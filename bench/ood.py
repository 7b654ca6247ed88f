"""GOLD feedback and critics against the same teacher budget, on demo traffic with rare tails.

Each row runs the loop's own stages in this process on an in-memory log (real teacher, real
student, no Ray or broker, so rows differ only by the switch under test): demo traffic in
which each tail kind (add3, sub2, mul) is 1% of prompts; the teacher labels until it has
labeled ``--budget`` prompts (traffic plus feedback: the same teacher cost per row); the
learner trains on everything labeled. Rows: OOD feedback off/on x critics off/on. Printed:
head and tail exact-match of the final student on the fixed probes (300 each), and what the
feedback loop and the critics did.

    .venv/bin/python bench/ood.py [--budget 12000] [--rows base,ood,critics,both]
        [--seeds 0,1,2] [--score answer_gap] [--targets 4] [--per-round 8]

Figures of several seeds are printed as mean (min-max); "tail kinds in feedback" is the
share of kept feedback prompts that are not the head kind (add2).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter

import torch

from online_distill.config import load_config
from online_distill.critics import build_critics
from online_distill.learner.build import assemble_stage
from online_distill.learner.trainer import Learner
from online_distill.messages import PromptMessage, encode
from online_distill.models.loader import load_model
from online_distill.models.scores import answer_gaps, prompt_scores
from online_distill.ood import feedback_format
from online_distill.ood.callouts import TeacherPromptWriter
from online_distill.ood.inputs import label_answer
from online_distill.ood.stage import OODStage
from online_distill.streams import DeadLetterWriter, MemoryLog, MemorySink, MemorySource
from online_distill.tasks.models import DEMO_STUDENT_DIR, DEMO_TEACHER_DIR
from online_distill.tasks.probes import probe_scores
from online_distill.tasks.traffic import DemoTraffic
from online_distill.teachers.hf import HFTeacher
from online_distill.teachers.stage import TeacherStage

MIX = {"add2": 0.97, "add3": 0.01, "sub2": 0.01, "mul": 0.01}
P, F, L, D = "prompts", "feedback", "labels", "dead"


def run_row(name: str, ood_on: bool, critics_on: bool, args: argparse.Namespace,
            teacher: HFTeacher, seed: int) -> dict[str, object]:
    torch.manual_seed(seed)
    cfg = load_config("deploy/demo.yaml", [
        f"teacher.n_pseudo_targets={args.targets}", f"ood.sample_share={args.sample_share}",
        f"ood.min_answer_gap={args.min_gap}", f"ood.generations_per_prompt={args.generations}",
        f"critics.enabled={str(critics_on).lower()}", "learner.replay_buffer_size=2000",
        f"ood.enabled={str(ood_on).lower()}", "gate.rolling_probe_size=0",
        f"ood.score={args.score}", f"ood.tail_quantile={args.tail_quantile}",
        f"ood.energy_aggregate={args.aggregate}", f"ood.feedback_per_round={args.per_round}",
        f"run_dir=/tmp/bench-ood-{name}", f"learner.checkpoint_dir=/tmp/bench-ood-{name}/ck",
        "learner.checkpoint_every_steps=100000", f"ood.feedback_share_cap={args.cap}"])
    log = MemoryLog(partitions=1)
    sink = MemorySink(log)
    tstage = TeacherStage(MemorySource(log, [P, F], group="teacher"), sink, teacher,
                          teacher.tokenizer, cfg.teacher, L, DeadLetterWriter(sink, D, "t"),
                          max_prompt_tokens=112, sleep=lambda s: None)
    student, stok = load_model(DEMO_STUDENT_DIR)
    learner = Learner(student, cfg.learner, pad_id=int(stok.pad_token_id or 0))
    critics = build_critics(cfg)
    lstage = assemble_stage(MemorySource(log, [L], group="learner"), learner, cfg.learner,
                            DeadLetterWriter(sink, D, "l"),
                            critic=critics.filter if critics else None, max_wait_s=0.0)
    clock = [0.0]
    ood = None
    if ood_on:
        def scorer(items: list) -> list[float]:  # type: ignore[type-arg]
            if cfg.ood.score == "answer_gap":  # labeled examples
                return answer_gaps(learner.model, [label_answer(e) for e in items], 0,
                                   cfg.ood.energy_aggregate)
            ids = [stok(t).input_ids for t in items]
            return prompt_scores(learner.model, ids, 0, cfg.ood.score,
                                 cfg.ood.energy_temperature, cfg.ood.energy_aggregate,
                                 teacher=teacher.model)

        topic = L if cfg.ood.score == "answer_gap" else P
        ood = OODStage(MemorySource(log, [topic], group="ood"), sink,
                       TeacherPromptWriter(teacher, teacher.tokenizer), scorer,
                       feedback_format(cfg), cfg.ood, F, DeadLetterWriter(sink, D, "o"),
                       clock=lambda: clock[0], seed=seed)
    traffic = iter(DemoTraffic(MIX, MIX, seed=seed))
    started = time.monotonic()
    kinds: Counter[str] = Counter()
    while tstage.stats.labeled < args.budget:
        room = min(args.chunk, args.budget - tstage.stats.labeled)
        for _ in range(room):
            item = next(traffic)
            msg = PromptMessage(text=item.text, kind=item.problem.kind)
            log.append(P, encode(msg), key=msg.id.encode())
        if ood is not None:
            clock[0] += args.chunk / 150.0  # seconds of traffic at the demo's 150/s
            ood.run_once(poll_timeout_s=0.0)
        while tstage.stats.labeled < args.budget and tstage.run_once(poll_timeout_s=0.0):
            pass
        while lstage.run_once(poll_timeout_s=0.0) is not None:
            pass
    for origin, n in tstage.stats.by_origin.items():
        kinds[origin] += n
    while lstage.run_once(poll_timeout_s=0.0) is not None:
        pass
    scores = probe_scores(learner.model, stok, size=300)
    row: dict[str, object] = {
        "row": name, "seed": seed, "head": scores["head"], "tail": scores["tail"],
        "labeled": tstage.stats.labeled, "by_origin": dict(kinds), "steps": learner.step,
        "seconds": round(time.monotonic() - started, 1)}
    if ood is not None:
        st = ood.stats
        row["feedback"] = {"generated": st.generated, "kept": st.kept,
                           "dropped": dict(st.dropped), "kinds": dict(st.kept_by_kind),
                           "tail": dict(st.tail_by_kind)}
    if critics is not None:
        row["critics"] = critics.snapshot()
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--budget", type=int, default=12000, help="prompts the teacher labels")
    ap.add_argument("--chunk", type=int, default=256, help="traffic prompts per round")
    ap.add_argument("--cap", type=float, default=0.2, help="ood.feedback_share_cap")
    ap.add_argument("--rows", default="base,ood,critics,both")
    ap.add_argument("--score", default="nll", choices=["nll", "nll_gap", "energy", "answer_gap"],
                    help="ood.score")
    ap.add_argument("--tail-quantile", type=float, default=0.99, help="ood.tail_quantile")
    ap.add_argument("--aggregate", default="mean", choices=["mean", "max", "last"],
                    help="ood.energy_aggregate")
    ap.add_argument("--per-round", type=int, default=8, help="ood.feedback_per_round")
    ap.add_argument("--seeds", default="0", help="comma-separated; each row runs once per seed")
    ap.add_argument("--targets", type=int, default=4, help="teacher.n_pseudo_targets "
                    "(sampled, besides the greedy one)")
    ap.add_argument("--sample-share", type=float, default=1.0, help="ood.sample_share")
    ap.add_argument("--min-gap", type=float, default=0.1, help="ood.min_answer_gap")
    ap.add_argument("--generations", type=int, default=4, help="ood.generations_per_prompt")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, tok = load_model(DEMO_TEACHER_DIR)
    teacher = HFTeacher(model, device="cpu", batch_size=64, tokenizer=tok, teacher_id="demo")
    switches = {"base": (False, False), "ood": (True, False), "critics": (False, True),
                "both": (True, True)}
    seeds = [int(x) for x in args.seeds.split(",")]
    names = args.rows.split(",")
    rows = [run_row(r, *switches[r], args, teacher, seed) for seed in seeds for r in names]
    print(f"\n{len(seeds)} seed(s) per row: mean (min-max)")
    print("| row | head | tail | feedback share of labeled | tail kinds in feedback | steps |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in names:
        mine = [r for r in rows if r["row"] == name]
        share = [r["by_origin"].get("feedback", 0) / r["labeled"] for r in mine]  # type: ignore[attr-defined]
        kinds = [r["feedback"]["kinds"] for r in mine if "feedback" in r]  # type: ignore[index]
        tails = [1 - k.get("add2", 0) / sum(k.values()) for k in kinds if k]
        print(f"| {name} | {spread([r['head'] for r in mine])} | "  # type: ignore[misc]
              f"{spread([r['tail'] for r in mine])} | {spread(share)} | "  # type: ignore[misc]
              f"{spread(tails) if tails else '-'} | "
              f"{round(statistics.mean(r['steps'] for r in mine))} |")  # type: ignore[misc]


def spread(values: list[float]) -> str:
    """``mean (min-max)`` as percentages."""
    if len(values) == 1:
        return f"{values[0]:.1%}"
    return f"{statistics.mean(values):.1%} ({min(values):.1%}-{max(values):.1%})"


if __name__ == "__main__":
    main()
