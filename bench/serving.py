"""Serving latency, swap cost, swap propagation and freshness, measured side by side.

1. Latency: the same requests (demo prompts, greedy, ``--max-tokens``) one at a time,
   (a) bare ``model.generate`` in this process (1 thread, like one replica) and (b) through
   Ray Serve's ``/v1/completions`` (HTTP, validation, batching, the engine). Ratio of p50s.
2. Swaps: ``--clients`` concurrent clients for ``--phase-seconds`` with no promotion, then as
   long again with a promotion every ``--promote-every`` seconds. Ratio of p99s, failures.
3. Propagation: for each promotion, seconds from ``promote()`` to the first answer with the
   new version from *every* replica (a response's receive time: an upper bound).
4. Freshness: ``online-distill up`` on the demo for ``--freshness-seconds``; per published
   version, seconds from the median entry time of the prompts it trained on since its parent
   to the moment the first promoted version at or after it took effect; weighted median.
5. Streaming and chat (``--streaming``, alone, on the tiny chat student of
   :mod:`online_distill.models.tiny_chat`): time to the first content chunk and between
   content chunks of streamed chat answers (p50), and the p50 latency of the chat route over
   that of the completions route on the same prompt (the conversation rendered with the
   template, sent as text: the same tokens), requests interleaved one at a time.
6. The Serve hop (``--hop``, alone): bare ``generate``, the engine alone, then the same
   one-at-a-time requests through ``/v1/completions`` under each variant of :data:`HOP_VARIANTS`
   (Ray Serve environment settings, set before ``ray.init`` so the proxy and the replicas
   inherit them, and ``serve.*`` overrides), Ray restarted per variant; a table of p50s and
   their ratio to bare ``generate``.

    .venv/bin/python bench/serving.py [--requests 300] [--freshness-seconds 150]
    .venv/bin/python bench/serving.py --streaming [--stream-requests 100]
    .venv/bin/python bench/serving.py --hop [--requests 300] [--replicas 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import ray
import torch

from online_distill.config import load_config
from online_distill.models.loader import load_model
from online_distill.tasks.models import DEMO_TEACHER_DIR
from online_distill.tasks.traffic import DemoTraffic
from online_distill.weights.store import LocalWeightsStore, store_for

NAME = "online-distill-student"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_prompts(n: int) -> list[str]:
    gen = DemoTraffic({"add2": 0.7, "add3": 0.1, "sub2": 0.1, "mul": 0.1}, seed=11)
    return [item.text for item in gen.take(n)]


@torch.no_grad()
def bare_latencies(model, tok, prompts: list[str], max_tokens: int) -> list[float]:
    out = []
    for p in prompts:
        start = time.perf_counter()
        ids = tok(p, return_tensors="pt")
        gen = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        tok.decode(gen[0, ids.input_ids.shape[1]:], skip_special_tokens=True)
        out.append(time.perf_counter() - start)
    return out


def engine_latencies(model, tok, prompts: list[str], max_tokens: int) -> list[float]:
    """The serving engine in this process: validation-free, no HTTP, no Serve."""
    from online_distill.serving import CompletionEngine, CompletionRequest

    engine = CompletionEngine(model, tok, 1, NAME)
    out = []
    for p in prompts:
        start = time.perf_counter()
        req = CompletionRequest(model=NAME, prompt=p, max_tokens=max_tokens, temperature=0)
        engine.complete(req, [p])
        out.append(time.perf_counter() - start)
    return out


def serve_latencies(url: str, prompts: list[str], max_tokens: int) -> list[float]:
    out = []
    with httpx.Client(timeout=60) as http:
        for p in prompts:
            start = time.perf_counter()
            r = http.post(f"{url}/v1/completions", json={
                "model": NAME, "prompt": p, "max_tokens": max_tokens, "temperature": 0})
            r.raise_for_status()
            out.append(time.perf_counter() - start)
    return out


class Load(threading.Thread):
    """One client: sequential requests; records (sent, received, latency, version, replica)."""

    def __init__(self, url: str, prompts: list[str], max_tokens: int) -> None:
        super().__init__(daemon=True)
        self.url, self.prompts, self.max_tokens = url, prompts, max_tokens
        self.stop = threading.Event()
        self.rows: list[tuple[float, float, float, int, str]] = []
        self.failures = 0

    def run(self) -> None:
        i = 0
        with httpx.Client(timeout=60) as http:
            while not self.stop.is_set():
                p = self.prompts[i % len(self.prompts)]
                i += 1
                sent, t0 = time.time(), time.perf_counter()
                try:
                    r = http.post(f"{self.url}/v1/completions", json={
                        "model": NAME, "prompt": p, "max_tokens": self.max_tokens,
                        "temperature": 0})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if not ok:
                    self.failures += 1
                    continue
                self.rows.append((sent, time.time(), time.perf_counter() - t0,
                                  int(r.headers["x-model-version"]), r.headers["x-replica"]))


def run_load(url: str, prompts: list[str], args: argparse.Namespace,
             promote=None) -> tuple[list[tuple[float, float, float, int, str]], int, list]:
    clients = [Load(url, prompts, args.max_tokens) for _ in range(args.clients)]
    for c in clients:
        c.start()
    promotions = []
    end = time.time() + args.phase_seconds
    while time.time() < end:
        time.sleep(args.promote_every)
        if promote is not None:
            promotions.append(promote())
    for c in clients:
        c.stop.set()
        c.join(60)
    return [r for c in clients for r in c.rows], sum(c.failures for c in clients), promotions


def propagation(rows, promotions: list[tuple[int, float]]) -> list[float]:
    """Per promotion: seconds until every replica had answered with the new version."""
    replicas = {r[4] for r in rows}
    out = []
    for version, at in promotions:
        firsts = [min((r[1] for r in rows if r[4] == rep and r[3] >= version), default=None)
                  for rep in replicas]
        if all(f is not None for f in firsts):
            out.append(max(firsts) - at)
    return out


def freshness(seconds: float, work: Path, overrides: Sequence[str] = ()) -> dict[str, float]:
    run = work / ("fresh" + "-".join(o.replace("=", "_") for o in overrides))
    cmd = [str(Path(sys.executable).parent / "online-distill"), "up", "--file",
           "deploy/demo.yaml", "--duration", str(seconds), f"run_dir={run}",
           f"learner.checkpoint_dir={run}/ckpt", f"gate.weights_dir={run}/w",
           "gate.keep_versions=100000", f"serve.port={free_port()}", *overrides]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   cwd=Path(__file__).resolve().parents[1])
    store = LocalWeightsStore(run / "w")
    history = store.history()
    samples: list[tuple[float, float]] = []  # (seconds, weight)
    for v in store.versions():
        m = store.manifest(v).metrics
        later = [h["effective_at"] for h in history if h["version"] >= v
                 and h["reason"] == "gate"]
        if "prompt_median_at" not in m or not later:
            continue
        samples.append((min(later) - m["prompt_median_at"], m["prompts_trained"]))
    samples.sort()
    total = sum(w for _, w in samples)
    acc, p50 = 0.0, float("nan")
    for s, w in samples:
        acc += w
        if acc >= total / 2:
            p50 = s
            break
    return {"p50": p50, "min": samples[0][0], "max": samples[-1][0],
            "versions": len(store.versions()), "promotions": len(history)}


def stream_timings(http: httpx.Client, url: str, body: dict) -> tuple[float, list[float]]:
    """One streamed chat request: seconds to its first content chunk, and between the next."""
    start = time.perf_counter()
    arrivals = []
    with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:])["choices"]
            if choices and choices[0]["delta"].get("content"):
                arrivals.append(time.perf_counter())
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    return arrivals[0] - start, gaps


def streaming(args: argparse.Namespace) -> dict[str, float | int]:
    """Section 5 (module docstring), on its own Serve app with one replica."""
    from online_distill.actors.serve import start_serving, stop_serving

    from online_distill.models.chat import render_chat
    from online_distill.models.tiny_chat import build_tiny_chat

    work = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    model, tok = load_model(build_tiny_chat(work / "tiny").student)
    cfg = load_config(None, [f"gate.weights_dir={work / 'w'}", f"serve.port={free_port()}",
                             "serve.num_replicas=1", "serve.num_cpus=0.5",
                             "metrics.enabled=false"])
    store = store_for(cfg)
    store.publish(model, tok, learner_step=0)
    store.promote(1)
    conversations = [[{"role": "user", "content": f"What is {a} plus {b}? Is it sunny today?"}]
                     for a, b in zip(range(7, 99, 7), range(3, 99, 5), strict=False)]
    n = args.stream_requests
    first, gaps, chat_s, text_s = [], [], [], []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        url = start_serving(cfg)
        with httpx.Client(timeout=60) as http:
            for i in range(n + 10):  # the first 10 warm up
                messages = conversations[i % len(conversations)]
                common = {"model": NAME, "max_tokens": args.max_tokens * 2, "temperature": 0}
                ttft, between = stream_timings(http, url, {**common, "messages": messages,
                                                           "stream": True})
                t0 = time.perf_counter()
                http.post(f"{url}/v1/chat/completions",
                          json={**common, "messages": messages}).raise_for_status()
                t1 = time.perf_counter()
                http.post(f"{url}/v1/completions", json={
                    **common, "prompt": render_chat(tok, messages)}).raise_for_status()
                t2 = time.perf_counter()
                if i >= 10:
                    first.append(ttft)
                    gaps += between
                    chat_s.append(t1 - t0)
                    text_s.append(t2 - t1)
    finally:
        stop_serving()
        ray.shutdown()
    return {"stream_requests": n, "max_tokens": args.max_tokens * 2,
            "time_to_first_token_p50_ms": 1e3 * statistics.median(first),
            "inter_token_p50_ms": 1e3 * statistics.median(gaps),
            "chat_p50_ms": 1e3 * statistics.median(chat_s),
            "completions_p50_ms": 1e3 * statistics.median(text_s),
            "chat_over_completions_p50": statistics.median(chat_s) / statistics.median(text_s)}


HOP_VARIANTS: list[tuple[str, dict[str, str], list[str]]] = [
    # (name, environment of the Ray processes, serve.* overrides)
    ("default", {}, []),
    ("user code on the replica's main loop", {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"},
     []),
    ("router on the proxy's main loop", {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}, []),
    ("both loops merged", {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
                           "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}, []),
    ("proxy -> replica over gRPC", {"RAY_SERVE_PROXY_USE_GRPC": "1"}, []),
    ("direct ingress (no proxy)", {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}, []),
    ("RAY_SERVE_THROUGHPUT_OPTIMIZED=1", {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, []),
    ("one replica", {}, ["serve.num_replicas=1"]),
    ("throughput-optimized, direct ingress off", {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                                                  "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}, []),
    ("request-path logs buffered", {"RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000"}, []),
    ("throughput-optimized, direct ingress off, one replica",
     {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"},
     ["serve.num_replicas=1"]),
]


def hop(args: argparse.Namespace, prompts: list[str], work: Path
        ) -> list[tuple[str, float]]:
    """Section 6: p50 of the served requests under each variant (Ray restarted per variant)."""
    from online_distill.actors.serve import start_serving, stop_serving

    only = set(args.variants.split(",")) if args.variants else None
    out = []
    for i, (name, env, overrides) in enumerate(HOP_VARIANTS):
        if only is not None and str(i) not in only:
            continue
        cfg = load_config(None, [f"gate.weights_dir={work / 'w'}", f"serve.port={free_port()}",
                                 f"serve.num_replicas={args.replicas}", "serve.num_cpus=0.25",
                                 "metrics.enabled=false", *overrides])
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        print(f"serve: {name} ...", flush=True)
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                url = start_serving(cfg)
                serve_latencies(url, prompts[:30], args.max_tokens)  # warm-up
                out.append((name, statistics.median(serve_latencies(url, prompts,
                                                                    args.max_tokens))))
            except Exception as exc:  # a variant this Ray cannot run: say so, go on
                print(f"  failed: {exc!r}", flush=True)
                out.append((name, float("nan")))
            finally:
                stop_serving()
                ray.shutdown()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return out


def main() -> None:
    from online_distill.actors.serve import start_serving, stop_serving

    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--phase-seconds", type=float, default=20.0)
    ap.add_argument("--promote-every", type=float, default=1.0)
    ap.add_argument("--freshness-seconds", type=float, default=150.0)
    ap.add_argument("--batch-wait-s", type=float, default=None,
                    help="serve.batch_wait_timeout_s (default: the config's)")
    ap.add_argument("--streaming", action="store_true",
                    help="run section 5 only (streaming and the chat route)")
    ap.add_argument("--stream-requests", type=int, default=100)
    ap.add_argument("--hop", action="store_true",
                    help="run section 6 only (the Serve hop: variants side by side)")
    ap.add_argument("--freshness-only", nargs="*", metavar="A=B,C=D", default=None,
                    help="only the demo freshness, once per comma-separated set of config "
                    "overrides, one after another (no set: the defaults)")
    ap.add_argument("--variants", default="",
                    help="with --hop: indices of HOP_VARIANTS to run, e.g. 0,3 (default all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.freshness_only is not None:
        work = Path(tempfile.mkdtemp(prefix="bench-freshness-"))
        for spec in args.freshness_only or [""]:
            overrides = [o for o in spec.split(",") if o]
            print(f"demo loop for {args.freshness_seconds:.0f}s, overrides {overrides}: "
                  f"{json.dumps(freshness(args.freshness_seconds, work, overrides))}",
                  flush=True)
        return
    if args.streaming:
        print(json.dumps(streaming(args), indent=2))
        return
    prompts = demo_prompts(args.requests)
    model, tok = load_model(DEMO_TEACHER_DIR)
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    cfg = load_config(None, [f"gate.weights_dir={work / 'w'}", f"serve.port={free_port()}",
                             f"serve.num_replicas={args.replicas}", "serve.num_cpus=0.25",
                             *([f"serve.batch_wait_timeout_s={args.batch_wait_s}"]
                               if args.batch_wait_s is not None else [])])
    store = store_for(cfg)
    store.publish(model, tok, learner_step=0)
    store.promote(1)
    swaps = 0 if args.hop else int(args.phase_seconds / args.promote_every) + 2
    for i in range(swaps):  # versions to swap to
        nudged = copy.deepcopy(model)
        with torch.no_grad():
            for p in nudged.parameters():
                p.add_(torch.randn_like(p) * 1e-4)
        store.publish(nudged, tok, learner_step=i + 1)
    print(f"bare generate: {len(prompts)} requests ...", flush=True)
    bare_latencies(model, tok, prompts[:20], args.max_tokens)  # warm-up
    bare = bare_latencies(model, tok, prompts, args.max_tokens)
    engine_latencies(model, tok, prompts[:20], args.max_tokens)
    engine = engine_latencies(model, tok, prompts, args.max_tokens)
    if args.hop:
        rows = hop(args, prompts, work)
        b, e = statistics.median(bare), statistics.median(engine)
        print(f"\n{len(prompts)} requests one at a time, max_tokens {args.max_tokens}, "
              f"{args.replicas} replicas unless stated\n")
        print("| variant | p50 ms | ratio to bare generate |\n| --- | ---: | ---: |")
        print(f"| bare generate | {1e3 * b:.1f} | 1.00 |")
        print(f"| engine alone | {1e3 * e:.1f} | {e / b:.2f} |")
        for name, p50 in rows:
            print(f"| serve: {name} | {1e3 * p50:.1f} | {p50 / b:.2f} |")
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        url = start_serving(cfg)
        serve_latencies(url, prompts[:20], args.max_tokens)
        print("serve, one request at a time ...", flush=True)
        served = serve_latencies(url, prompts, args.max_tokens)
        print(f"{args.clients} clients, no swaps ...", flush=True)
        calm, calm_fail, _ = run_load(url, prompts, args)
        next_version = iter(range(2, 10**6))

        def promote() -> tuple[int, float]:
            v = next(next_version)
            at = time.time()
            store.promote(v)
            return v, at

        print(f"{args.clients} clients, a promotion every {args.promote_every}s ...", flush=True)
        swapping, swap_fail, promotions = run_load(url, prompts, args, promote)
    finally:
        stop_serving()
        ray.shutdown()
    prop = propagation(swapping, promotions)
    print(f"demo loop for {args.freshness_seconds:.0f}s (freshness) ...", flush=True)
    fresh = freshness(args.freshness_seconds, work)
    lat = [x[2] for x in calm]
    lat_swap = [x[2] for x in swapping]
    report = {
        "bare_p50_ms": 1e3 * statistics.median(bare), "bare_p99_ms": 1e3 * pct(bare, 0.99),
        "engine_p50_ms": 1e3 * statistics.median(engine),
        "serve_p50_ms": 1e3 * statistics.median(served), "serve_p99_ms": 1e3 * pct(served, 0.99),
        "p50_ratio": statistics.median(served) / statistics.median(bare),
        "p99_ratio": pct(served, 0.99) / pct(bare, 0.99),
        "batch_wait_timeout_s": cfg.serve.batch_wait_timeout_s,
        "throughput_rps_4_clients": len(calm) / args.phase_seconds,
        "load_p99_ms_no_swaps": 1e3 * pct(lat, 0.99),
        "load_p99_ms_swaps": 1e3 * pct(lat_swap, 0.99),
        "swap_p99_ratio": pct(lat_swap, 0.99) / pct(lat, 0.99),
        "requests_under_load": len(calm) + len(swapping), "failed": calm_fail + swap_fail,
        "promotions": len(promotions), "replicas_seen": len({r[4] for r in swapping}),
        "swap_delay_s": cfg.serve.swap_delay_s,
        "promotion_to_all_replicas_s_p50": statistics.median(prop) if prop else None,
        "promotion_to_all_replicas_s_max": max(prop) if prop else None,
        "freshness_s": fresh,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
