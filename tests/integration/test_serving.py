"""Ray Serve for real: hot swaps under load, the gate in front, rollback, OpenAI clients."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import ray
import torch

from online_distill.config import load_config
from online_distill.gate import Gate, TaskProbe
from online_distill.models.loader import load_model
from online_distill.tasks.models import DEMO_TEACHER_DIR
from online_distill.tasks.probes import probe_set
from online_distill.weights.store import store_for

pytestmark = pytest.mark.integration
NAME = "online-distill-student"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from online_distill.actors.serve import start_serving, stop_serving

    root = tmp_path_factory.mktemp("serve")
    cfg = load_config(None, [f"gate.weights_dir={root / 'weights'}", f"serve.port={free_port()}",
                             "serve.num_replicas=2", "serve.num_cpus=0.25",
                             "serve.swap_delay_s=0.5", "serve.poll_interval_s=0.1"])
    store = store_for(cfg)
    teacher, tok = load_model(DEMO_TEACHER_DIR)
    store.publish(teacher, tok, learner_step=0)
    store.promote(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        url = start_serving(cfg)
        yield cfg, store, url, (teacher, tok)
    finally:
        stop_serving()
        ray.shutdown()


def nudged(model, seed: int, scale: float = 1e-4):
    """A copy of ``model`` with tiny noise: another version that answers the same."""
    import copy

    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return out


class Client(threading.Thread):
    """Sends requests one after another; records (sent at, status, version, header)."""

    def __init__(self, url: str, stop: threading.Event, prompt: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.prompt = url, stop, prompt
        self.seen: list[tuple[float, int, int | None, str | None]] = []
        self.failures: list[str] = []

    def run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.stop.is_set():
                sent = time.time()
                try:
                    r = http.post(f"{self.url}/v1/completions", json={
                        "model": NAME, "prompt": self.prompt, "max_tokens": 6,
                        "temperature": 0})
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                body = r.json()
                self.seen.append((sent, r.status_code, body.get("version"),
                                  r.headers.get("x-model-version")))


def served_by_all(clients: list[Client], version: int, what: str, timeout_s: float = 90) -> None:
    """Wait until every client's latest response came from ``version`` (then a few more)."""
    deadline = time.monotonic() + timeout_s
    while not all(c.seen and c.seen[-1][2] == version for c in clients):
        assert time.monotonic() < deadline, f"{what} not served to every client in {timeout_s}s"
        time.sleep(0.2)
    marks = [len(c.seen) for c in clients]
    while any(len(c.seen) < m + 2 for c, m in zip(clients, marks, strict=True)):
        assert time.monotonic() < deadline, f"clients stalled after {what}"
        time.sleep(0.1)


def test_promotions_under_load_fail_nothing_and_never_go_backwards(served) -> None:
    cfg, store, url, (teacher, tok) = served
    gate = Gate(store, [TaskProbe(n, probe_set(n, size=30)) for n in ("head", "tail")],
                tolerance=0.01, nll_tolerance=0.1)
    stop = threading.Event()
    clients = [Client(url, stop, p) for p in ("12+34=", "47+38=", "9+90=", "55+5=")]
    for c in clients:
        c.start()
    promoted, damaged_version = [], None
    try:
        time.sleep(2.0)
        for i in range(6):
            if i == 2:  # a damaged candidate: refused, never served
                bad = nudged(teacher, seed=99, scale=0.5)
                damaged_version = store.publish(bad, tok, learner_step=100 + i).version
                verdict = gate.step()
                assert verdict.decision == "refused", verdict
            store.publish(nudged(teacher, seed=i), tok, learner_step=10 * (i + 1))
            verdict = gate.step()
            assert verdict.decision == "promoted", verdict
            promoted.append(verdict.version)
            # Wait for the swap rather than sleep a fixed time: a slow machine swaps later.
            served_by_all(clients, verdict.version, what=f"version {verdict.version}")
        before = store.promoted()
        rolled_to = store.rollback()
        rollback_at = time.time()
        served_by_all(clients, rolled_to, what=f"the rollback to {rolled_to}")
    finally:
        stop.set()
        for c in clients:
            c.join(60)
    assert len(promoted) >= 5 and rolled_to == promoted[-2] and before == promoted[-1]
    seen_versions: set[int] = set()
    for c in clients:
        assert c.failures == [] and c.seen, c.failures[:3]
        assert {s for _, s, _, _ in c.seen} == {200}
        assert all(str(v) == h for _, _, v, h in c.seen)
        versions = [v for _, _, v, _ in c.seen]
        seen_versions |= set(versions)
        assert damaged_version not in versions
        # Never backwards, except once: at the explicit rollback, to its target.
        drops = [(a, b) for a, b in zip(versions, versions[1:], strict=False) if b < a]
        assert drops == [(before, rolled_to)], drops
        first_drop = next(t for (t, _, v, _), prev in zip(c.seen[1:], versions, strict=False)
                          if v < prev)
        assert first_drop >= rollback_at
        # Within one swap: the last responses are all the rollback target.
        assert versions[-1] == rolled_to
    assert set(promoted) <= seen_versions
    total = sum(len(c.seen) for c in clients)
    print(f"\n{total} requests from {len(clients)} clients, 0 failed; "
          f"versions served: {sorted(seen_versions)}")


def test_openai_client_gets_text_and_logprobs(served) -> None:
    from openai import OpenAI

    _, store, url, _ = served
    client = OpenAI(base_url=f"{url}/v1", api_key="not-needed")
    r = client.completions.create(model=NAME, prompt="12+34=", max_tokens=6, temperature=0,
                                  logprobs=3)
    choice = r.choices[0]
    assert choice.text == "64" and choice.finish_reason == "stop"  # 46 reversed; "\n" ends
    lp = choice.logprobs
    assert lp.tokens == ["6", "4"] and len(lp.top_logprobs[0]) == 3
    assert lp.token_logprobs[0] == max(lp.top_logprobs[0].values())
    assert r.usage.completion_tokens == 3 and r.model == NAME
    batch = client.completions.create(model=NAME, prompt=["1+1=", "2+2="], max_tokens=4,
                                      temperature=0, n=2)
    assert [c.text for c in batch.choices] == ["2", "2", "4", "4"]
    assert [m.id for m in client.models.list().data] == [NAME]


def test_bad_requests_get_clear_4xx(served) -> None:
    cfg, _, url, _ = served
    s = cfg.serve
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("/v1/completions", json={"model": NAME, "prompt": "1+1=",
                                               "max_tokens": s.max_tokens_cap + 1})
        assert r.status_code == 400 and str(s.max_tokens_cap) in r.json()["error"]["message"]
        assert r.headers["x-model-version"].isdigit()
        r = http.post("/v1/completions", json={"model": NAME, "prompt": 5})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        r = http.post("/v1/completions", json={"model": NAME, "prompt": "x" * 10},
                      headers={"content-type": "application/json"})
        assert r.status_code == 200
        r = http.post("/v1/completions", content=b'{"model": "' + b"x" * s.max_body_bytes + b'"}')
        assert r.status_code == 413
        r = http.post("/v1/completions", json={"model": "gpt-4", "prompt": "1+1="})
        assert r.status_code == 404 and NAME in r.json()["error"]["message"]
        r = http.post("/v1/completions", json={"model": NAME,
                                               "prompt": "1" * (s.max_prompt_chars + 1)})
        assert r.status_code == 400 and str(s.max_prompt_chars) in r.json()["error"]["message"]
        r = http.post("/v1/completions", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        doc = http.get("/openapi.json").json()
        assert "/v1/completions" in doc["paths"] and "/v1/models" in doc["paths"]
        health = http.get("/healthz")
        assert health.status_code == 200 and health.json()["version"] >= 1
