"""The metric definitions, their updates from stage stats, and the hub that merges processes."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections import deque
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from online_distill.cli.status import status_line
from online_distill.gate.stage import GateSnapshot
from online_distill.learner.stats import LearnerSnapshot, WorkerReport
from online_distill.metrics import (
    PREFIX,
    GateMetrics,
    ServeMetrics,
    StageMetrics,
    TeacherMetrics,
    metric_names,
)
from online_distill.metrics.hub import MetricsHub
from online_distill.ood.stats import OODSnapshot
from online_distill.report.snapshot import LoopSnapshot, Restarting
from online_distill.report.timeline import timeline_record
from online_distill.teachers.stats import TeacherSnapshot
from tests.unit.rebuild import rebuilt


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


def _loop_snapshot() -> LoopSnapshot:
    return LoopSnapshot(
        teachers=(TeacherSnapshot(labeled=10, lag=3), Restarting("no answer")),
        learner=LearnerSnapshot(step=5, loss=float("nan"), lag=7,
                                live={"kl": 0.5, "agreement": 0.75},
                                drift={"scores": {"energy": 0.3}}),
        gate=GateSnapshot(counts={"promoted": 2, "refused": 1}))


def test_timeline_record_from_a_snapshot() -> None:
    rec = timeline_record(1000.0, 12.0, 40, _loop_snapshot(), 2, {"head": 0.5}, 4.0, False)
    assert rec["labeled"] == 10 and rec["prompt_lag"] == 3 and rec["label_lag"] == 7
    assert rec["loss"] is None  # not finite: null, so the line stays valid JSON
    assert rec["kl"] == 0.5 and rec["agreement"] == 0.75
    assert rec["promoted"] == 2 and rec["refused"] == 1 and rec["served_version"] == 2
    assert rec["drift"] == {"scores": {"energy": 0.3}}
    assert json.loads(json.dumps(rec)) == rec  # one JSON line, same fields as ever
    assert set(rec) == {"at", "elapsed_s", "prompts_sent", "labeled", "prompt_lag",
                        "label_lag", "step", "loss", "served_version", "served_scores",
                        "freshness_s", "promoted", "refused", "kl", "agreement",
                        "demo_drifted", "drift", "skipped_late", "feedback_share",
                        "feedback_kinds"}
    assert rec["feedback_share"] is None and rec["feedback_kinds"] is None  # OOD off
    with_ood = dataclasses.replace(_loop_snapshot(), learner=LearnerSnapshot(
        by_origin={"traffic": 90, "feedback": 10}), ood=OODSnapshot(kept_by_kind={"mul": 4}))
    rec = timeline_record(1000.0, 12.0, 40, with_ood, 2, {}, None, False)
    assert rec["feedback_share"] == pytest.approx(0.1) and rec["feedback_kinds"] == {"mul": 4}


def test_timeline_record_while_the_learner_and_gate_restart() -> None:
    snap = LoopSnapshot(teachers=(TeacherSnapshot(labeled=4, lag=-1),),
                        learner=Restarting("RayActorError"), gate=Restarting("no answer"))
    rec = timeline_record(1000.0, 12.0, 40, snap, None, {}, None, None)
    assert rec["labeled"] == 4 and rec["prompt_lag"] is None  # lag not known yet
    assert rec["label_lag"] is None and rec["step"] is None and rec["loss"] is None
    assert rec["drift"] is None and rec["kl"] is None
    assert rec["promoted"] == 0 and rec["refused"] == 0


def test_snapshots_cross_ray_as_they_are() -> None:
    """What crosses Ray: frozen, slotted, plain values; equal after a round trip."""
    snap = _loop_snapshot()
    snap = dataclasses.replace(  # a finite loss: NaN equals nothing, itself included
        snap, learner=dataclasses.replace(snap.learner, loss=0.25),
        ood=OODSnapshot(kept=3, generated=8, dropped={"noise": 5}))
    assert rebuilt(snap) == snap
    report = WorkerReport(LearnerSnapshot(step=2, published=(1,)), losses=(0.5, 0.4))
    assert rebuilt(report) == report
    for s in (snap, snap.learner, snap.gate, snap.ood, snap.teachers[0], report):
        assert not hasattr(s, "__dict__")  # slotted
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(s, dataclasses.fields(s)[0].name, None)
    assert snap.by_name().keys() == {"teacher-0", "teacher-1", "learner", "gate", "ood"}
    assert snap.restarting() == ["teacher-1"] and snap.labeled == 10


def test_status_line_reads_the_snapshot() -> None:
    probe = SimpleNamespace(scores={"head": 0.5}, version=2, freshness_s=lambda: 4.0,
                            demo=True)
    snap = dataclasses.replace(_loop_snapshot(), ood=OODSnapshot(kept=3, generated=8))
    prev: dict[str, float] = {}
    line = status_line(10.0, 40, snap, probe, prev)  # type: ignore[arg-type]
    assert "labeled 10 (" in line and "lag prompts 3 labels 7" in line and "step 5" in line
    assert "served v2 head=50% fresh 4s (promoted 2 refused 1)" in line
    assert "feedback kept 3 of 8" in line and line.endswith("restarting: teacher-1")
    assert prev == {"t": 10.0, "sent": 40, "labeled": 10, "step": 5, "step_t": 10.0}
    down = LoopSnapshot(teachers=(), learner=Restarting("no answer"),
                        gate=Restarting("no answer"))
    line = status_line(20.0, 40, down, probe, prev)  # type: ignore[arg-type]
    assert "labels -  step - loss None" in line
    assert line.endswith("restarting: learner,gate")
    fed = dataclasses.replace(_loop_snapshot(), ood=OODSnapshot(
        kept=12, generated=20, kept_by_kind={"add2": 2, "mul": 10}),
        learner=LearnerSnapshot(step=5, by_origin={"traffic": 95, "feedback": 5}))
    line = status_line(30.0, 40, fed, probe, prev)  # type: ignore[arg-type]
    assert "feedback kept 12 of 20 (mul 10 add2 2), 5% of trained" in line


def test_status_line_says_why_nothing_trains_and_shows_agreement_without_the_demo() -> None:
    """No step for 30 s: what the learner waits for and what it dropped, by reason. Without
    the demo task the served student's line is its agreement on held-out traffic."""
    probe = SimpleNamespace(scores={"rolling": 0.8}, version=3, freshness_s=lambda: None,
                            demo=False)
    learner = LearnerSnapshot(step=0, pending=9, critic_dropped=391, held_out=8,
                              duplicates=2, empty=1)
    snap = dataclasses.replace(_loop_snapshot(), learner=learner)
    prev: dict[str, float] = {}
    line = status_line(5.0, 40, snap, probe, prev, batch_size=32)  # type: ignore[arg-type]
    assert "agreement rolling=80%" in line and "no step" not in line
    line = status_line(40.0, 40, snap, probe, prev, batch_size=32)  # type: ignore[arg-type]
    assert ("no step for 35s: 9 fresh waiting of a batch of 32; not trained: critics 391, "
            "held out 8, duplicates 2, empty 1") in line
    moved = dataclasses.replace(snap, learner=dataclasses.replace(learner, step=1))
    assert "no step" not in status_line(45.0, 40, moved, probe, prev)  # type: ignore[arg-type]


def test_report_reads_the_files_the_loop_writes() -> None:
    from online_distill.report import run_log, timeline
    from online_distill.weights import store

    assert run_log.VERDICTS == store.VERDICTS
    assert run_log.PROMOTIONS == store.HISTORY
    assert run_log.TIMELINE == timeline.TIMELINE


def test_gate_stage_snapshot_counts_verdicts_not_reasons(tmp_path) -> None:
    from online_distill.gate.gate import Gate
    from online_distill.gate.holdout import HoldoutBuffer
    from online_distill.gate.stage import GateStage
    from online_distill.streams import MemoryLog, MemorySource
    from online_distill.weights.store import LocalWeightsStore

    store = LocalWeightsStore(tmp_path)
    gate = Gate(store, [], tolerance=0.01, nll_tolerance=0.1)
    stage = GateStage(MemorySource(MemoryLog(), ["labels"], group="gate"),
                      HoldoutBuffer(share=0.5, fixed_size=8, rolling_size=100), gate, store,
                      keep_versions=3)
    assert stage.snapshot() == GateSnapshot()  # nothing served, judged or held out yet
    gate.counts.update({"promoted": 2, "refused": 1, "refused/exact_match": 1})
    snap = stage.snapshot()
    assert snap.judged == 3 and snap.counts["refused/exact_match"] == 1
    assert snap.counts is not gate.counts and snap.last is None


def test_the_summary_names_references_only_for_the_probes_they_scored(capsys) -> None:  # type: ignore[no-untyped-def]
    from online_distill.cli.status import print_summary
    from online_distill.cli.up import UpSummary

    summary = UpSummary(prompts_sent=40, labeled=10, learner=LearnerSnapshot(step=5),
                        gate=GateSnapshot(counts={"promoted": 1}), student_version=1,
                        student={"head": 0.5, "tail": 0.25, "post_drift": 0.125}, seconds=9.0)
    print_summary(summary, {"teacher": {"head": 1.0, "tail": 1.0}})
    out = capsys.readouterr().out
    assert "head exact-match: 50.0% (teacher 100.0%)" in out
    assert "post_drift exact-match: 12.5%\n" in out  # no reference: printed alone
