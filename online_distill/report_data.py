"""The data behind ``online-distill report``: one run's history, from its log or Prometheus.

Two sources give the same :class:`RunHistory`, which :mod:`online_distill.report` draws:

- the run's own log (:func:`load_run_log`): ``<run_dir>/timeline.jsonl`` (a status record
  every few seconds, written by ``online-distill up``), ``<weights_dir>/verdicts.jsonl``
  (every gate verdict) and ``<weights_dir>/promotions.jsonl`` (every change of the served
  version). Time zero is the first timeline record (or the earliest event without one).
- Prometheus (:func:`load_prometheus`): range queries over the last ``since_s`` seconds of
  the ``online_distill_*`` gauges. Time zero is the earliest sample.

Times in a :class:`RunHistory` are seconds since time zero; scores are fractions (0-1).
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from online_distill.timeline import TIMELINE

# The weights store's history files (online_distill.weights.VERDICTS and HISTORY; not
# imported from there, which would load torch and transformers for a picture).
VERDICTS = "verdicts.jsonl"
PROMOTIONS = "promotions.jsonl"

Point = tuple[float, float]
"""(seconds since start, value)."""
Series = list[Point]
Span = tuple[float, float]
"""(start, end) in seconds since start."""


class ReportError(Exception):
    """The report cannot be made (nothing to plot, Prometheus unreachable or erroring)."""


@dataclass(frozen=True)
class Candidate:
    """One gate verdict on a candidate version: when, which, what and its exact-match."""

    t: float
    version: int | None
    decision: str
    """``promoted``, ``refused`` or ``superseded`` (Prometheus: inferred, never superseded)."""
    exact_match: dict[str, float]
    """Probe -> exact-match fraction of the candidate."""


@dataclass(frozen=True)
class Promotion:
    """One change of the served version, at the moment it took effect."""

    t: float
    version: int
    previous: int | None
    by: str | None = None
    reason: str | None = None

    @property
    def rollback(self) -> bool:
        """A step back: to a lower version than before, or an explicit rollback."""
        lower = self.previous is not None and self.version < self.previous
        return lower or self.reason == "rollback"


@dataclass
class RunHistory:
    """Everything the report draws, as time series relative to the run's start."""

    source: str
    """``log`` or ``prometheus``."""
    where: str
    """The run directory, or the Prometheus URL and range."""
    start_at: float = 0.0
    """Unix time of t = 0."""
    span_s: float = 0.0
    """The last time anything happened, in seconds since start."""
    served_scores: dict[str, Series] = field(default_factory=dict)
    """Probe -> the served version's exact-match fraction over time."""
    candidates: list[Candidate] = field(default_factory=list)
    drift_scores: dict[str, Series] = field(default_factory=dict)
    """Signal -> its drift score over time."""
    drift_threshold: float | None = None
    drift_method: str | None = None
    drift_spans: list[Span] = field(default_factory=list)
    """When any drift signal was detected."""
    demo_drift_s: float | None = None
    """The first record with the demo traffic past its scheduled drift (log only)."""
    served_version: Series = field(default_factory=list)
    promotions: list[Promotion] = field(default_factory=list)
    freshness: Series = field(default_factory=list)
    """Seconds since the newest prompt the served version trained on entered the stream."""
    lag: dict[str, Series] = field(default_factory=dict)
    """``prompts``/``labels`` (log) or a stage (Prometheus) -> uncommitted messages."""
    promoted: int = 0
    """Versions the gate promoted (Prometheus: forward changes of the served version)."""
    refused: int = 0
    """Versions the gate refused (Prometheus: judged candidates not followed by a promotion)."""
    skipped_lines: int = 0
    """Log lines that could not be parsed (a run killed mid-write leaves a partial line)."""

    def is_empty(self) -> bool:
        """True when there is nothing at all to draw."""
        series = [*self.served_scores.values(), *self.drift_scores.values(),
                  *self.lag.values(), self.served_version, self.freshness]
        return not (any(series) or self.candidates or self.promotions)


# ---------------------------------------------------------------------------- shared helpers


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None (for null, bools, strings, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def detection_spans(flags: Iterable[tuple[float, bool]]) -> list[Span]:
    """Spans where the flag is up: from the first True sample to the next False one (or to
    the last sample when it never comes down). ``flags`` must be in time order."""
    spans: list[Span] = []
    opened: float | None = None
    last = 0.0
    for t, up in flags:
        if up and opened is None:
            opened = t
        elif not up and opened is not None:
            spans.append((opened, t))
            opened = None
        last = t
    if opened is not None:
        spans.append((opened, last))
    return spans


def _series_end(history: RunHistory) -> float:
    times = [t for s in (*history.served_scores.values(), *history.drift_scores.values(),
                         *history.lag.values(), history.served_version, history.freshness)
             for t, _ in s]
    times += [c.t for c in history.candidates] + [p.t for p in history.promotions]
    times += [end for _, end in history.drift_spans]
    return max(times, default=0.0)


# ---------------------------------------------------------------------------- the run's log


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of a JSONL file and how many non-blank lines were not objects.

    A missing file is empty; a line that does not parse (or is not an object) is skipped.
    """
    if not path.is_file():
        return [], 0
    records: list[dict[str, Any]] = []
    skipped = 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                skipped += 1
    return records, skipped


def _timed(records: list[dict[str, Any]], key: str, start: float
           ) -> list[tuple[float, dict[str, Any]]]:
    """(seconds since start, record) for each record with a numeric ``key``, in time order."""
    out = [(at - start, r) for r in records if (at := number(r.get(key))) is not None]
    return sorted(out, key=lambda pair: pair[0])


def _start_of(timeline: list[dict[str, Any]], verdicts: list[dict[str, Any]],
              promotions: list[dict[str, Any]]) -> float | None:
    """Unix time of t = 0: the first timeline record, else the earliest event."""
    for record in timeline:
        if (at := number(record.get("at"))) is not None:
            return at
    events = [number(r.get("at")) for r in (*verdicts, *promotions)]
    events += [number(r.get("effective_at")) for r in promotions]
    found = [t for t in events if t is not None]
    return min(found) if found else None


def _append(series: dict[str, Series], key: str, t: float, value: Any) -> None:
    if (v := number(value)) is not None:
        series.setdefault(key, []).append((t, v))


def _timeline_series(history: RunHistory, rows: list[tuple[float, dict[str, Any]]]) -> None:
    """Scores, versions, freshness and lag from the timeline's records."""
    single: dict[str, Series] = {}
    for t, r in rows:
        scores = r.get("served_scores")
        for probe, value in (scores.items() if isinstance(scores, dict) else ()):
            _append(history.served_scores, str(probe), t, value)
        _append(single, "served_version", t, r.get("served_version"))
        _append(single, "freshness", t, r.get("freshness_s"))
        _append(history.lag, "prompts", t, r.get("prompt_lag"))
        _append(history.lag, "labels", t, r.get("label_lag"))
        if history.demo_drift_s is None and r.get("demo_drifted") is True:
            history.demo_drift_s = t
    history.served_version = single.get("served_version", [])
    history.freshness = single.get("freshness", [])


def _timeline_drift(history: RunHistory, rows: list[tuple[float, dict[str, Any]]]) -> None:
    """Drift scores, threshold, method and detection spans from the timeline's records."""
    flags: list[tuple[float, bool]] = []
    for t, r in rows:
        drift = r.get("drift")
        if not isinstance(drift, dict):
            continue
        scores = drift.get("scores")
        for signal, value in (scores.items() if isinstance(scores, dict) else ()):
            _append(history.drift_scores, str(signal), t, value)
        if (threshold := number(drift.get("threshold"))) is not None:
            history.drift_threshold = threshold
        if isinstance(drift.get("method"), str):
            history.drift_method = drift["method"]
        detected = drift.get("detected")
        flags.append((t, isinstance(detected, dict) and any(v is True
                                                            for v in detected.values())))
    history.drift_spans = detection_spans(flags)


def _exact_matches(scores: Any) -> dict[str, float]:
    """Probe -> exact_match from a verdict's ``scores`` (probes without one are left out)."""
    out: dict[str, float] = {}
    for probe, metrics in (scores.items() if isinstance(scores, dict) else ()):
        if isinstance(metrics, dict) and (v := number(metrics.get("exact_match"))) is not None:
            out[str(probe)] = v
    return out


def _int_or_none(value: Any) -> int | None:
    v = number(value)
    return int(v) if v is not None else None


def _candidates(rows: list[tuple[float, dict[str, Any]]]) -> list[Candidate]:
    return [Candidate(t=t, version=_int_or_none(r.get("version")),
                      decision=str(r.get("decision", "unknown")),
                      exact_match=_exact_matches(r.get("scores")))
            for t, r in rows]


def _promotions(records: list[dict[str, Any]], start: float) -> list[Promotion]:
    out: list[Promotion] = []
    for r in records:
        at = number(r.get("effective_at"))
        at = at if at is not None else number(r.get("at"))
        version = _int_or_none(r.get("version"))
        if at is None or version is None:
            continue
        out.append(Promotion(t=at - start, version=version,
                             previous=_int_or_none(r.get("previous")),
                             by=r.get("by") if isinstance(r.get("by"), str) else None,
                             reason=r.get("reason") if isinstance(r.get("reason"), str) else None))
    return sorted(out, key=lambda p: p.t)


def _counts(history: RunHistory, timeline: list[tuple[float, dict[str, Any]]]) -> None:
    """Promoted/refused: counted from the verdicts, else the timeline's last counters."""
    if history.candidates:
        decisions = [c.decision for c in history.candidates]
        history.promoted = decisions.count("promoted")
        history.refused = decisions.count("refused")
        return
    for _, r in timeline:
        promoted, refused = _int_or_none(r.get("promoted")), _int_or_none(r.get("refused"))
        history.promoted = history.promoted if promoted is None else promoted
        history.refused = history.refused if refused is None else refused


def _served_from_promotions(promotions: list[Promotion]) -> Series:
    return [(p.t, float(p.version)) for p in promotions]


def nothing_to_plot(run_dir: Path, weights_dir: Path) -> ReportError:
    """The error for a run with no data at all."""
    return ReportError(f"nothing to plot: {run_dir / TIMELINE} and {weights_dir / VERDICTS} "
                       "are missing or empty; run `online-distill up` first")


def load_run_log(run_dir: str | Path, weights_dir: str | Path) -> RunHistory:
    """The history of one run from its timeline, verdicts and promotions files.

    The served version comes from the timeline (what Serve answered with), or from the
    promotions when there is no timeline. Raises :class:`ReportError` when there is nothing.
    """
    run_dir, weights_dir = Path(run_dir), Path(weights_dir)
    timeline, bad_t = read_jsonl(run_dir / TIMELINE)
    verdicts, bad_v = read_jsonl(weights_dir / VERDICTS)
    promotions, bad_p = read_jsonl(weights_dir / PROMOTIONS)
    start = _start_of(timeline, verdicts, promotions)
    if start is None:
        raise nothing_to_plot(run_dir, weights_dir)
    history = RunHistory(source="log", where=str(run_dir), start_at=start,
                         skipped_lines=bad_t + bad_v + bad_p)
    rows = _timed(timeline, "at", start)
    _timeline_series(history, rows)
    _timeline_drift(history, rows)
    history.candidates = _candidates(_timed(verdicts, "at", start))
    history.promotions = _promotions(promotions, start)
    if not history.served_version:
        history.served_version = _served_from_promotions(history.promotions)
    _counts(history, rows)
    if history.is_empty():
        raise nothing_to_plot(run_dir, weights_dir)
    history.span_s = _series_end(history)
    return history


# ---------------------------------------------------------------------------- Prometheus

QUERIES: dict[str, str] = {
    "served": 'max by (probe) (online_distill_served_score{metric="exact_match"})',
    "candidate": 'max by (probe) (online_distill_candidate_score{metric="exact_match"})',
    "drift": "max by (signal) (online_distill_drift_score)",
    "threshold": "max(online_distill_drift_threshold)",
    "detected": "max by (signal) (online_distill_drift_detected)",
    "version": "max(online_distill_promoted_version)",
    "lag": "sum by (stage) (online_distill_consumer_lag_messages)",
    "freshness": "max(online_distill_freshness_seconds)",
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
    history.promoted = sum(1 for p in history.promotions if not p.rollback)
    history.refused = sum(1 for c in history.candidates if c.decision == "refused")
    history.span_s = _series_end(history)
    return history


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
