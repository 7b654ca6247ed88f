"""The fault-injection harness: run the whole loop, inject faults at seeded random times,
count what happened.

A scenario runs `Supervisor` (real broker, real Ray, demo models) under steady demo traffic,
calls each fault at its time, and at the end reads the labels topic, the dead-letter topic
and the learner's audit log. :class:`Outcome` holds the counts the issue asks for: prompts
in, labeled, trained, lost, duplicates, dead letters, failed HTTP requests, and the time each
fault took to recover (until the hit component made progress again).
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
from kafka import TopicPartition
from online_distill.actors.supervisor import Supervisor

from online_distill.cli.export import read_topic
from online_distill.config import Config, load_config
from online_distill.messages import DeadLetter, LabeledExample, PromptMessage, decode, encode
from online_distill.streams import EmbeddedBroker, KafkaSink, KafkaSource, SinkError
from online_distill.tasks.traffic import DemoTraffic

RESULTS = Path(__file__).resolve().parents[2] / "runs" / "faults"


@dataclass
class Fault:
    """``action(supervisor)`` at ``at_s`` after traffic starts; ``watch`` names the snapshot
    entry (and counter) whose progress marks the recovery, e.g. ("learner", "step")."""

    at_s: float
    name: str
    action: Callable[[Supervisor], None]
    watch: tuple[str, str]
    recovered: Callable[[Supervisor], bool] | None = None
    """Instead of ``watch``: a predicate that is true once the fault is healed."""


@dataclass
class Outcome:
    scenario: str
    prompts_in: int = 0
    labeled: int = 0
    trained: int = 0
    lost: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    faults: int = 0
    http_requests: int = 0
    http_failed: int = 0
    recovery_s: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> str:
        rec = f"{max(self.recovery_s):.1f}" if self.recovery_s else "-"
        return (f"| {self.scenario} | {self.faults} | {self.prompts_in} | {self.labeled} | "
                f"{self.trained} | {self.lost} | {self.duplicates} | {self.dead_letters} | "
                f"{self.http_failed}/{self.http_requests} | {rec} |")

    def save(self) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{self.scenario}.json").write_text(json.dumps(asdict(self), indent=1))
        print("\n" + self.row(), flush=True)


def base_config(run: Path, bootstrap: str, extra: list[str]) -> Config:
    return load_config(None, [
        f"run_dir={run}", f"learner.checkpoint_dir={run}/ckpt", f"gate.weights_dir={run}/w",
        f"kafka.bootstrap_servers={bootstrap}", "kafka.session_timeout_ms=6000",
        "kafka.producer_idempotence=false",  # a Tansu broker, as the embedded one (see config)
        "learner.batch_size=32", "learner.checkpoint_every_steps=1",
        "learner.publish_every_steps=10", "teacher.n_pseudo_targets=2",
        "gate.rolling_probe_size=0",  # nothing held out: every prompt must be trained on
        "critics.enabled=false",  # delivery is under test here, not filtering: every prompt trains
        "metrics.enabled=false", "serve.enabled=false", "demo.enabled=false", *extra])


class Traffic(threading.Thread):
    """Sends ``count`` demo prompts at ``rate`` per second; ``ids`` are what went in.

    ``hold()`` / ``go()`` pause the producer around a broker restart: the producers are the
    users' side, and a prompt they failed to send is not the daemon's to lose."""

    def __init__(self, cfg: Config, bootstrap: str, count: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.cfg, self.bootstrap = cfg, bootstrap
        self.sink = KafkaSink(cfg.kafka, bootstrap, "fault-traffic")
        self.topic, self.count, self.rate = cfg.kafka.prompts_topic, count, rate
        self.ids: list[str] = []
        """The prompts the broker acknowledged: the daemon's to keep."""
        self.refused: list[str] = []
        """Sends the broker did not acknowledge (a client would send them again)."""
        self._pending: list[tuple[str, Any]] = []
        self.running = threading.Event()
        self.running.set()
        self.idle = threading.Event()

    def hold(self) -> None:
        self.running.clear()
        self.idle.wait(10)

    def go(self, new_producer: bool = False) -> None:
        """Carry on; ``new_producer`` after a broker restart (an idempotent producer's
        session does not survive one: its next send fails with a fatal error)."""
        if new_producer:
            self.sink.close()
            self.sink = KafkaSink(self.cfg.kafka, self.bootstrap, "fault-traffic")
        self.idle.clear()
        self.running.set()

    def _flush(self) -> None:
        """Wait for the broker's answers; sort the sent ids into acknowledged and refused."""
        try:
            self.sink.flush(60)
        except SinkError:
            pass  # each send's own outcome is read below
        for pid, handle in self._pending:
            (self.ids if handle.outcome(60) is None else self.refused).append(pid)
        self._pending = []

    def run(self) -> None:
        traffic = DemoTraffic(seed=7)
        start = time.monotonic()
        for i in range(self.count):
            if not self.running.is_set():
                self._flush()
                self.idle.set()
                self.running.wait()
                start = time.monotonic() - i / self.rate
            item = next(traffic)
            msg = PromptMessage(text=item.text, kind=item.problem.kind)
            self._pending.append((msg.id, self.sink.send(self.topic, encode(msg),
                                                         key=msg.id.encode())))
            if len(self._pending) >= 50:
                self._flush()
            time.sleep(max(0.0, start + (i + 1) / self.rate - time.monotonic()))
        self._flush()


class HttpClient(threading.Thread):
    """Sends completions to ``url`` until stopped; counts answers by kind, with times."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop_event = url, threading.Event()
        self.ok = self.not_ready = 0
        self.failed: list[tuple[float, str]] = []

    def run(self) -> None:
        body = json.dumps({"model": "online-distill-student", "prompt": "12+34=",
                           "max_tokens": 4, "temperature": 0}).encode()
        while not self.stop_event.is_set():
            req = urllib.request.Request(self.url + "/v1/completions", data=body,
                                         headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    r.read()
                    self.ok += 1
            except urllib.error.HTTPError as err:
                if err.code == 503 and self.ok == 0:
                    self.not_ready += 1  # before the first promotion: nothing to serve yet
                else:
                    self.failed.append((time.monotonic(), f"HTTP {err.code}"))
            except OSError as err:
                self.failed.append((time.monotonic(), type(err).__name__))
            time.sleep(0.02)


def prompt_id(payload: bytes) -> str:
    """The id of a dead-lettered prompt record, or "" when it never was a prompt."""
    try:
        return decode(payload, PromptMessage).id
    except Exception:  # noqa: BLE001 - malformed input is what dead letters hold
        return ""


def where_lost(cfg: Config, bootstrap: str, lost: set[str]) -> dict[str, str]:
    """For each lost prompt id: its place in the prompts topic (and the teacher group's
    committed offset there), or "not in the prompts topic" (the broker never kept it)."""
    source = KafkaSource(cfg.kafka, bootstrap, "fault-where", [cfg.kafka.prompts_topic],
                         manual_assign=True)
    source.seek({p: 0 for p in source.assignment()})
    found: dict[str, str] = {}
    empty = 0
    try:
        while empty < 3:
            records = source.poll(timeout_s=1.0)
            empty = 0 if records else empty + 1
            for rec in records:
                pid = prompt_id(rec.value)
                if pid in lost:
                    found[pid] = f"partition {rec.partition} offset {rec.offset}"
    finally:
        source.close()
    teacher = KafkaSource(cfg.kafka, bootstrap, "teacher", [cfg.kafka.prompts_topic],
                          manual_assign=True)
    try:
        tps = [TopicPartition(p.topic, p.partition) for p in sorted(teacher.assignment())]
        committed = {tp.partition: teacher._consumer.committed(tp) for tp in tps}
    finally:
        teacher.close()
    return {i: found.get(i, "not in the prompts topic") + f"; teacher committed {committed}"
            for i in sorted(lost)}


def audit(run: Path) -> list[str]:
    path = run / "trained_ids.log"
    return [line.split()[1] for line in path.read_text().splitlines()] if path.exists() else []


def counter(sup: Supervisor, watch: tuple[str, str]) -> float | None:
    """The watched counter now, or None while that actor does not answer."""
    entry = sup.snapshot(timeout_s=5).by_name().get(watch[0])
    value = getattr(entry, watch[1], None)  # None for a Restarting (or unknown) actor
    return float(value) if isinstance(value, (int, float)) else None


def recovery_time(sup: Supervisor, fault: Fault, fired_at: float, timeout_s: float) -> float:
    """Seconds from the fault until its watched counter grows past its first answer after
    the fault. ``ray.kill`` returns before the actor is dead, so that first answer may come
    from the dying instance; a restarted one counts from zero again, so a counter that goes
    down marks a new instance, whose own first answer is the base from then on."""
    first: float | None = None
    prev: float | None = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if fault.recovered is not None:
            if fault.recovered(sup):
                return time.monotonic() - fired_at
            time.sleep(0.5)
            continue
        value = counter(sup, fault.watch)
        if value is not None:
            if first is None or (prev is not None and value < prev):
                first = value
            elif value > first:
                return time.monotonic() - fired_at
            prev = value
        time.sleep(0.5)
    state = sup.snapshot(timeout_s=5).by_name().get(fault.watch[0])
    raise AssertionError(f"{fault.name}: no progress of {fault.watch} within {timeout_s}s; "
                         f"{fault.watch[0]} now: {state}")


def run_scenario(name: str, tmp_path: Path, faults: list[Fault], *, extra: list[str] = (),
                 prompts: int = 600, rate: float = 40.0, serve_client: bool = False,
                 broker: EmbeddedBroker | None = None, recover_s: float = 120,
                 settle_s: float = 240,
                 check: Callable[[Supervisor, Outcome], None] | None = None,
                 on_start: Callable[[Supervisor], None] | None = None) -> Outcome:
    """Run the loop under traffic with ``faults``; returns the counted outcome.

    ``on_start(sup)`` runs once the loop is up, before traffic (e.g. to start a sampler);
    ``check(sup, outcome)`` once every prompt is trained or ``settle_s`` passed."""
    run = tmp_path / "run"
    own = broker is None
    broker = broker or EmbeddedBroker(log_dir=tmp_path / "broker")
    if own:
        broker.start()
    out = Outcome(name, faults=len(faults))
    cfg = base_config(run, broker.bootstrap, list(extra))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    sup = Supervisor(cfg)
    client: HttpClient | None = None
    try:
        loop = sup.start()
        traffic = Traffic(cfg, loop.bootstrap, prompts, rate)
        sup.fault_traffic = traffic  # type: ignore[attr-defined]  # faults may pause it
        if on_start is not None:
            on_start(sup)
        if serve_client and loop.serve_url:
            client = HttpClient(loop.serve_url)
            client.start()
        start = time.monotonic()
        traffic.start()
        for fault in sorted(faults, key=lambda f: f.at_s):
            time.sleep(max(0.0, start + fault.at_s - time.monotonic()))
            fired = time.monotonic()
            fault.action(sup)
            out.recovery_s.append(round(recovery_time(sup, fault, fired, recover_s), 1))
        traffic.join()
        ids = set(traffic.ids)
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline and not ids <= set(audit(run)):
            time.sleep(1)
        if check is not None:
            check(sup, out)
        labels = {decode(v, LabeledExample).prompt_id for v in
                  read_topic(cfg, loop.bootstrap, cfg.kafka.labels_topic, f"f-{name}-l")}
        letters = [decode(v, DeadLetter) for v in
                   read_topic(cfg, loop.bootstrap, cfg.kafka.dead_letter_topic, f"f-{name}-d")]
        trained = audit(run)
        counts = Counter(trained)
        out.prompts_in = len(ids)
        out.extra["refused_by_broker"] = len(traffic.refused)
        out.labeled = len(ids & labels)
        out.trained = len(ids & set(counts))
        dead = {prompt_id(d.payload) for d in letters if d.topic == cfg.kafka.prompts_topic}
        lost = ids - set(counts) - dead
        out.lost = len(lost)
        if lost:
            out.extra["lost_where"] = where_lost(cfg, loop.bootstrap, set(list(lost)[:20]))
        out.duplicates = sum(c - 1 for c in counts.values())
        out.dead_letters = len(letters)
        out.extra["letters_by_type"] = dict(Counter(d.error_type for d in letters))
    finally:
        if client is not None:
            client.stop_event.set()
            client.join(35)
            out.http_requests = client.ok + len(client.failed)
            out.http_failed = len(client.failed)
            out.extra["http_failures"] = [f for _, f in client.failed][:20]
        sup.stop()
        ray.shutdown()
        if own:
            broker.stop()
    out.save()
    return out


def seeded_times(seed: int, count: int, lo: float, hi: float) -> list[float]:
    """``count`` fault times in [lo, hi), seeded, at least 8 s apart (time to recover)."""
    rng = random.Random(seed)
    span = (hi - lo) / count
    return [round(lo + i * span + rng.uniform(0, max(0.0, span - 8)), 1) for i in range(count)]
