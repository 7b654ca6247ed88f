"""Decode + collate of labeled examples: the tuple-based messages of an earlier commit
(loaded from git, ``--before``) against this checkout's zero-copy ones, side by side in one
run, on the same records; checks that both build identical batches.

    .venv/bin/python bench/decode_collate.py [--before bd8dc6b] [--shape 256,32,16,20]
"""
# ruff: noqa: B023  (every lambda runs inside the loop iteration that made it)
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OLD = Path(tempfile.mkdtemp(prefix="od-decode-"))
BEFORE = "bd8dc6b"
"""The last commit before zero-copy messages."""


def git_show(ref: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout


def load_old(ref: str):  # type: ignore[no-untyped-def]
    pkg = OLD / "old_messages"
    pkg.mkdir(parents=True, exist_ok=True)
    names = subprocess.run(["git", "ls-tree", "--name-only", ref, "online_distill/messages/"],
                           cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    for n in names:
        if n.endswith(".py"):
            (pkg / Path(n).name).write_text(git_show(ref, n))
    (OLD / "old_batching.py").write_text(git_show(ref, "online_distill/learner/batching.py"))
    sys.path.insert(0, str(OLD))
    import old_batching
    import old_messages
    return old_messages, old_batching


def make_examples(n, p, t, k, vocab, seed=0):
    from online_distill.messages import LabeledExample, PseudoTarget
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lp = np.sort(np.log(rng.dirichlet(np.ones(k + 1), size=t)[:, :k]), axis=1)[:, ::-1]
        pt = PseudoTarget.from_arrays(
            token_ids=rng.integers(0, vocab, t), text="x", source="teacher", decoding="greedy",
            topk_ids=rng.integers(0, vocab, (t, k)), topk_logprobs=lp,
            tail_logmass=np.log(rng.uniform(0.01, 0.2, t)),
            sampled_logprobs=lp[:, 0])
        out.append(LabeledExample(prompt_id=f"p{i}", prompt_text="x",
                                  prompt_token_ids=rng.integers(0, vocab, p).tolist(),
                                  pseudo_targets=(pt,), teacher_id="t@1"))
    return out


def best(fn, reps):
    times = []
    for _ in range(reps):
        s = time.perf_counter()
        fn()
        times.append(time.perf_counter() - s)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default=BEFORE, help="commit of the old code")
    ap.add_argument("--shape", default="256,32,16,20", help="examples,P,T,k")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    old_m, old_b = load_old(args.before)
    from online_distill import messages as new_m
    from online_distill.learner import batching as new_b
    n, p, t, k = (int(x) for x in args.shape.split(","))
    for vocab, lp in ((50_000, "float16"), (50_000, "float32"), (200, "float32")):
        exs = make_examples(n, p, t, k, vocab)
        records = [new_m.encode(e, logprob_dtype=lp) for e in exs]

        def run(m, b):
            dec = [m.decode(r, m.LabeledExample) for r in records]
            return dec, b.collate(b.rows_from_examples(dec), 0, 64)

        res = {}
        for name, m, b in (("old", old_m, old_b), ("new", new_m, new_b)):
            run(m, b)  # warm up
            td = best(lambda: [m.decode(r, m.LabeledExample) for r in records], 7)
            dec = [m.decode(r, m.LabeledExample) for r in records]
            tr = best(lambda: b.rows_from_examples(dec), 7)
            rows = b.rows_from_examples(dec)
            tc = best(lambda: b.collate(rows, 0, 64), 7)
            tt = best(lambda: run(m, b), 7)
            res[name] = (td, tr, tc, tt, run(m, b)[1])
        bo, bn = res["old"][4], res["new"][4]
        same = all(torch.equal(getattr(bo, f), getattr(bn, f)) for f in
                   ("input_ids", "attention_mask", "target_ids", "loss_mask", "teacher_rows"))
        same &= all(torch.equal(getattr(bo.teacher, f), getattr(bn.teacher, f))
                    for f in ("ids", "logprobs", "tail_logmass"))
        print(f"\n{n} examples, P={p} T={t} k={k}, ids<{vocab}, logprobs {lp}; "
              f"record {len(records[0])} B; batches identical: {same}")
        print(f"{'':6}{'decode':>10}{'rows':>10}{'collate':>10}{'total':>10}  (ms, best of 7)")
        for name in ("old", "new"):
            td, tr, tc, tt, _ = res[name]
            print(f"{name:6}{td*1e3:10.2f}{tr*1e3:10.2f}{tc*1e3:10.2f}{tt*1e3:10.2f}")
        print(f"speedup{res['old'][0]/res['new'][0]:9.1f}x{res['old'][1]/res['new'][1]:9.1f}x"
              f"{res['old'][2]/res['new'][2]:9.1f}x{res['old'][3]/res['new'][3]:9.1f}x")


if __name__ == "__main__":
    main()
