"""The data behind ``online-distill report``: one run's history, from its log or Prometheus.

Two sources give the same :class:`RunHistory`, which :mod:`online_distill.report.draw` draws:

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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from online_distill.report.timeline import TIMELINE

# The weights store's history files (online_distill.weights.store.VERDICTS and HISTORY; not
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
    feedback_share: Series = field(default_factory=list)
    """Share of the fresh examples trained on that came from OOD-feedback prompts."""
    feedback_kinds: dict[str, Series] = field(default_factory=dict)
    """Kind -> its share of the feedback prompts kept so far (the tails GOLD asked for)."""
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


def series_end(history: RunHistory) -> float:
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


def kind_shares(counts: dict[str, Any]) -> dict[str, float]:
    """Counts per kind -> each kind's share of their total ("" is shown as "?"); {} when
    nothing was counted. Non-numeric counts are ignored."""
    numeric = {str(k) or "?": float(v) for k, v in counts.items() if isinstance(v, (int, float))}
    total = sum(numeric.values())
    return {k: v / total for k, v in numeric.items()} if total > 0 else {}


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
        _append(single, "feedback_share", t, r.get("feedback_share"))
        kinds = r.get("feedback_kinds")
        if isinstance(kinds, dict):
            for kind, share in kind_shares(kinds).items():
                _append(history.feedback_kinds, kind, t, share)
        if history.demo_drift_s is None and r.get("demo_drifted") is True:
            history.demo_drift_s = t
    history.served_version = single.get("served_version", [])
    history.freshness = single.get("freshness", [])
    history.feedback_share = single.get("feedback_share", [])


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
    history.span_s = series_end(history)
    return history


# ---------------------------------------------------------------------------- Prometheus
