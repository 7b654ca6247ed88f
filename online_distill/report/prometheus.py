"""``online-distill report --prometheus URL``: the run's series from Prometheus's HTTP API,
assembled into the same :class:`~online_distill.report.run_log.RunHistory` as the run's log."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from online_distill.report.run_log import (
    Candidate,
    Point,
    Promotion,
    ReportError,
    RunHistory,
    Series,
    Span,
    detection_spans,
    kind_shares,
    series_end,
)

QUERIES: dict[str, str] = {
    "served": 'max by (probe) (online_distill_served_score{metric="exact_match"})',
    "candidate": 'max by (probe) (online_distill_candidate_score{metric="exact_match"})',
    "drift": "max by (signal) (online_distill_drift_score)",
    "threshold": "max(online_distill_drift_threshold)",
    "detected": "max by (signal) (online_distill_drift_detected)",
    "version": "max(online_distill_promoted_version)",
    "lag": "sum by (stage) (online_distill_consumer_lag_messages)",
    "freshness": "max(online_distill_freshness_seconds)",
    "feedback_share": "max(online_distill_learner_feedback_share_ratio)",
    "feedback_kinds": "sum by (kind) (online_distill_feedback_prompts_by_kind_total)",
}
"""The range queries behind a Prometheus report, by what they feed."""

Fetch = Callable[[str], Any]
"""Takes a full ``/api/v1/query_range?...`` URL, returns the decoded JSON reply."""
Matrix = dict[str, list[Point]]
"""Label value (or ``""`` without a ``by``) -> [(unix time, value)]."""

FETCH_TIMEOUT_S = 10.0


def http_get_json(url: str) -> Any:
    """GET ``url`` and decode its JSON body; Prometheus's error replies (HTTP 4xx/5xx with a
    JSON body) are returned as they are, so the caller reports their ``error``."""
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as reply:
            body = reply.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return json.loads(body)
        except ValueError:
            raise ReportError(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ReportError(f"cannot connect ({reason})") from None
    try:
        return json.loads(body)
    except ValueError:
        raise ReportError("the reply is not JSON (is this a Prometheus server?)") from None


def query_url(base: str, query: str, start: float, end: float, step: float) -> str:
    """The ``query_range`` URL for ``query`` over [start, end] every ``step`` seconds."""
    params = urllib.parse.urlencode({"query": query, "start": f"{start:.3f}",
                                     "end": f"{end:.3f}", "step": f"{step:g}"})
    return f"{base.rstrip('/')}/api/v1/query_range?{params}"


def _matrix(reply: Any, label: str) -> Matrix:
    """The series of a successful ``query_range`` reply keyed by ``label``'s value."""
    data = reply.get("data") if isinstance(reply, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, list):
        raise ReportError("the reply has no data.result matrix")
    out: Matrix = {}
    for item in result:
        if not isinstance(item, dict):
            continue
        metric = item.get("metric") or {}
        points = out.setdefault(str(metric.get(label, "")), [])
        for at, text in item.get("values") or []:
            try:
                value = float(text)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                points.append((float(at), value))
        points.sort()
    return out


def _run_query(fetch: Fetch, base: str, query: str, start: float, end: float, step: float,
               label: str) -> Matrix:
    """One range query, with any failure turned into a ReportError naming URL and query."""
    try:
        reply = fetch(query_url(base, query, start, end, step))
    except ReportError as exc:
        raise ReportError(f"Prometheus at {base}: {exc}") from None
    if not isinstance(reply, dict) or reply.get("status") != "success":
        kind = reply.get("errorType", "error") if isinstance(reply, dict) else "error"
        error = reply.get("error", reply) if isinstance(reply, dict) else reply
        raise ReportError(f"Prometheus at {base} refused the query {query!r}: {kind}: {error}")
    try:
        return _matrix(reply, label)
    except ReportError as exc:
        raise ReportError(f"Prometheus at {base}, query {query!r}: {exc}") from None


def _by_label(query: str) -> str:
    """The ``by (label)`` of a query, or ``""``."""
    return query.split("by (", 1)[1].split(")", 1)[0] if "by (" in query else ""


def _relative(matrix: Matrix, start: float) -> dict[str, Series]:
    return {key: [(t - start, v) for t, v in points] for key, points in matrix.items() if points}


def _only(matrix: Matrix) -> list[Point]:
    return next(iter(matrix.values()), [])


def _prom_promotions(versions: Series) -> list[Promotion]:
    """A promotion wherever the promoted version changes between two samples."""
    out: list[Promotion] = []
    for (_, before), (t, after) in zip(versions, versions[1:], strict=False):
        if after != before:
            out.append(Promotion(t=t, version=int(after), previous=int(before)))
    return out


def _prom_candidates(scores: dict[str, Series], promotions: list[Promotion],
                     step: float) -> list[Candidate]:
    """A judged candidate wherever the candidate scores change (a repeat of the same scores
    is not seen); promoted when a forward promotion comes within one step of it."""
    by_time: dict[float, dict[str, float]] = {}
    for probe, points in scores.items():
        for t, v in points:
            by_time.setdefault(t, {})[probe] = v
    out: list[Candidate] = []
    last: dict[str, float] | None = None
    for t in sorted(by_time):
        now = {**(last or {}), **by_time[t]}
        if now != last:
            match = next((p for p in promotions
                          if not p.rollback and abs(p.t - t) <= step), None)
            out.append(Candidate(t=t, version=match.version if match else None,
                                 decision="promoted" if match else "refused", exact_match=now))
        last = now
    return out


def _prom_drift_spans(detected: dict[str, Series]) -> list[Span]:
    """Spans where any signal's drift_detected is 1."""
    up: dict[float, bool] = {}
    for points in detected.values():
        for t, v in points:
            up[t] = up.get(t, False) or v >= 0.5
    return detection_spans(sorted(up.items()))


def _assemble(base: str, since_s: float, step: float, raw: dict[str, Matrix]) -> RunHistory:
    """A RunHistory from the decoded replies of every query in QUERIES."""
    samples = [t for m in raw.values() for points in m.values() for t, _ in points]
    if not samples:
        raise ReportError(f"nothing to plot: Prometheus at {base} has no online_distill_* "
                          f"samples in the last {since_s:g} s; is it scraping the daemon?")
    start = min(samples)
    history = RunHistory(source="prometheus", where=f"{base} (last {since_s:g} s)",
                         start_at=start)
    history.served_scores = _relative(raw["served"], start)
    history.drift_scores = _relative(raw["drift"], start)
    threshold = _only(raw["threshold"])
    history.drift_threshold = threshold[-1][1] if threshold else None
    history.drift_spans = _prom_drift_spans(_relative(raw["detected"], start))
    history.served_version = _relative(raw["version"], start).get("", [])
    history.promotions = _prom_promotions(history.served_version)
    history.candidates = _prom_candidates(_relative(raw["candidate"], start),
                                          history.promotions, step)
    history.freshness = _relative(raw["freshness"], start).get("", [])
    history.lag = _relative(raw["lag"], start)
    history.feedback_share = _relative(raw["feedback_share"], start).get("", [])
    history.feedback_kinds = _kind_shares(_relative(raw["feedback_kinds"], start))
    history.promoted = sum(1 for p in history.promotions if not p.rollback)
    history.refused = sum(1 for c in history.candidates if c.decision == "refused")
    history.span_s = series_end(history)
    return history


def _kind_shares(counts: dict[str, Series]) -> dict[str, Series]:
    """Cumulative counts per kind -> each kind's share of the total at every sample time."""
    at: dict[float, dict[str, float]] = {}
    for kind, series in counts.items():
        for t, v in series:
            at.setdefault(t, {})[kind] = v
    out: dict[str, Series] = {}
    for t in sorted(at):
        for kind, share in kind_shares(at[t]).items():
            out.setdefault(kind, []).append((t, share))
    return out


def query_step(since_s: float) -> float:
    """Seconds between samples: at least 5, at most about 500 samples over the range."""
    return max(5.0, since_s / 500.0)


def load_prometheus(url: str, since_s: float = 3600.0, *, fetch: Fetch | None = None,
                    now: float | None = None) -> RunHistory:
    """The history of the last ``since_s`` seconds from the Prometheus server at ``url``.

    ``fetch`` (default: an HTTP GET with a 10 s timeout) is injectable for tests. Raises
    :class:`ReportError` naming the URL when the server cannot be reached, answers an error,
    or has no samples.
    """
    if since_s <= 0:
        raise ReportError(f"--since must be > 0 seconds, got {since_s:g}")
    base = url.rstrip("/")
    if urllib.parse.urlparse(base).scheme not in ("http", "https"):
        raise ReportError(f"Prometheus at {url}: expected a URL like http://127.0.0.1:9090")
    end = time.time() if now is None else now
    step = query_step(since_s)
    raw = {name: _run_query(fetch or http_get_json, base, query, end - since_s, end, step,
                            _by_label(query))
           for name, query in QUERIES.items()}
    return _assemble(base, since_s, step, raw)
