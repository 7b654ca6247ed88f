"""Daemon throughput against bare loops on the same models and batches, in one run.

1. Bare baselines in this process (1 thread each, like one actor):
   - learner: a plain torch loop (forward, cross-entropy, backward, AdamW) over the very
     token batches the learner trains on (32 prompts x their pseudo-targets);
   - teacher: ``model.generate`` on the same prompts, batch size and sampling settings as
     the teacher backend (1 greedy + n sampled, with per-step logits).
2. The daemon (``online-distill up`` machinery: embedded broker, Ray, teacher and learner
   actors) on a prompts topic pre-filled with more demo traffic than it can label in
   ``--seconds`` (so no producer competes for the cores while it is measured).

Printed ratios: learner tokens/s inside the daemon (tokens over time spent in training
steps) / bare loop tokens/s, and teacher prompts labeled per second in the daemon (wall time,
input saturated) / bare generate prompts/s.

    .venv/bin/python bench/pipeline.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from online_distill.config import load_config
from online_distill.learner.batching import collate, rows_from_examples
from online_distill.messages import LabeledExample
from online_distill.models.generation import generate
from online_distill.models.loader import load_causal_lm
from online_distill.tasks.models import DEMO_STUDENT_DIR, DEMO_TEACHER_DIR
from online_distill.tasks.traffic import DemoTraffic
from online_distill.teachers.hf import HFTeacher
from online_distill.teachers.stage import label_request

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def bare_generate(cfg, prompts: list[list[int]], rounds: int) -> float:  # type: ignore[no-untyped-def]
    """Prompts per second of plain generate calls shaped like the teacher backend's."""
    model = load_causal_lm(DEMO_TEACHER_DIR, eval_mode=True)
    t = cfg.teacher
    bs = t.batch_size
    start = time.perf_counter()
    done = 0
    for r in range(rounds):
        chunk = prompts[(r * bs) % len(prompts):][:bs]
        generate(model, chunk, 0, t.max_new_tokens, n=1, mode="greedy", with_logits=True)
        generate(model, chunk, 0, t.max_new_tokens, n=t.n_pseudo_targets, mode="sample",
                 temperature=t.temperature, with_logits=True)
        done += len(chunk)
    return done / (time.perf_counter() - start)


def bare_train(cfg, examples: list[LabeledExample], steps: int) -> float:  # type: ignore[no-untyped-def]
    """Tokens per second of a plain CE loop over the learner's own padded batches."""
    model = load_causal_lm(DEMO_STUDENT_DIR)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learner.lr)
    bs = cfg.learner.batch_size
    batches = [collate(rows_from_examples(examples[i:i + bs]), 0, cfg.learner.max_seq_len)
               for i in range(0, len(examples) - bs + 1, bs)]
    tokens, start = 0, time.perf_counter()
    for s in range(steps):
        b = batches[s % len(batches)]
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        loss = torch.nn.functional.cross_entropy(logits[b.loss_mask], b.target_ids[b.loss_mask])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += b.num_tokens
    return tokens / (time.perf_counter() - start)


def run_daemon(overrides: list[str], seconds: float, prefill: int) -> dict:
    """The daemon on a pre-filled prompts topic: no producer competes for the 2 cores."""
    import ray
    from online_distill.actors.supervisor import Supervisor

    from online_distill.messages import PromptMessage, encode
    from online_distill.streams import EmbeddedBroker, KafkaSink, ensure_topics

    with EmbeddedBroker() as broker:
        cfg = load_config(None, [*overrides, f"kafka.bootstrap_servers={broker.bootstrap}"])
        ensure_topics(cfg.kafka, broker.bootstrap)
        sink = KafkaSink(cfg.kafka, broker.bootstrap, "bench")
        for item in DemoTraffic(seed=1).take(prefill):
            msg = PromptMessage(text=item.text, kind=item.problem.kind)
            sink.send(cfg.kafka.prompts_topic, encode(msg), key=msg.id.encode())
        sink.close()
        sup = Supervisor(cfg)
        sup.start()
        try:
            time.sleep(15)  # actors load their models and join; not measured
            first = sup.snapshot()
            t0 = time.monotonic()
            time.sleep(seconds)
            last = sup.snapshot()
            wall = time.monotonic() - t0
        finally:
            sup.stop()
            ray.shutdown()
    lab = last.teachers[0].labeled - first.teachers[0].labeled
    lt = last.learner.trained_tokens - first.learner.trained_tokens
    ls = last.learner.train_seconds - first.learner.train_seconds
    return {"labels_per_s": lab / wall, "learner_tokens_per_s": lt / max(ls, 1e-9),
            "learner_busy": ls / wall, "prompt_lag": last.teachers[0].lag}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="od-bench-"))
    overrides = [f"run_dir={tmp}", f"learner.checkpoint_dir={tmp}/ckpt",
                 f"gate.weights_dir={tmp}/w", "serve.enabled=false",
                 "learner.checkpoint_every_steps=50", "learner.publish_every_steps=1000",
                 "learner.loss=sequence_ce"]  # the bare loop is plain CE: like for like
    cfg = load_config(None, overrides)
    teacher = HFTeacher(DEMO_TEACHER_DIR, device="cpu", batch_size=cfg.teacher.batch_size)
    items = DemoTraffic(seed=1).take(512)
    prompts = [teacher.tokenizer(i.text).input_ids for i in items]
    labeled = teacher.label(prompts, label_request(cfg.teacher))
    examples = [LabeledExample(prompt_id=str(i), prompt_text=it.text,
                               prompt_token_ids=tuple(x), pseudo_targets=tuple(pts),
                               teacher_id="demo") for i, (it, x, pts) in
                enumerate(zip(items, prompts, labeled, strict=True))]
    gen_rate = bare_generate(cfg, prompts, rounds=16)
    train_rate = bare_train(cfg, examples, steps=60)
    print(f"bare: generate {gen_rate:.1f} prompts/s, train loop {train_rate:.0f} tokens/s",
          flush=True)
    daemon = run_daemon(overrides, args.seconds, prefill=int(400 * (args.seconds + 30)))
    text = (
        f"| measure | daemon | bare | ratio |\n| --- | --- | --- | --- |\n"
        f"| teacher prompts labeled/s | {daemon['labels_per_s']:.1f} | {gen_rate:.1f} | "
        f"{daemon['labels_per_s'] / gen_rate:.2f} |\n"
        f"| learner tokens/s (in steps) | {daemon['learner_tokens_per_s']:.0f} | "
        f"{train_rate:.0f} | {daemon['learner_tokens_per_s'] / train_rate:.2f} |\n\n"
        f"Learner busy {daemon['learner_busy']:.0%} of wall time; prompt lag at end "
        f"{daemon['prompt_lag']} (prompts topic pre-filled: the teacher never waits)."
    )
    print(text)


if __name__ == "__main__":
    main()
