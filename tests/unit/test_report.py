"""``online-distill report``: loading a run's log or Prometheus into a RunHistory, the PNG."""

from __future__ import annotations

import json
import socket
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from online_distill.cli.main import main
from online_distill.report.draw import plot_history, summary_line
from online_distill.report.prometheus import QUERIES, load_prometheus
from online_distill.report.run_log import (
    Promotion,
    ReportError,
    RunHistory,
    detection_spans,
    load_run_log,
)

START = 1000.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
V1 = {"head": 0.5, "tail": 0.25}
V3 = {"head": 0.625, "tail": 0.375}


def _served(i: int) -> int | None:
    """The crafted run's served version at record i (every 5 s): v1, then v3, rolled back."""
    return None if i < 2 else 1 if i < 12 else 3 if i < 17 else 1


def _drift(i: int) -> dict[str, Any]:
    """Energy drifts over records 8-11 (t 40-55), tokens from record 15 (t 75) to the end."""
    energy, tokens = 8 <= i <= 11, i >= 15
    return {"method": "psi", "threshold": 0.2,
            "scores": {"energy": 0.3 if energy else 0.05, "length": None if i == 1 else 0.01,
                       "tokens": 0.4 if tokens else 0.02, "divergence": 0.1},
            "detected": {"energy": energy, "length": False, "tokens": tokens,
                         "divergence": False},
            "tail_share": 0.01}


def _record(i: int) -> dict[str, Any]:
    version = _served(i)
    return {"at": START + 5 * i, "elapsed_s": 5.0 * i, "prompts_sent": 150 * i,
            "labeled": 140 * i, "prompt_lag": None if i == 3 else 10 + i, "label_lag": 100 - i,
            "step": 10 * i, "loss": 1.0 / (i + 1), "served_version": version,
            "served_scores": {} if version is None else (V1 if version == 1 else V3),
            "freshness_s": None if i < 2 else 2.0 + i % 3,
            "promoted": 0 if i < 2 else 1 if i < 12 else 2, "refused": 0 if i < 7 else 1,
            "kl": 0.5, "agreement": 0.7, "demo_drifted": i >= 7,
            "drift": None if i == 0 else _drift(i)}


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, Path]:
    """A crafted run: 19 timeline records every 5 s and a truncated 20th line (record 5
    has only its time), 4 verdicts and a bad line, 3 promotions (the last one a rollback)."""
    run_dir, weights = tmp_path / "run", tmp_path / "run" / "weights"
    records = [json.dumps(_record(i)) for i in range(19)]
    records[5] = json.dumps({"at": START + 25, "elapsed_s": 25.0})
    _write_lines(run_dir / "timeline.jsonl", [*records, json.dumps(_record(19))[:40]])
    verdict = {"baseline_scores": {}, "reasons": [], "seconds": 0.5}
    verdicts = [
        {"version": 1, "decision": "promoted", "baseline": None, "at": START + 9.5,
         "scores": {p: {"exact_match": v, "nll": 1.0} for p, v in V1.items()}
         | {"rolling": {"agreement": 0.8, "nll": 1.1}}},
        {"version": 2, "decision": "refused", "baseline": 1, "at": START + 34.5,
         "scores": {"head": {"exact_match": 0.375}, "tail": {"exact_match": 0.125}},
         "reasons": ["head/exact_match 0.3750 < 0.5000 - 0.01"]},
        {"version": 3, "decision": "promoted", "baseline": 1, "at": START + 59.5,
         "scores": {p: {"exact_match": v} for p, v in V3.items()}},
        {"version": 4, "decision": "superseded", "baseline": 3, "at": START + 70.0,
         "scores": {}},
    ]
    _write_lines(weights / "verdicts.jsonl",
                 [json.dumps(verdict | v) for v in verdicts[:2]] + ["[1, 2]"]
                 + [json.dumps(verdict | v) for v in verdicts[2:]])
    promotions = [
        {"version": 1, "previous": None, "reason": "gate", "by": "gate", "at": START + 9.5,
         "effective_at": START + 10.0},
        {"version": 3, "previous": 1, "reason": "gate", "by": "gate", "at": START + 59.5,
         "effective_at": START + 60.0},
        {"version": 1, "previous": 3, "reason": "rollback", "by": "cli", "at": START + 84.5,
         "effective_at": START + 85.0},
    ]
    _write_lines(weights / "promotions.jsonl", [json.dumps(p) for p in promotions])
    return run_dir, weights


def test_the_run_log_becomes_a_run_history(run: tuple[Path, Path]) -> None:
    h = load_run_log(*run)
    assert (h.source, h.start_at, h.span_s, h.skipped_lines) == ("log", START, 90.0, 2)
    served_times = [5.0 * i for i in range(2, 19) if i != 5]
    assert h.served_scores["head"] == [(t, 0.5 if t < 60 or t >= 85 else 0.625)
                                       for t in served_times]
    assert set(h.served_scores) == {"head", "tail"}
    assert h.served_version[:3] == [(10.0, 1.0), (15.0, 1.0), (20.0, 1.0)]
    assert h.served_version[-3:] == [(80.0, 3.0), (85.0, 1.0), (90.0, 1.0)]
    assert h.freshness[:3] == [(10.0, 4.0), (15.0, 2.0), (20.0, 3.0)]
    assert [t for t, _ in h.lag["prompts"]] == [5.0 * i for i in range(19) if i not in (3, 5)]
    assert h.lag["labels"][:2] == [(0.0, 100.0), (5.0, 99.0)]
    assert set(h.drift_scores) == {"energy", "length", "tokens", "divergence"}
    assert h.drift_scores["length"][0] == (10.0, 0.01)
    energy = dict(h.drift_scores["energy"])
    assert (energy[35.0], energy[40.0], energy[55.0], energy[60.0]) == (0.05, 0.3, 0.3, 0.05)
    assert 0.0 not in energy and 25.0 not in energy  # records 0 and 5 have no drift
    assert (h.drift_threshold, h.drift_method) == (0.2, "psi")
    assert h.drift_spans == [(40.0, 60.0), (75.0, 90.0)]
    assert h.demo_drift_s == 35.0
    assert h.promotions == [Promotion(10.0, 1, None, "gate", "gate"),
                            Promotion(60.0, 3, 1, "gate", "gate"),
                            Promotion(85.0, 1, 3, "cli", "rollback")]
    assert [p.rollback for p in h.promotions] == [False, False, True]
    assert [(c.t, c.version, c.decision) for c in h.candidates] == [
        (9.5, 1, "promoted"), (34.5, 2, "refused"), (59.5, 3, "promoted"),
        (70.0, 4, "superseded")]
    assert h.candidates[0].exact_match == V1  # the rolling probe has no exact_match
    assert (h.promoted, h.refused) == (2, 1)
    assert summary_line(h) == ("1 min 30 s of log data: 2 versions promoted, 1 refused, "
                               "2 drift alerts (2 unreadable log line(s) skipped)")


def test_without_a_timeline_time_zero_is_the_first_event(run: tuple[Path, Path]) -> None:
    run_dir, weights = run
    (run_dir / "timeline.jsonl").unlink()
    h = load_run_log(run_dir, weights)
    assert h.start_at == START + 9.5
    assert h.served_version == [(0.5, 1.0), (50.5, 3.0), (75.5, 1.0)]
    assert (h.span_s, h.drift_spans, h.promoted, h.refused) == (75.5, [], 2, 1)


def test_detection_spans_close_at_the_next_clear_sample() -> None:
    flags = [(0.0, False), (5.0, True), (10.0, True), (15.0, False), (20.0, True)]
    assert detection_spans(flags) == [(5.0, 15.0), (20.0, 20.0)]
    assert detection_spans([]) == []


def test_an_empty_run_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    run_dir, weights = tmp_path / "run", tmp_path / "weights"
    _write_lines(run_dir / "timeline.jsonl", ['{"at": 10'])  # only a truncated line
    expected = (f"nothing to plot: {run_dir / 'timeline.jsonl'} and "
                f"{weights / 'verdicts.jsonl'} are missing or empty; "
                "run `online-distill up` first")
    with pytest.raises(ReportError) as exc:
        load_run_log(run_dir, weights)
    assert str(exc.value) == expected
    out = tmp_path / "r.png"
    assert main(["report", "--run-dir", str(run_dir), "--weights-dir", str(weights),
                 "--out", str(out)]) == 1
    assert expected in capsys.readouterr().err and not out.exists()


def test_the_cli_writes_a_png(run: tuple[Path, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, weights = run
    out = tmp_path / "out" / "report.png"
    assert main(["report", "--run-dir", str(run_dir), "--weights-dir", str(weights),
                 "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(out)
    assert "2 versions promoted, 1 refused, 2 drift alerts" in lines[1]


def test_the_cli_defaults_come_from_the_config(run: tuple[Path, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, weights = run
    assert main(["report", f"run_dir={run_dir}", f"gate.weights_dir={weights}"]) == 0
    assert (run_dir / "report.png").read_bytes().startswith(PNG_SIGNATURE)
    assert capsys.readouterr().out.splitlines()[0] == str(run_dir / "report.png")


# ---------------------------------------------------------------------------- Prometheus

NOW = 5000.0
T0 = NOW - 100.0


def _matrix(rows: dict[str, list[float | str]], label: str | None) -> list[dict[str, Any]]:
    """A query_range result: one series per label value, a sample every 5 s from T0."""
    return [{"metric": {label: key} if label else {},
             "values": [[T0 + 5 * i, str(v)] for i, v in enumerate(values)]}
            for key, values in rows.items()]


def _prometheus_results() -> dict[str, list[dict[str, Any]]]:
    """Ten samples (t 0-45): v1 served, a refused candidate at t 15, v3 promoted at t 25,
    then rolled back to v1 at t 40; energy drift detected at t 10-15."""
    versions = [1, 1, 1, 1, 1, 3, 3, 3, 1, 1]
    return {
        QUERIES["served"]: _matrix({"head": [0.5] * 5 + [0.625] * 3 + [0.5] * 2,
                                    "tail": [0.25] * 5 + [0.375] * 3 + [0.25] * 2}, "probe"),
        QUERIES["candidate"]: _matrix({"head": [0.5] * 3 + [0.375] * 2 + [0.625] * 5,
                                       "tail": [0.25] * 3 + [0.125] * 2 + [0.375] * 5},
                                      "probe"),
        QUERIES["drift"]: _matrix({"energy": [0.05, 0.1, 0.3, 0.3, 0.1] + [0.05] * 5,
                                   "length": ["NaN"] + [0.01] * 9}, "signal"),
        QUERIES["threshold"]: _matrix({"": [0.2] * 10}, None),
        QUERIES["detected"]: _matrix({"energy": [0, 0, 1, 1] + [0] * 6, "length": [0] * 10},
                                     "signal"),
        QUERIES["version"]: _matrix({"": versions}, None),
        QUERIES["lag"]: _matrix({"teacher": list(range(10)), "learner": [100] * 10}, "stage"),
        QUERIES["freshness"]: _matrix({"": [3.0] * 10}, None),
    }


class FakePrometheus:
    """A query_range endpoint from canned results; records every URL asked for."""

    def __init__(self, results: dict[str, list[dict[str, Any]]],
                 error: dict[str, Any] | None = None) -> None:
        self.results, self.error, self.urls = results, error, []

    def __call__(self, url: str) -> dict[str, Any]:
        self.urls.append(url)
        if self.error is not None:
            return self.error
        query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)["query"][0]
        return {"status": "success",
                "data": {"resultType": "matrix", "result": self.results.get(query, [])}}


def test_prometheus_becomes_the_same_run_history(tmp_path: Path) -> None:
    fake = FakePrometheus(_prometheus_results())
    h = load_prometheus("http://prom:9090/", since_s=3600, fetch=fake, now=NOW)
    assert len(fake.urls) == len(QUERIES)
    params = urllib.parse.parse_qs(urllib.parse.urlparse(fake.urls[0]).query)
    assert fake.urls[0].startswith("http://prom:9090/api/v1/query_range?")
    assert (params["start"], params["end"], params["step"]) == (["1400.000"], ["5000.000"],
                                                                ["7.2"])
    assert (h.source, h.where, h.start_at, h.span_s) == ("prometheus",
                                                         "http://prom:9090 (last 3600 s)",
                                                         T0, 45.0)
    assert h.served_scores["head"][4:6] == [(20.0, 0.5), (25.0, 0.625)]
    assert h.drift_scores["length"][0] == (5.0, 0.01)  # NaN samples are dropped
    assert (h.drift_threshold, h.drift_spans) == (0.2, [(10.0, 20.0)])
    assert h.served_version[-3:] == [(35.0, 3.0), (40.0, 1.0), (45.0, 1.0)]
    assert h.promotions == [Promotion(25.0, 3, 1), Promotion(40.0, 1, 3)]
    assert [p.rollback for p in h.promotions] == [False, True]
    assert [(c.t, c.version, c.decision) for c in h.candidates] == [
        (0.0, None, "refused"), (15.0, None, "refused"), (25.0, 3, "promoted")]
    assert h.candidates[2].exact_match == V3
    assert set(h.lag) == {"teacher", "learner"} and h.lag["teacher"][-1] == (45.0, 9.0)
    assert h.freshness[0] == (0.0, 3.0) and h.demo_drift_s is None
    assert (h.promoted, h.refused, h.skipped_lines) == (1, 2, 0)
    out = plot_history(h, tmp_path / "prom.png")
    assert out.read_bytes().startswith(PNG_SIGNATURE)


def test_a_prometheus_error_reply_is_a_clear_error() -> None:
    fake = FakePrometheus({}, error={"status": "error", "errorType": "bad_data",
                                     "error": "1:5: parse error: unexpected"})
    with pytest.raises(ReportError, match=r"Prometheus at http://prom:9090 refused the "
                                          r"query .*bad_data: 1:5: parse error"):
        load_prometheus("http://prom:9090", fetch=fake, now=NOW)


def test_a_prometheus_url_needs_a_scheme() -> None:
    with pytest.raises(ReportError, match="expected a URL like http://"):
        load_prometheus("127.0.0.1:9090", fetch=FakePrometheus({}), now=NOW)


def test_prometheus_without_samples_has_nothing_to_plot() -> None:
    with pytest.raises(ReportError, match="nothing to plot: Prometheus at http://prom:9090 "
                                          "has no online_distill_"):
        load_prometheus("http://prom:9090", since_s=600, fetch=FakePrometheus({}), now=NOW)


def test_an_unreachable_prometheus_exits_1_naming_the_url(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a local port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    assert main(["report", "--prometheus", url, "--out", str(tmp_path / "r.png")]) == 1
    err = capsys.readouterr().err
    assert f"Prometheus at {url}: cannot connect" in err and "Traceback" not in err


def test_an_empty_history_is_not_drawn(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="nothing to plot"):
        plot_history(RunHistory(source="log", where="x"), tmp_path / "x.png")


def test_feedback_kinds_become_shares_in_the_history() -> None:
    from online_distill.report.prometheus import _kind_shares
    from online_distill.report.run_log import kind_shares

    assert kind_shares({"mul": 3, "": 1, "bad": "x"}) == {"mul": 0.75, "?": 0.25}
    assert kind_shares({}) == {} and kind_shares({"mul": 0}) == {}
    shares = _kind_shares({"mul": [(1.0, 1.0), (2.0, 3.0)], "add2": [(2.0, 1.0)]})
    assert shares == {"mul": [(1.0, 1.0), (2.0, 0.75)], "add2": [(2.0, 0.25)]}
