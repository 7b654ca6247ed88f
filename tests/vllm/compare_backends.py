"""Run under the vLLM venv (``make venv-vllm``): label and score the same prompts with the
vLLM and the Hugging Face backends on the demo teacher and print the comparison as JSON.

tests/integration/test_vllm_teacher.py runs this script and asserts on its output.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main() -> None:
    import torch

    from online_distill.tasks.models import DEMO_TEACHER_DIR
    from online_distill.tasks.traffic import DemoTraffic
    from online_distill.teachers.hf import HFTeacher
    from online_distill.teachers.protocol import LabelRequest
    from online_distill.teachers.vllm_engine import VLLMTeacher

    torch.set_num_threads(2)
    hf = HFTeacher(str(DEMO_TEACHER_DIR), device="cpu", batch_size=64)
    start = time.perf_counter()
    vl = VLLMTeacher(str(DEMO_TEACHER_DIR), device="cpu", tokenizer=hf.tokenizer)
    engine_s = time.perf_counter() - start
    traffic = DemoTraffic(mix={"add2": 0.4, "add3": 0.2, "sub2": 0.2, "mul": 0.2}, seed=3)
    prompts = [list(hf.tokenizer(next(traffic).text).input_ids) for _ in range(48)]
    k = 20
    req = LabelRequest(n=2, decoding="sample", include_greedy=True, top_k_logprobs=k,
                       max_new_tokens=12, seed=0)
    vl.label(prompts[:2], req)  # warm-up: the first call compiles kernels
    start = time.perf_counter()
    v_pts = vl.label(prompts, req)
    label_s = time.perf_counter() - start
    h_pts = hf.label(prompts, req)
    greedy_equal = sum(v[0].token_ids == h[0].token_ids for v, h in zip(v_pts, h_pts, strict=True))
    # Scoring: both backends score the same sequences (the vLLM greedy and sampled PTs).
    pairs = [(p, list(pt.token_ids)) for p, pts in zip(prompts, v_pts, strict=True) for pt in pts]
    v_sc = vl.score([p for p, _ in pairs], [c for _, c in pairs], k)
    h_sc = hf.score([p for p, _ in pairs], [c for _, c in pairs], k)
    diff_score, top1_equal, positions, id_overlap = 0.0, 0, 0, []
    for a, b in zip(v_sc, h_sc, strict=True):
        diff_score = max(diff_score, float(np.abs(a.token_logprobs - b.token_logprobs).max()))
        top1_equal += int((a.topk_ids[:, 0] == b.topk_ids[:, 0]).sum())
        positions += len(a.token_logprobs)
        for t in range(len(a.token_logprobs)):
            # Compare the log-probs of the ids both top-k hold (ties may order differently).
            common = set(a.topk_ids[t].tolist()) & set(b.topk_ids[t].tolist())
            id_overlap.append(len(common) / k)
            la = dict(zip(a.topk_ids[t].tolist(), a.topk_logprobs[t].tolist(), strict=True))
            lb = dict(zip(b.topk_ids[t].tolist(), b.topk_logprobs[t].tolist(), strict=True))
            for tid in common:
                if la[tid] > -30:  # far-tail entries carry no mass worth comparing
                    diff_score = max(diff_score, abs(la[tid] - lb[tid]))
    # Label log-probs: the greedy PTs the two backends agree on, compared position by position.
    diff_label = 0.0
    for v, h in zip(v_pts, h_pts, strict=True):
        if v[0].token_ids == h[0].token_ids:
            va, ha = v[0], h[0]
            diff_label = max(diff_label, float(np.abs(
                np.asarray(va.sampled_logprobs) - np.asarray(ha.sampled_logprobs)).max()))
            diff_label = max(diff_label, float(np.abs(
                np.asarray(va.topk_logprobs)[:, 0] - np.asarray(ha.topk_logprobs)[:, 0]).max()))
    tokens = sum(len(pt.token_ids) for pts in v_pts for pt in pts)
    print(json.dumps({
        "prompts": len(prompts), "pts_per_prompt": [len(p) for p in v_pts][:3],
        "greedy_equal": greedy_equal, "max_abs_logprob_diff_label": diff_label,
        "max_abs_logprob_diff_score": diff_score, "top1_equal": top1_equal,
        "positions": positions, "min_topk_overlap": min(id_overlap),
        "vllm_engine_start_s": round(engine_s, 1), "vllm_label_s": round(label_s, 2),
        "vllm_labeled_tokens": tokens, "k": k}))
    sys.stdout.flush()


if __name__ == "__main__":  # vLLM's engine must not start on import (spawned processes)
    main()
