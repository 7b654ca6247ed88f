"""serve.capture for real: prompts the served student answers come back as labeled examples
(origin=served); with the broker gone, requests still succeed and the drops are counted.

Real parts: the embedded Tansu broker, Ray Serve with the student app, the shipped demo
teacher labeling through a real teacher stage.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest
import ray

from online_distill.config import load_config
from online_distill.models.loader import load_model
from online_distill.streams import EmbeddedBroker, ensure_topics
from online_distill.tasks.models import DEMO_TEACHER_DIR
from online_distill.weights.store import store_for
from tests.integration.labeling import label_until

pytestmark = pytest.mark.integration
NAME = "online-distill-student"
DEADLINE_S = 180.0
"""Bounds on conditions that hold in seconds here; only reached when something is broken."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ask(http: httpx.Client, url: str, prompts: list[str]) -> None:
    for prompt in prompts:
        r = http.post(f"{url}/v1/completions", json={"model": NAME, "prompt": prompt,
                                                     "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200, r.text


def test_served_prompts_come_back_labeled_and_a_dead_broker_fails_no_request(
        tmp_path: Path) -> None:
    from online_distill.actors.serve import APP_NAME, start_serving, stop_serving
    from ray import serve

    broker = EmbeddedBroker(log_dir=tmp_path / "broker")
    broker.start()
    cfg = load_config(None, [f"gate.weights_dir={tmp_path / 'weights'}",
                             f"serve.port={free_port()}", "serve.capture=1",
                             "kafka.request_timeout_ms=5000", "kafka.session_timeout_ms=6000",
                             f"kafka.consumer_group_prefix=capture-{tmp_path.name}"])
    k = cfg.kafka
    ensure_topics(k, broker.bootstrap)
    store = store_for(cfg)
    model, tok = load_model(DEMO_TEACHER_DIR)
    store.promote(store.publish(model, tok, learner_step=0).version)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        url = start_serving(cfg, broker.bootstrap)
        prompts = [f"{10 + i}+{20 + i}=" for i in range(20)]
        with httpx.Client(timeout=30) as http:
            ask(http, url, prompts)

            # The answered prompts, labeled by a teacher stage like any other traffic.
            labeled, _ = label_until(
                k, broker.bootstrap, lambda got: len(got) >= len(prompts), DEADLINE_S)
            served = {ex.prompt_text: ex for ex in labeled.values()}
            assert set(served) == set(prompts), f"labeled {sorted(served)} of {prompts}"
            assert {ex.origin for ex in served.values()} == {"served"}

            # The broker goes away: every request still answers at once; drops are counted.
            broker.stop()
            start = time.monotonic()
            ask(http, url, [f"{i}+{i}=" for i in range(10)])
            took = time.monotonic() - start
            handle = serve.get_app_handle(APP_NAME)
            stats = handle.capture_stats.remote().result()
            deadline = time.monotonic() + DEADLINE_S
            while stats["dropped"].get("broker", 0) < 10 and time.monotonic() < deadline:
                time.sleep(1.0)
                stats = handle.capture_stats.remote().result()
        print(f"captured {stats['captured']}, dropped {stats['dropped']}; 10 requests with "
              f"the broker down took {took:.2f} s")
        assert stats["captured"] == len(prompts)
        assert stats["dropped"].get("broker", 0) >= 10, stats
    finally:
        stop_serving()
        ray.shutdown()
        broker.stop()
