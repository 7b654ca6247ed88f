"""Micro-benchmark of the GKD loss: ours vs TRL's, and our sparse top-k vs dense, on CPU.

Runs in .venv-trl (it imports ``online_distill.losses`` and TRL's GKDTrainer):

    OMP_NUM_THREADS=2 .venv-trl/bin/python bench/loss_micro.py          # about 1-2 min, 2 cores

What is compared (beta = 0.5, temperature 1, fp32, B = 8, T = 128, V = 101 and 32000):

- ``ours``: ``online_distill.losses.generalized_jsd(s, t, mask, beta=0.5)``.
- ``TRL``: ``trl.experimental.gkd.GKDTrainer.generalized_jsd_loss(s, t, labels, beta=0.5)``
  with ``labels = -100`` where the mask is off and its default ``reduction="batchmean"``,
  which with labels is ``sum over valid tokens / number of valid tokens`` (the
  ``num_items_in_batch`` path gives the same when it equals that count). Both therefore sum
  the per-token divergence over V and average over valid tokens; the script asserts that
  loss and gradient agree before timing.
- ``ours sparse top-20``: ``sparse_divergence("jsd", s, teacher, mask, beta=0.5)`` against
  ``sparse_from_logits(t, 20)``, precomputed (what an API teacher would send).

Two masks: every position valid, and a completion-like mask (one contiguous span of 32
positions per row, 25% valid). TRL computes over all B*T positions and masks at the end;
ours selects the valid rows first, so the second mask shows that difference.

Time: forward + backward of the loss alone (inputs are preallocated leaf tensors; the
student logits require grad). Median of ``--repeats`` timed calls, ours, TRL and sparse
interleaved so that background load hits them alike. Warm-up: the agreement check has
already run each dense loss once, the sparse loss gets one untimed call, then ``--warmup``
more untimed rounds. At V = 101 a call takes about a millisecond, so each timed sample there
is the mean of 20 calls. At V = 32000 a dense call allocates about 2 GB in fresh (B, T, V)
buffers, and a large share of its time is the kernel zeroing those pages (sys time):
that is part of what the loss costs in a training loop too, so it is not tuned away.

Peak memory: torch has no allocator statistics for CPU, and RSS-based numbers
(``getrusage``) are process-lifetime peaks blurred by malloc caching. We use the torch
profiler with ``profile_memory=True``: every CPU allocation and free through c10's allocator
is recorded with the allocator's running "Total Allocated"; the peak is the maximum of that
running total minus its value before the call, i.e. the most bytes the loss's forward +
backward held at once *beyond its inputs* (activations saved for backward, temporaries,
and the gradient of the student logits, which every path allocates). Inputs resident
before the call are listed apart: the dense losses need the teacher's (B, T, V) logits, the
sparse one only (B, T, 20) ids and log-probabilities and a (B, T) tail.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from trl.experimental.gkd import GKDTrainer  # noqa: E402

from online_distill.losses import (  # noqa: E402
    generalized_jsd,
    sparse_divergence,
    sparse_from_logits,
)

B, T, BETA, TOP_K = 8, 128, 0.5, 20
MB = 1e6


def make_inputs(vocab: int, mask_kind: str, seed: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student logits (leaf, requires grad), teacher logits, mask (B, T) and TRL labels."""
    g = torch.Generator().manual_seed(seed)
    student = (2.0 * torch.randn(B, T, vocab, generator=g)).requires_grad_()  # (B, T, V)
    teacher = 2.0 * torch.randn(B, T, vocab, generator=g)  # (B, T, V)
    if mask_kind == "all":
        mask = torch.ones(B, T, dtype=torch.bool)
    else:  # one completion-like span of T // 4 positions per row
        mask = torch.zeros(B, T, dtype=torch.bool)
        starts = torch.randint(0, T - T // 4 + 1, (B,), generator=g)
        for row, start in enumerate(starts.tolist()):
            mask[row, start:start + T // 4] = True
    labels = torch.where(mask, 0, -100)  # TRL's convention: -100 = ignored
    return student, teacher, mask, labels


def ours(student, teacher, mask, labels):  # type: ignore[no-untyped-def]
    return generalized_jsd(student, teacher, mask, beta=BETA, temperature=1.0)


def trl(student, teacher, mask, labels):  # type: ignore[no-untyped-def]
    return GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=BETA,
                                           temperature=1.0, reduction="batchmean")


def fwd_bwd(loss_fn: Callable, *inputs) -> torch.Tensor:  # type: ignore[type-arg]
    student = inputs[0]
    student.grad = None
    loss = loss_fn(*inputs)
    loss.backward()
    return loss.detach()


def check_agree(student, teacher, mask, labels) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Max |difference| of loss and of d loss / d student logits, ours vs TRL (asserted)."""
    a = fwd_bwd(ours, student, teacher, mask, labels)
    grad_a = student.grad.clone()
    b = fwd_bwd(trl, student, teacher, mask, labels)
    grad_b = student.grad.clone()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_a, grad_b, rtol=1e-4, atol=1e-9)
    return float((a - b).abs()), float((grad_a - grad_b).abs().max())


def time_interleaved(fns: dict[str, Callable], inputs: dict[str, tuple], repeats: int,  # type: ignore[type-arg]
                     warmup: int, inner: int) -> dict[str, float]:
    """Median seconds of one fwd+bwd per function, calls interleaved across functions."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner):
                fwd_bwd(fn, *inputs[name])
            if i >= warmup:
                samples[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(s) for name, s in samples.items()}


def peak_bytes(loss_fn: Callable, *inputs) -> int:  # type: ignore[type-arg]
    """Most bytes held at once by one fwd+bwd beyond its inputs (profiler, see docstring)."""
    inputs[0].grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fwd_bwd(loss_fn, *inputs)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = [e["args"] for e in json.load(f)["traceEvents"]
                      if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0]
    if not events:
        return 0
    baseline = events[0]["Total Allocated"] - events[0]["Bytes"]
    return max(e["Total Allocated"] for e in events) - baseline


def nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--vocabs", default="101,32000", help="comma-separated vocabulary sizes")
    p.add_argument("--repeats", type=int, default=3, help="timed samples per (V, mask, loss)")
    p.add_argument("--warmup", type=int, default=0, help="extra untimed rounds (see docstring)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    vocabs = [int(v) for v in args.vocabs.split(",")]
    command = shlex.join([os.path.relpath(sys.executable), os.path.relpath(sys.argv[0]),
                          *sys.argv[1:]])
    if "OMP_NUM_THREADS" in os.environ:
        command = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} {command}"

    speed_rows, mem_rows = [], []
    for vocab in vocabs:
        for mask_kind in ("all", "span25"):
            student, teacher, mask, labels = make_inputs(vocab, mask_kind, args.seed)
            dloss, dgrad = check_agree(student, teacher, mask, labels)
            dense = (student, teacher, mask, labels)
            fns: dict[str, Callable] = {"ours": ours, "trl": trl}  # type: ignore[type-arg]
            inputs: dict[str, tuple[Any, ...]] = {"ours": dense, "trl": dense}
            sparse = None
            if vocab == max(vocabs):
                sparse = sparse_from_logits(teacher, TOP_K)  # (B, T, k) ids, logprobs; (B, T)
                fns["sparse"] = lambda s, t, m: sparse_divergence("jsd", s, t, m, beta=BETA)
                inputs["sparse"] = (student, sparse, mask)
                fwd_bwd(fns["sparse"], *inputs["sparse"])  # its warm-up call
            inner = 20 if vocab < 1000 else 1
            med = time_interleaved(fns, inputs, args.repeats, args.warmup, inner)
            valid = f"{mask.float().mean():.0%}"
            speed_rows.append(
                f"| {vocab} | {valid} | {med['ours'] * 1e3:.2f} | {med['trl'] * 1e3:.2f} | "
                f"{med['trl'] / med['ours']:.2f} | "
                + (f"{med['sparse'] * 1e3:.2f}" if sparse is not None else "-")
                + f" | {dloss:.1e} | {dgrad:.1e} |")
            print(speed_rows[-1], flush=True)
            if sparse is not None:
                one = nbytes(teacher)  # one (B, T, V) fp32 tensor
                for name, fn, teacher_in in (
                    ("ours dense generalized_jsd", ours, nbytes(teacher)),
                    ("TRL generalized_jsd_loss", trl, nbytes(teacher)),
                    (f"ours sparse top-{TOP_K} sparse_divergence", fns["sparse"],
                     nbytes(sparse.ids, sparse.logprobs, sparse.tail_logmass)),
                ):
                    peak = peak_bytes(fn, *inputs["sparse" if "sparse" in name else "ours"])
                    mem_rows.append(f"| {name} | {valid} | {peak / MB:.0f} | {peak / one:.2f} | "
                                    f"{teacher_in / MB:.2f} |")
                    print(mem_rows[-1], flush=True)

    print()
    print(f"Command: `{command}` (torch {torch.__version__}, {args.threads} threads, "
          f"B={B}, T={T}, beta={BETA}, temperature 1, fp32; median of {args.repeats} samples, "
          f"V<1000 samples are means of 20 calls)")
    print()
    print("| V | valid positions | ours fwd+bwd ms | TRL fwd+bwd ms | TRL / ours | "
          f"ours sparse top-{TOP_K} ms | abs diff loss | max abs diff grad |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(speed_rows))
    if mem_rows:
        print()
        print(f"Peak memory of one fwd+bwd at V={max(vocabs)} beyond its inputs (torch profiler, "
              "CPU allocator running total); 'x BTV' = in units of one (B, T, V) fp32 tensor "
              f"({B * T * max(vocabs) * 4 / MB:.0f} MB).")
        print()
        print("| loss | valid positions | peak MB | x BTV | teacher input MB |")
        print("| --- | --- | --- | --- | --- |")
        print("\n".join(mem_rows))


if __name__ == "__main__":
    main()
