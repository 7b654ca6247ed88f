"""The Grafana dashboards, the Prometheus scrape config and the alert rules.

Every PromQL expression of grafana/dashboards/*.json (panel targets, rows' nested panels,
annotations) and of deploy/alerts.yml must parse, and may name only metrics the code exports
(:func:`online_distill.metrics.metric_names`) and labels the code defines for them, plus the
labels the metrics hub (``process``) and Prometheus (``job``, ``instance``, ``le`` on histogram
buckets) add. promtool checks the config and the rules, and runs the alerts on synthetic
series.

:func:`dashboard_queries` and :func:`alert_queries` list the expressions for the integration
test that runs them against a real Prometheus.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from online_distill import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"
PROVISIONING = ROOT / "grafana" / "provisioning"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "alerts.yml"

EXPECTED_DASHBOARDS = {"overview.json", "learning.json", "drift.json", "serving.json"}
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
ADDED_LABELS = frozenset({"process", "job", "instance"})
"""Labels on every series: ``process`` from the metrics hub, ``job``/``instance`` from the
scrape."""
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
COUNTER_FUNCTIONS = frozenset({"rate", "irate", "increase", "resets"})
GAUGE_FUNCTIONS = frozenset({"deriv", "delta", "idelta", "predict_linear"})
EXPECTED_ALERTS = {
    "OnlineDistillDriftDetected", "OnlineDistillLagGrowing",
    "OnlineDistillGateRefusingRepeatedly", "OnlineDistillNoPromotion",
    "OnlineDistillDeadLettersRising", "OnlineDistillProcessDown", "OnlineDistillServeErrors",
}
PROMTOOL_MISSING = (
    "promtool (Prometheus's rule and config checker) is not on PATH; `make test` installs it. "
    "Install it with `sudo apt-get install --no-install-recommends prometheus` "
    "(Debian/Ubuntu) or `make prometheus`."
)


# ---------------------------------------------------------------------------------------------
# Where the expressions are


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels (a collapsed row keeps its panels inside it) too."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def _annotation_expr(annotation: dict[str, Any]) -> str | None:
    """A Prometheus annotation's query: top-level ``expr`` (the classic model) or
    ``target.expr`` (what Grafana 10's annotation editor writes)."""
    if annotation.get("builtIn"):
        return None
    expr = annotation.get("expr") or (annotation.get("target") or {}).get("expr")
    return expr or None


def queries_of(board: dict[str, Any], file: str) -> list[tuple[str, str, str]]:
    """(file, title, expr) of every panel target and annotation query of one dashboard."""
    out = []
    for panel in iter_panels(board.get("panels") or []):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                out.append((file, panel.get("title", "?"), target["expr"]))
    for annotation in (board.get("annotations") or {}).get("list") or []:
        expr = _annotation_expr(annotation)
        if expr:
            out.append((file, f"annotation: {annotation.get('name', '?')}", expr))
    return out


def dashboard_paths() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(file, panel or annotation title, PromQL expression) of every query of every
    dashboard, files relative to the repository root."""
    out = []
    for path in dashboard_paths():
        out.extend(queries_of(_load(path), _rel(path)))
    return out


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def alert_queries() -> list[tuple[str, str, str]]:
    """(file, ``alert: <name>``, expression) of every rule of deploy/alerts.yml."""
    return [(_rel(ALERTS), f"alert: {rule.get('alert') or rule.get('record')}", rule["expr"])
            for rule in alert_rules()]


def all_queries() -> list[tuple[str, str, str]]:
    return dashboard_queries() + alert_queries()


# ---------------------------------------------------------------------------------------------
# What the code exports


@cache
def exported_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """Exported family name (as :func:`metrics.metric_names` spells it) -> (type, the labels
    the code gives it), from a registry built the way ``metric_names`` builds it."""
    registry = CollectorRegistry()
    owners: list[object] = [metrics.StageMetrics(registry, "any")]
    owners += [component(registry) for component in metrics.COMPONENTS]
    out = {}
    for owner in owners:
        for value in vars(owner).values():
            if isinstance(value, MetricWrapperBase):
                # prometheus_client keeps a metric's type and label names in these attributes
                # (no public accessor); test_label_table_matches_metric_names catches a change.
                kind = str(value._type)
                name = str(value._name) + ("_total" if kind == "counter" else "")
                out[name] = (kind, frozenset(str(label) for label in value._labelnames))
    return out


def resolve(series: str) -> tuple[str, str, frozenset[str]] | None:
    """A series name -> (exported family name, type, allowed labels); None if unknown."""
    table = exported_metrics()
    if series in table:
        kind, labels = table[series]
        return series, kind, labels | ADDED_LABELS
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and table.get(base, ("",))[0] == "histogram":
            labels = table[base][1] | ADDED_LABELS
            return base, "histogram", labels | ({"le"} if suffix == "_bucket" else set())
    return None


# ---------------------------------------------------------------------------------------------
# Walking the PromQL AST


def _nodes(expr: promql_parser.Expr) -> list[promql_parser.Expr]:
    out: list[promql_parser.Expr] = []
    promql_parser.walk(expr, lambda node: out.append(node))
    return out


def selector_name(selector: promql_parser.VectorSelector) -> str | None:
    if selector.name:
        return str(selector.name)
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
            return str(matcher.value)
    return None


def _matchers(selector: promql_parser.VectorSelector) -> list[promql_parser.Matcher]:
    out = list(selector.matchers.matchers)
    for group in selector.matchers.or_matchers or []:
        out.extend(group)
    return out


def _allowed_labels(expr: promql_parser.Expr) -> set[str]:
    """Labels the series an expression reads may have (union over its selectors)."""
    out = set(ADDED_LABELS)
    for node in _nodes(expr):
        if isinstance(node, promql_parser.VectorSelector):
            resolved = resolve(selector_name(node) or "")
            if resolved:
                out |= resolved[2]
    return out


def problems_of(expr_text: str) -> list[str]:
    """What is wrong with one expression's metric and label names (empty when nothing)."""
    expr = promql_parser.parse(expr_text)
    problems = []
    for node in _nodes(expr):
        if isinstance(node, promql_parser.VectorSelector):
            name = selector_name(node)
            resolved = resolve(name) if name else None
            if name is None:
                problems.append(f"a selector without a metric name: {node.prettify()}")
                continue
            if resolved is None:
                problems.append(f"unknown metric {name!r}")
                continue
            for matcher in _matchers(node):
                if matcher.name != "__name__" and matcher.name not in resolved[2]:
                    problems.append(f"{name} has no label {matcher.name!r} "
                                    f"(it has {sorted(resolved[2])})")
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            allowed = _allowed_labels(node.expr)
            for label in node.modifier.labels:
                if label not in allowed:
                    problems.append(f"{node.op} by/without ({label}): no series under it has "
                                    f"the label {label!r}")
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            matching = node.modifier.matching
            labels = list(matching.labels) if matching is not None else []
            labels += list(node.modifier.group_labels or [])
            allowed = _allowed_labels(node.lhs) | _allowed_labels(node.rhs)
            for label in labels:
                if label not in allowed:
                    problems.append(f"on/ignoring/group ({label}): neither side has the label "
                                    f"{label!r}")
        elif isinstance(node, promql_parser.Call) and node.args:
            function = node.func.name
            argument = node.args[-1] if function != "predict_linear" else node.args[0]
            if not isinstance(argument, promql_parser.MatrixSelector):
                continue
            name = selector_name(argument.vector_selector) or ""
            resolved = resolve(name)
            if resolved is None:
                continue  # reported as unknown above
            is_counter = resolved[1] == "counter" or name != resolved[0]  # or a histogram part
            if function in COUNTER_FUNCTIONS and not is_counter:
                problems.append(f"{function}() of {name}, a {resolved[1]}: use it on counters")
            if function in GAUGE_FUNCTIONS and is_counter:
                problems.append(f"{function}() of {name}, a counter: use rate() or increase()")
    return problems


# ---------------------------------------------------------------------------------------------
# The dashboards


def test_the_four_dashboards_exist() -> None:
    names = {path.name for path in dashboard_paths()}
    assert EXPECTED_DASHBOARDS <= names, f"missing dashboards: {EXPECTED_DASHBOARDS - names}"


def test_dashboards_have_unique_uids() -> None:
    uids: dict[str, str] = {}
    for path in dashboard_paths():
        uid = _load(path).get("uid")
        assert uid, f"{path.name} has no uid"
        assert uid not in uids, f"{path.name} and {uids[uid]} share the uid {uid!r}"
        uids[uid] = path.name


def test_dashboard_model() -> None:
    problems = []
    for path in dashboard_paths():
        board = _load(path)
        where = path.name
        for key, want in (("schemaVersion", 39), ("refresh", "10s"),
                          ("time", {"from": "now-30m", "to": "now"})):
            if board.get(key) != want:
                problems.append(f"{where}: {key} is {board.get(key)!r}, want {want!r}")
        ids: set[object] = set()
        titles: set[str] = set()
        for panel in iter_panels(board.get("panels") or []):
            title = panel.get("title", "?")
            where = f"{path.name} / {title!r}"
            if panel.get("id") in ids:
                problems.append(f"{where}: duplicate panel id {panel.get('id')}")
            ids.add(panel.get("id"))
            grid = panel.get("gridPos") or {}
            if not all(isinstance(grid.get(k), int) for k in "hwxy"):
                problems.append(f"{where}: gridPos needs integer h, w, x, y: {grid}")
            elif grid["x"] + grid["w"] > 24:
                problems.append(f"{where}: gridPos wider than the 24 columns: {grid}")
            if panel.get("type") in ("row", "text"):
                continue
            if title in titles:
                problems.append(f"{where}: duplicate panel title")
            titles.add(title)
            targets = [t for t in panel.get("targets") or [] if t.get("expr")]
            if not targets:
                problems.append(f"{where}: no target with a PromQL expr")
            if panel.get("datasource") != DATASOURCE:
                problems.append(f"{where}: datasource is {panel.get('datasource')}")
            ref_ids = [t.get("refId") for t in panel.get("targets") or []]
            if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
                problems.append(f"{where}: refIds must be set and unique: {ref_ids}")
            for target in panel.get("targets") or []:
                if target.get("datasource") != DATASOURCE:
                    problems.append(f"{where}: target {target.get('refId')} datasource is "
                                    f"{target.get('datasource')}")
                if panel.get("type") == "heatmap" and target.get("format") != "heatmap":
                    problems.append(f"{where}: heatmap target without format heatmap")
        for annotation in (board.get("annotations") or {}).get("list") or []:
            if _annotation_expr(annotation) and annotation.get("datasource") != DATASOURCE:
                problems.append(f"{path.name}: annotation {annotation.get('name')!r} "
                                f"datasource is {annotation.get('datasource')}")
    assert not problems, "\n".join(problems)


def test_panels_are_collected_from_collapsed_rows_and_annotations() -> None:
    board = {
        "panels": [{"type": "row", "title": "r", "collapsed": True, "panels": [
            {"type": "timeseries", "title": "inner", "targets": [{"expr": "a"}]}]},
            {"type": "stat", "title": "outer", "targets": [{"expr": "b"}, {"refId": "B"}]}],
        "annotations": {"list": [{"builtIn": 1, "name": "builtin"},
                                 {"name": "classic", "expr": "c"},
                                 {"name": "new", "target": {"expr": "d"}}]},
    }
    assert queries_of(board, "f") == [("f", "inner", "a"), ("f", "outer", "b"),
                                      ("f", "annotation: classic", "c"),
                                      ("f", "annotation: new", "d")]


# ---------------------------------------------------------------------------------------------
# The expressions


def test_label_table_matches_metric_names() -> None:
    assert set(exported_metrics()) == metrics.metric_names()


def test_every_query_parses() -> None:
    queries = all_queries()
    assert len({title for file, title, _ in queries if file.startswith("grafana")}) > 20
    problems = []
    for file, title, expr in queries:
        try:
            promql_parser.parse(expr)
        except ValueError as error:
            problems.append(f"{file} / {title}: {error}\n    {expr}")
    assert not problems, "PromQL that does not parse:\n" + "\n".join(problems)


def test_queries_use_only_exported_metrics_and_labels() -> None:
    problems = []
    for file, title, expr in all_queries():
        try:
            found = problems_of(expr)
        except ValueError:
            continue  # test_every_query_parses reports it
        problems += [f"{file} / {title}: {p}\n    {expr}" for p in found]
    assert not problems, (
        "names that online_distill.metrics does not export (or misused):\n" + "\n".join(problems))


@pytest.mark.parametrize(("expr", "problem"), [
    ("rate(online_distill_no_such_metric_total[1m])", "unknown metric"),
    ('sum(online_distill_consumer_lag_messages{stag="x"})', "has no label 'stag'"),
    ("sum by (source) (rate(online_distill_learner_steps_total[1m]))", "by/without (source)"),
    ("rate(online_distill_learner_loss[1m])", "use it on counters"),
    ("deriv(online_distill_learner_steps_total[5m])", "use rate() or increase()"),
    ("max(online_distill_prompt_energy_sum{le=\"1\"})", "has no label 'le'"),
    ('{__name__="online_distill_nope"}', "unknown metric"),
    ("a / on (stagee) online_distill_consumer_lag_messages", "on/ignoring/group (stagee)"),
])
def test_the_checker_finds(expr: str, problem: str) -> None:
    assert any(problem in p for p in problems_of(expr)), problems_of(expr)


def test_the_checker_accepts_histograms_and_added_labels() -> None:
    expr = ('histogram_quantile(0.9, sum by (le, process) (rate('
            'online_distill_serve_request_duration_seconds_bucket{job="online-distill"}[1m])))'
            ' / on (process) group_left max by (process) (online_distill_served_version)'
            ' + deriv(sum by (stage) (online_distill_consumer_lag_messages)[10m:1m])')
    assert problems_of(expr) == []


# ---------------------------------------------------------------------------------------------
# Alerts, the scrape config, provisioning


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    names = {rule.get("alert") for rule in rules}
    assert EXPECTED_ALERTS <= names, f"missing alerts: {EXPECTED_ALERTS - names}"
    for rule in rules:
        name = rule.get("alert")
        assert "for" in rule, f"{name}: no `for`"
        assert rule.get("labels", {}).get("severity") in ("warning", "critical"), name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), name


def test_prometheus_config() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["global"]["scrape_interval"] == "15s"
    assert config["global"]["evaluation_interval"] == "15s"
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "online-distill"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9100"]}]


def test_grafana_provisioning() -> None:
    datasources = yaml.safe_load(
        (PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [(d["type"], d["uid"]) for d in datasources] == [("prometheus", "prometheus")]
    providers = yaml.safe_load(
        (PROVISIONING / "dashboards" / "online-distill.yml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == [
        "/var/lib/grafana/dashboards/online-distill"]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(PROMTOOL_MISSING)
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # 60 s: promtool answers in well under a second; the bound only stops a hung binary.
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_promtool_checks_the_config() -> None:
    """Also checks deploy/alerts.yml, which the config names relative to its directory."""
    done = _run(promtool(), "check", "config", str(PROMETHEUS_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_checks_the_rules() -> None:
    done = _run(promtool(), "check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr


ALERT_TESTS: list[dict[str, Any]] = [
    {"interval": "1m", "input_series": [
        {"series": 'online_distill_drift_detected{signal="energy", process="learner"}',
         "values": "0 0 1 1 0x30"},
        {"series": 'online_distill_drift_detected{signal="length", process="learner"}',
         "values": "0x34"},
        {"series": 'online_distill_consumer_lag_messages{stage="teacher", topic="od.prompts", '
                   'process="teacher-0"}', "values": "0+100x40"},
        {"series": 'online_distill_consumer_lag_messages{stage="learner", topic="od.labels", '
                   'process="learner"}', "values": "5000x40"},
        {"series": 'online_distill_versions_judged_total{decision="refused", process="gate"}',
         "values": "0+1x40"},
        {"series": 'online_distill_versions_judged_total{decision="promoted", process="gate"}',
         "values": "0x40"},
        {"series": 'online_distill_freshness_seconds{process="gate"}', "values": "3000+60x40"},
        {"series": 'online_distill_dead_letters_total{stage="teacher", topic="od.prompts", '
                   'reason="decode", process="teacher-0"}', "values": "0+12x40"},
        {"series": 'online_distill_process_up{process="teacher-0"}', "values": "1x10 _x30"},
        {"series": 'online_distill_process_up{process="gate"}', "values": "1x10 0x30"},
        {"series": 'online_distill_process_up{process="learner"}', "values": "1x40"},
        {"series": 'online_distill_serve_requests_total{code="200", process="serve-a"}',
         "values": "0+600x40"},
        {"series": 'online_distill_serve_requests_total{code="500", process="serve-a"}',
         "values": "0+12x40"},
        {"series": 'online_distill_serve_failed_loads_total{process="serve-a"}',
         "values": "0x20 1x20"},
    ], "alert_rule_test": [
        {"eval_time": "5m", "alertname": "OnlineDistillDriftDetected",
         "exp_alerts": [{"exp_labels": {"severity": "warning", "signal": "energy"}}]},
        {"eval_time": "20m", "alertname": "OnlineDistillDriftDetected", "exp_alerts": []},
        {"eval_time": "8m", "alertname": "OnlineDistillLagGrowing", "exp_alerts": []},
        {"eval_time": "30m", "alertname": "OnlineDistillLagGrowing", "exp_alerts": [
            {"exp_labels": {"severity": "warning", "stage": "teacher",
                            "topic": "od.prompts"}}]},
        {"eval_time": "15m", "alertname": "OnlineDistillGateRefusingRepeatedly",
         "exp_alerts": [{"exp_labels": {"severity": "warning"}}]},
        {"eval_time": "15m", "alertname": "OnlineDistillNoPromotion", "exp_alerts": []},
        {"eval_time": "25m", "alertname": "OnlineDistillNoPromotion",
         "exp_alerts": [{"exp_labels": {"severity": "warning"}}]},
        {"eval_time": "20m", "alertname": "OnlineDistillDeadLettersRising", "exp_alerts": [
            {"exp_labels": {"severity": "warning", "stage": "teacher", "reason": "decode"}}]},
        {"eval_time": "5m", "alertname": "OnlineDistillProcessDown", "exp_alerts": []},
        {"eval_time": "20m", "alertname": "OnlineDistillProcessDown", "exp_alerts": [
            {"exp_labels": {"severity": "critical", "process": "gate"}},
            {"exp_labels": {"severity": "critical", "process": "teacher-0"}}]},
        {"eval_time": "35m", "alertname": "OnlineDistillProcessDown", "exp_alerts": []},
        {"eval_time": "15m", "alertname": "OnlineDistillServeErrors",
         "exp_alerts": [{"exp_labels": {"severity": "critical"}}]},
        {"eval_time": "10m", "alertname": "OnlineDistillServeFailedLoads", "exp_alerts": []},
        {"eval_time": "25m", "alertname": "OnlineDistillServeFailedLoads",
         "exp_alerts": [{"exp_labels": {"severity": "warning", "process": "serve-a"}}]},
    ]},
    {"interval": "1m", "input_series": [  # refusals with a promotion among them: no alert
        {"series": 'online_distill_versions_judged_total{decision="refused", process="gate"}',
         "values": "0+1x40"},
        {"series": 'online_distill_versions_judged_total{decision="promoted", process="gate"}',
         "values": "0x5 1x35"},
        {"series": 'online_distill_serve_requests_total{code="200", process="serve-a"}',
         "values": "0+6000x40"},
        {"series": 'online_distill_serve_requests_total{code="500", process="serve-a"}',
         "values": "0+12x40"},
    ], "alert_rule_test": [
        {"eval_time": "20m", "alertname": "OnlineDistillGateRefusingRepeatedly",
         "exp_alerts": []},
        {"eval_time": "20m", "alertname": "OnlineDistillServeErrors", "exp_alerts": []},
    ]},
]


def test_alerts_fire_on_synthetic_series(tmp_path: Path) -> None:
    """promtool's rule unit tests on the rules without their annotations (the expected alerts
    then need only their labels; `promtool check rules` checks the annotation templates)."""
    document = yaml.safe_load(ALERTS.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "alerts.yml"
    rules.write_text(yaml.safe_dump(document))
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m",
                                     "tests": ALERT_TESTS}))
    done = _run(promtool(), "test", "rules", str(tests))
    assert done.returncode == 0, done.stdout + done.stderr
