"""One online-distill teaching another over the OpenAI-compatible API.

Daemon A serves the demo *teacher* through its own Ray Serve app (the teacher published and
promoted in A's weights store, so A's replicas load it like any student version). Daemon B
runs the whole loop in a subprocess with teacher.backend=openai pointed at A's
/v1/completions: B's teacher stage labels over HTTP (top-k log-probs via `logprobs`), and
B's learner trains a student from those labels.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from up_runner import run_up  # noqa: E402

from online_distill.config import load_config  # noqa: E402
from online_distill.models.loader import load_model  # noqa: E402
from online_distill.tasks.models import DEMO_TEACHER_DIR  # noqa: E402
from online_distill.weights.store import LocalWeightsStore  # noqa: E402

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not become healthy in {timeout_s}s")


def score_over_http(url: str) -> float:
    """Max |difference| of the log-probs A returns for given sequences and HFTeacher's."""
    import numpy as np

    from online_distill.teachers.hf import HFTeacher
    from online_distill.teachers.openai_http import OpenAITeacher

    hf = HFTeacher(str(DEMO_TEACHER_DIR), device="cpu")
    remote = OpenAITeacher(url + "/v1", "demo-teacher", hf.tokenizer, timeout_s=10)
    prompts = [hf.tokenizer(t).input_ids for t in ("12+34=", "7*8=", "503-27=")]
    conts = [hf.tokenizer(t).input_ids[1:] for t in ("64\n", "56", "674")]  # no <bos>
    a, b = remote.score(prompts, conts, 5), hf.score(prompts, conts, 5)
    assert [x.topk_ids.tolist() for x in a] == [x.topk_ids.tolist() for x in b]
    return max(float(np.abs(x.token_logprobs - y.token_logprobs).max())
               for x, y in zip(a, b, strict=True))


def test_a_student_trains_from_another_daemons_serve_endpoint(tmp_path: Path) -> None:
    from online_distill.actors.serve import start_serving, stop_serving

    store = LocalWeightsStore(tmp_path / "teacher-store")
    model, tokenizer = load_model(DEMO_TEACHER_DIR)
    store.promote(store.publish(model, tokenizer, learner_step=0).version, reason="teacher",
                  by="test")
    port = free_port()
    cfg_a = load_config(None, [f"gate.weights_dir={tmp_path / 'teacher-store'}",
                               f"serve.port={port}", "serve.served_model_name=demo-teacher",
                               "metrics.enabled=false", "serve.num_cpus=0.5",
                               "serve.poll_interval_s=0.1", "serve.swap_delay_s=0"])
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        url = start_serving(cfg_a)
        wait_ready(url)
        run = run_up(Path(sys.executable).parent / "online-distill", tmp_path / "b", 90, [
            "teacher.backend=openai", "teacher.model=demo-teacher",
            f"teacher.base_url={url}/v1", "teacher.max_concurrency=4",
            "teacher.batch_size=16", "demo.traffic_rate_per_s=40",
            "learner.publish_every_steps=20"])
        with urllib.request.urlopen(url + "/v1/models", timeout=5) as r:
            served = json.load(r)
        scored = score_over_http(url)
    finally:
        stop_serving()
        ray.shutdown()
    # Scoring over HTTP (echo + logprobs, max_tokens 0) equals the in-process teacher's.
    assert scored < 1e-4
    assert run.returncode == 0, run.output[-4000:]
    print(f"labeled {run.labeled}, learner steps {run.steps}")  # for the notes (-s)
    assert [m["id"] for m in served["data"]] == ["demo-teacher"]
    assert run.labeled >= 300, run.output[-3000:]
    assert run.steps >= 15, run.output[-3000:]
    trained = (tmp_path / "b" / "trained_ids.log").read_text().splitlines()
    assert len(trained) >= 15 * 8
    # B's student learns A's distribution: its loss on A's labels falls as it trains.
    timeline = [json.loads(x) for x in (tmp_path / "b" / "timeline.jsonl").read_text()
                .splitlines()]
    losses = [t["loss"] for t in timeline if t.get("loss") is not None]
    assert len(losses) >= 3 and losses[-1] < 0.8 * losses[0], losses
