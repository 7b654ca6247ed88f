"""The metric definitions, their updates from stage stats, and the hub that merges processes."""

from __future__ import annotations

import shutil
import subprocess
from collections import deque
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from online_distill.metrics import (
    PREFIX,
    GateMetrics,
    ServeMetrics,
    StageMetrics,
    TeacherMetrics,
    metric_names,
)
from online_distill.metrics.hub import MetricsHub
from online_distill.report.timeline import timeline_record


def samples(registry_or_text: CollectorRegistry | str) -> dict[tuple[str, tuple], float]:
    text = (registry_or_text if isinstance(registry_or_text, str)
            else generate_latest(registry_or_text).decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_names_follow_the_conventions() -> None:
    names = metric_names()
    assert len(names) >= 50
    for name in names:
        assert name.startswith(PREFIX), name
    assert "online_distill_messages_in_total" in names
    assert "online_distill_serve_request_duration_seconds" in names  # a histogram
    assert not any(n.endswith("_created") for n in names)


def test_stage_counters_follow_cumulative_stats_and_never_go_back() -> None:
    reg = CollectorRegistry()
    m = StageMetrics(reg, "teacher")
    m.update({"od.prompts": 10}, {"od.labels": 9}, {("od.prompts", "truncated"): 1},
             {"od.prompts": 4})
    m.update({"od.prompts": 25}, {"od.labels": 24}, {("od.prompts", "truncated"): 1},
             {"od.prompts": 0})
    s = samples(reg)
    key = (("stage", "teacher"), ("topic", "od.prompts"))
    assert s[("online_distill_messages_in_total", key)] == 25
    assert s[("online_distill_messages_out_total",
              (("stage", "teacher"), ("topic", "od.labels")))] == 24
    assert s[("online_distill_dead_letters_total", (("reason", "truncated"), ("stage", "teacher"),
                                                    ("topic", "od.prompts")))] == 1
    assert s[("online_distill_consumer_lag_messages", key)] == 0
    m.update({"od.prompts": 20}, {}, {}, None)  # a lower total (never happens) changes nothing
    assert samples(reg)[("online_distill_messages_in_total", key)] == 25


def test_teacher_histograms_drain_the_observation_queues() -> None:
    reg = CollectorRegistry()
    m = TeacherMetrics(reg)
    stats = SimpleNamespace(batch_seconds=deque([0.2, 0.3]), queue_seconds=deque([1.0]),
                            by_origin={"traffic": 5, "feedback": 2}, labeled_tokens=40,
                            pseudo_targets=25, retries=1)
    m.update(stats)
    m.update(stats)  # the queues are empty now: nothing observed twice
    s = samples(reg)
    assert s[("online_distill_teacher_batch_duration_seconds_count", ())] == 2
    assert s[("online_distill_teacher_batch_duration_seconds_sum", ())] == pytest.approx(0.5)
    assert s[("online_distill_teacher_prompts_labeled_total", (("source", "feedback"),))] == 2
    assert s[("online_distill_teacher_pseudo_targets_total", ())] == 25
    assert not stats.batch_seconds


def test_gate_metrics_count_decisions_and_reasons_and_freshness() -> None:
    reg = CollectorRegistry()
    m = GateMetrics(reg)
    s = samples(reg)  # the decisions exist at 0 before any verdict
    assert s[("online_distill_versions_judged_total", (("decision", "refused"),))] == 0
    verdict = {"decision": "refused", "seconds": 2.0,
               "scores": {"head": {"exact_match": 0.5}}}
    m.update({"promoted": 3, "refused": 1, "refused/head/exact_match": 1}, [verdict], 3, 4,
             newest_prompt_at=100.0, served_scores={"head": {"exact_match": 0.6}}, holdout=7,
             now=112.5)
    s = samples(reg)
    assert s[("online_distill_versions_judged_total", (("decision", "promoted"),))] == 3
    assert s[("online_distill_versions_refused_total", (("reason", "head/exact_match"),))] == 1
    assert s[("online_distill_candidate_score", (("metric", "exact_match"),
                                                  ("probe", "head")))] == 0.5
    assert s[("online_distill_served_score", (("metric", "exact_match"),
                                               ("probe", "head")))] == 0.6
    assert s[("online_distill_freshness_seconds", ())] == 12.5
    assert s[("online_distill_promoted_version", ())] == 3
    assert s[("online_distill_gate_duration_seconds_count", ())] == 1


def _serve_text(code: int, version: int) -> str:
    reg = CollectorRegistry()
    m = ServeMetrics(reg)
    m.observe_request(code, 0.02)
    m.update(version, SimpleNamespace(swaps=1, failed_loads=0, load_seconds=deque([0.4])))
    return generate_latest(reg).decode()


def test_hub_merges_processes_with_a_process_label_and_forgets_stale_ones() -> None:
    now = [0.0]
    hub = MetricsHub(stale_after_s=10, clock=lambda: now[0])
    hub.push("serve-a", _serve_text(200, 3))
    hub.push("serve-b", _serve_text(400, 4))
    reg = CollectorRegistry()
    reg.register(hub)  # type: ignore[arg-type]
    text = generate_latest(reg).decode()
    s = samples(text)
    assert s[("online_distill_served_version", (("process", "serve-a"),))] == 3
    assert s[("online_distill_serve_requests_total", (("code", "400"),
                                                      ("process", "serve-b")))] == 1
    assert s[("online_distill_process_up", (("process", "serve-b"),))] == 1
    # Each family once (HELP/TYPE), whatever the number of processes.
    assert text.count("# TYPE online_distill_served_version gauge") == 1
    now[0] = 8.0
    hub.push("serve-a", _serve_text(200, 5))
    now[0] = 15.0  # serve-b last pushed 15 s ago: gone, with its up series
    s = samples(generate_latest(reg).decode())
    assert s[("online_distill_served_version", (("process", "serve-a"),))] == 5
    assert ("online_distill_served_version", (("process", "serve-b"),)) not in s
    assert ("online_distill_process_up", (("process", "serve-b"),)) not in s
    assert hub.processes() == ["serve-a"]


def test_hub_output_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: `make prometheus` installs it (Debian prometheus)")
    hub = MetricsHub()
    hub.push("serve-a", _serve_text(200, 3))
    reg = CollectorRegistry()
    StageMetrics(reg, "teacher").update({"od.prompts": 3}, {}, {}, {"od.prompts": 1})
    hub.push("teacher-0", generate_latest(reg).decode())
    out = CollectorRegistry()
    out.register(hub)  # type: ignore[arg-type]
    lint = subprocess.run([promtool, "check", "metrics"], input=generate_latest(out),
                          capture_output=True, timeout=30)
    assert lint.returncode == 0 and not lint.stdout and not lint.stderr, lint


def test_timeline_record_from_a_snapshot() -> None:
    snap = {"teacher-0": {"labeled": 10, "lag": 3}, "teacher-1": {"error": "no answer"},
            "learner": {"step": 5, "loss": float("nan"), "lag": 7,
                        "live": {"kl": 0.5, "agreement": 0.75},
                        "drift": {"scores": {"energy": 0.3}}},
            "gate": {"counts": {"promoted": 2, "refused": 1}}}
    rec = timeline_record(1000.0, 12.0, 40, snap, 2, {"head": 0.5}, 4.0, False)
    assert rec["labeled"] == 10 and rec["prompt_lag"] == 3 and rec["label_lag"] == 7
    assert rec["loss"] is None  # not finite: null, so the line stays valid JSON
    assert rec["kl"] == 0.5 and rec["agreement"] == 0.75
    assert rec["promoted"] == 2 and rec["refused"] == 1 and rec["served_version"] == 2
    assert rec["drift"] == {"scores": {"energy": 0.3}}


def test_report_reads_the_files_the_loop_writes() -> None:
    from online_distill.report import run_log, timeline
    from online_distill.weights import store

    assert run_log.VERDICTS == store.VERDICTS
    assert run_log.PROMOTIONS == store.HISTORY
    assert run_log.TIMELINE == timeline.TIMELINE
