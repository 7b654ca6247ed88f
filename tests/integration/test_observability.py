"""Observability end to end: a real Prometheus scrapes a running daemon on the demo.

The daemon (``online-distill up`` on deploy/demo.yaml, OOD feedback on, the drift brought
forward) runs as a user runs it; Prometheus 2.x (Debian package ``prometheus``) is started
by the test on loopback with deploy/prometheus.yml (intervals shortened to 1 s, the target
pointed at this daemon's port) and deploy/alerts.yml. The test then checks that:

- ``promtool check metrics`` accepts the live /metrics;
- every dashboard panel's query returns data;
- after the demo's scheduled drift the drift score crosses its threshold and the drift
  alert fires (read through Prometheus's HTTP API).
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_dashboards import dashboard_queries

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DRIFT_AFTER = 3000  # prompts: about 20 s of demo traffic at 150/s
MAX_PROMPTS = 6000
"""The demo traffic stops here: whatever the learner's speed on this machine, it catches up
with a finite stream, so it trains on the 3,000 post-drift prompts (six drift windows of 500)
by construction, not by keeping up (a clean clone's CI once saw its label lag reach 29,748
and the drift never reach the learner within 420 s)."""
CATCH_UP_S = 1200
"""A bound on the wait for the alert, only hit when the loop is broken: the learner had
this long to train 6,000 prompts (about 90 s on a 2-core machine with the whole loop)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found: `make prometheus` (or apt-get install "
                    "--no-install-recommends prometheus) installs it")
    return path


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return json.loads(r.read())


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    out = get_json(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert out["status"] == "success", (expr, out)
    return list(out["data"]["result"])


def firing(prom: str, name: str) -> list[dict[str, Any]]:
    alerts = get_json(f"{prom}/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"].get("alertname") == name and a["state"] == "firing"]


class Daemon:
    """``online-distill up`` in a subprocess, its output collected by a thread."""

    def __init__(self, run: Path, overrides: list[str]) -> None:
        exe = Path(sys.executable).parent / "online-distill"
        self.proc = subprocess.Popen(
            [str(exe), "up", "--file", "deploy/demo.yaml", "--duration", "0", *overrides],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        threading.Thread(target=lambda: [self.lines.put(x) for x in stdout], daemon=True).start()

    def read(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def start_prometheus(tmp: Path, metrics_port: int) -> tuple[subprocess.Popen[bytes], str]:
    """Prometheus with the repo's scrape config and alert rules, on a free loopback port."""
    cfg = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    cfg["global"]["scrape_interval"] = "1s"
    cfg["global"]["evaluation_interval"] = "1s"
    cfg["rule_files"] = [str(ROOT / "deploy/alerts.yml")]
    [job] = cfg["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    proc = subprocess.Popen(
        [need("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("wb"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=5) as r:  # noqa: S310
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    pytest.fail("prometheus did not become ready:\n" + (tmp / "prometheus.log").read_text())


def serve_traffic(base: str, stop: threading.Event, codes: list[int]) -> None:
    """Completions at a steady pace, plus a bad request now and then (a 400)."""
    n = 0
    while not stop.wait(0.2):
        n += 1
        body = ({"model": "nope", "prompt": "1+1="} if n % 10 == 0 else
                {"model": "online-distill-student", "prompt": "12+34=", "max_tokens": 4,
                 "temperature": 0})
        req = urllib.request.Request(f"{base}/v1/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback
                codes.append(r.status)
        except urllib.error.HTTPError as err:
            codes.append(err.code)
        except OSError:
            codes.append(-1)  # not up yet


def dead_letter_one(bootstrap: str, topic: str) -> None:
    """A record that is no prompt in any shape on the prompts topic (not UTF-8: plain text
    and JSON objects are prompts there): the teacher dead-letters it."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    producer.send(topic, b"\xff\xfe this is not a prompt message")
    producer.flush(30)
    producer.close()


def test_prometheus_scrapes_the_demo_dashboards_have_data_and_drift_alert_fires(
        tmp_path: Path) -> None:
    need("promtool")
    metrics_port, serve_port = free_port(), free_port()
    run = tmp_path / "run"
    daemon = Daemon(run, [
        f"run_dir={run}", f"learner.checkpoint_dir={run}/ckpt", f"gate.weights_dir={run}/w",
        f"metrics.port={metrics_port}", f"serve.port={serve_port}", "ood.enabled=true",
        "ood.min_window=100", f"demo.drift_after_prompts={DRIFT_AFTER}",
        f"demo.max_prompts={MAX_PROMPTS}",
        "learner.checkpoint_every_steps=1000"])
    prom_proc = None
    stop = threading.Event()
    codes: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while "online-distill up: broker" not in daemon.read():
            assert daemon.proc.poll() is None and time.monotonic() < deadline, daemon.read()
            time.sleep(0.5)
        bootstrap = daemon.read().split("online-distill up: broker ", 1)[1].split(",", 1)[0]
        prom_proc, prom = start_prometheus(tmp_path, metrics_port)
        threading.Thread(target=serve_traffic, args=(f"http://127.0.0.1:{serve_port}", stop,
                                                     codes), daemon=True).start()
        dead_letter_one(bootstrap, "od.prompts")

        # The live endpoint passes promtool's lint.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",  # noqa: S310
                                    timeout=10) as r:
            text = r.read()
        lint = subprocess.run([need("promtool"), "check", "metrics"], input=text,
                              capture_output=True, timeout=30)
        assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), (
            lint.stdout, lint.stderr)

        # The scheduled drift: the alert fires once the learner has trained past it (the
        # traffic is finite, so it gets there however far behind it is).
        deadline = time.monotonic() + CATCH_UP_S
        fired: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not fired:
            assert daemon.proc.poll() is None, daemon.read()[-3000:]
            time.sleep(2)
            drifted = query(prom, "max(online_distill_messages_out_total{stage=\"producer\"})")
            if drifted and float(drifted[0]["value"][1]) > DRIFT_AFTER:
                fired = [a for a in firing(prom, "OnlineDistillDriftDetected")
                         if a["labels"]["signal"] in ("energy", "tokens")]
        assert fired, (f"no drift alert on energy or tokens within {CATCH_UP_S} s of a "
                       f"finite stream ({MAX_PROMPTS} prompts, drift after {DRIFT_AFTER}); "
                       "drift scores and consumer lags:\n"
                       + json.dumps(query(prom, "online_distill_drift_score"))
                       + json.dumps(query(prom, "online_distill_consumer_lag_messages"))
                       + daemon.read()[-2000:])
        # A detection (its score above the threshold) started on that signal; the counter
        # holds it even when the detection was shorter than a scrape.
        started = query(prom, 'max(online_distill_drift_events_total{signal="'
                        + fired[0]["labels"]["signal"] + '"})')
        assert float(started[0]["value"][1]) >= 1, started

        # Every dashboard panel query returns data (waiting for the slow ones: feedback
        # rounds). Annotation queries mark events (a refusal, a drift) and are empty between
        # them; the unit test parses and name-checks those.
        queries = [q for q in dashboard_queries() if not q[1].startswith("annotation")]
        assert len(queries) >= 30
        missing = queries
        deadline = time.monotonic() + 120
        while missing and time.monotonic() < deadline:
            missing = [(f, title, expr) for f, title, expr in missing if not query(prom, expr)]
            if missing:
                time.sleep(3)
        assert not missing, "queries without data:\n" + "\n".join(
            f"{f} / {title}: {expr}" for f, title, expr in missing)
        assert 200 in codes and 404 in codes
    finally:
        stop.set()
        rc = daemon.stop()
        if prom_proc is not None:
            prom_proc.terminate()
            prom_proc.wait(timeout=30)
    assert rc == 0, daemon.read()[-3000:]
