"""``online-distill report``: one PNG that tells the story of one run, without Grafana.

Four stacked panels over "seconds since start": the served version's exact-match per probe
(with every judged candidate as a dot), the drift scores against their threshold, the served
version with its promotions and rollbacks (freshness on a twin axis), and the consumer lag.
Spans where drift was detected are shaded on every panel. The data comes from the run's own
log or from Prometheus (:mod:`online_distill.report.run_log`); the drawing uses matplotlib's
Agg canvas directly (no pyplot, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from online_distill.report.prometheus import load_prometheus
from online_distill.report.run_log import (
    ReportError,
    RunHistory,
    Series,
    load_run_log,
)

__all__ = ["ReportError", "RunHistory", "load_history", "plot_history", "summary_line",
           "write_report"]

FIGSIZE = (12.0, 13.5)
DPI = 110
DRIFT_COLOR = "tab:red"
DRIFT_ALPHA = 0.12
CANDIDATE_MARKERS = {"promoted": ("o", 30.0), "refused": ("x", 36.0)}
"""How a judged candidate is drawn: marker and size, by decision."""


def format_span(seconds: float) -> str:
    """``95 s`` or ``7 min 01 s``."""
    whole = int(round(seconds))
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60:02d} s"


def summary_line(history: RunHistory) -> str:
    """One line: time span, versions promoted/refused, drift alerts (and skipped lines)."""
    alerts = len(history.drift_spans)
    line = (f"{format_span(history.span_s)} of {history.source} data: "
            f"{history.promoted} versions promoted, {history.refused} refused, "
            f"{alerts} drift alert{'s' if alerts != 1 else ''}")
    if history.skipped_lines:
        line += f" ({history.skipped_lines} unreadable log line(s) skipped)"
    return line


# ---------------------------------------------------------------------------- drawing helpers


def _step(ax: Axes, series: Series, **style: Any) -> list[Line2D]:
    """A step line (value holds until the next sample); a lone sample gets a marker."""
    if not series:
        return []
    xs, ys = zip(*series, strict=True)
    if len(series) == 1:
        style.setdefault("marker", "o")
    return list(ax.step(xs, ys, where="post", **style))


def _no_data(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in this run", transform=ax.transAxes, ha="center",
            va="center", color="0.5")


def _shade(ax: Axes, span: tuple[float, float], label: str | None = None) -> None:
    """Shade a drift-detected span lightly."""
    ax.axvspan(span[0], span[1], color=DRIFT_COLOR, alpha=DRIFT_ALPHA, linewidth=0, label=label)


def _legend(ax: Axes, handles: Sequence[Artist] | None = None) -> None:
    """A small legend at the upper left, for ``handles`` (default: every labelled artist)."""
    if handles is None:
        handles = ax.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=list(handles), loc="upper left", fontsize="small",
                  ncol=min(4, len(handles)), framealpha=0.8)


def _probe_colors(history: RunHistory) -> dict[str, str]:
    """One colour per probe, the same for its served line and its candidates' dots."""
    probes = list(history.served_scores)
    for c in history.candidates:
        probes += [p for p in c.exact_match if p not in probes]
    return {probe: f"C{i % 10}" for i, probe in enumerate(probes)}


# ---------------------------------------------------------------------------- the panels


def _candidate_dots(ax: Axes, history: RunHistory, colors: dict[str, str]) -> list[Line2D]:
    """Each judged candidate's exact-match per probe at its verdict time; legend proxies."""
    seen: list[str] = []
    for c in history.candidates:
        if c.decision not in CANDIDATE_MARKERS:
            continue
        marker, size = CANDIDATE_MARKERS[c.decision]
        for probe, value in c.exact_match.items():
            ax.scatter([c.t], [100.0 * value], color=colors[probe], marker=marker, s=size,
                       zorder=3)
        if c.exact_match and c.decision not in seen:
            seen.append(c.decision)
    return [Line2D([], [], color="0.3", linestyle="", marker=CANDIDATE_MARKERS[d][0],
                   label=f"candidate {d}") for d in ("promoted", "refused") if d in seen]


def _panel_accuracy(ax: Axes, history: RunHistory) -> None:
    colors = _probe_colors(history)
    handles: list[Line2D] = []
    for probe, series in history.served_scores.items():
        handles += _step(ax, [(t, 100.0 * v) for t, v in series], color=colors[probe],
                         label=f"served {probe}")
    handles += _candidate_dots(ax, history, colors)
    if not handles:
        _no_data(ax, "gate scores")
    ax.set_ylim(-3, 103)
    ax.set_ylabel("exact match (%)")
    ax.set_title("Served accuracy per probe (dots: judged candidates)", fontsize="medium")
    _legend(ax, handles)


def _panel_drift(ax: Axes, history: RunHistory) -> None:
    for signal, series in history.drift_scores.items():
        _step(ax, series, label=signal)
    if history.drift_threshold is not None and history.drift_scores:
        ax.axhline(history.drift_threshold, color="tab:red", linestyle="--", linewidth=1,
                   label=f"threshold {history.drift_threshold:g}")
    if history.demo_drift_s is not None:
        ax.axvline(history.demo_drift_s, color="0.2", linestyle=":", linewidth=1.2,
                   label="demo drift")
    if history.drift_spans:
        _shade(ax, history.drift_spans[0], label="drift detected")
    if not history.drift_scores:
        _no_data(ax, "drift scores")
    method = f" ({history.drift_method})" if history.drift_method else ""
    ax.set_ylabel(f"drift score{method}")
    ax.set_title("Drift of live traffic against the reference window", fontsize="medium")
    _legend(ax)


def _promotion_markers(ax: Axes, history: RunHistory) -> list[Line2D]:
    forward = [(p.t, p.version) for p in history.promotions if not p.rollback]
    back = [(p.t, p.version) for p in history.promotions if p.rollback]
    handles: list[Line2D] = []
    for points, marker, color, label in ((forward, "^", "tab:green", "promotion"),
                                         (back, "v", "tab:red", "rollback")):
        if points:
            xs, ys = zip(*points, strict=True)
            handles += ax.plot(xs, ys, linestyle="", marker=marker, color=color,
                               markersize=8, label=label, zorder=3)
    return handles


def _panel_versions(ax: Axes, history: RunHistory) -> None:
    handles = _step(ax, history.served_version, color="tab:blue", label="served version")
    handles += _promotion_markers(ax, history)
    if history.freshness:
        twin = ax.twinx()
        handles += _step(twin, history.freshness, color="0.55", linewidth=1, alpha=0.8,
                         label="freshness (s)")
        twin.set_ylabel("freshness (s)")
        twin.set_ylim(bottom=0)
    if not handles:
        _no_data(ax, "versions")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("version")
    ax.set_title("Served version, promotions and rollbacks", fontsize="medium")
    _legend(ax, handles)


def _panel_lag(ax: Axes, history: RunHistory) -> None:
    for key, series in history.lag.items():
        label = f"{key} lag" if history.source == "log" else f"stage {key}"
        _step(ax, series, label=label)
    if not history.lag:
        _no_data(ax, "lag")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("lag (messages)")
    ax.set_xlabel("seconds since start")
    ax.set_title("Consumer lag", fontsize="medium")
    _legend(ax)


def _panel_feedback(ax: Axes, history: RunHistory) -> None:
    handles = _step(ax, [(t, 100.0 * v) for t, v in history.feedback_share], color="black",
                    label="feedback share of trained")
    for kind, series in sorted(history.feedback_kinds.items()):
        handles += _step(ax, [(t, 100.0 * v) for t, v in series], linestyle="--",
                         label=f"{kind} of feedback")
    if not handles:
        _no_data(ax, "OOD feedback (ood.enabled is off)")
    ax.set_ylim(-3, 103)
    ax.set_ylabel("share (%)")
    ax.set_title("OOD feedback: its share of training, and the kinds it asked for",
                 fontsize="medium")
    _legend(ax, handles or None)


def _shade_drift(axes: list[Axes], history: RunHistory) -> None:
    """Shade the drift-detected spans on every panel (panel 2 already has the first one)."""
    for i, ax in enumerate(axes):
        for j, span in enumerate(history.drift_spans):
            if not (i == 1 and j == 0):
                _shade(ax, span)


def draw(history: RunHistory) -> Figure:
    """The report figure for ``history``."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(5, 1, sharex=True))
    _panel_accuracy(axes[0], history)
    _panel_drift(axes[1], history)
    _panel_versions(axes[2], history)
    _panel_feedback(axes[3], history)
    _panel_lag(axes[4], history)
    _shade_drift(axes, history)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"online-distill run {history.where}: {format_span(history.span_s)}")
    fig.tight_layout()
    return fig


def plot_history(history: RunHistory, out: str | Path) -> Path:
    """Draw ``history`` into the PNG ``out`` (parent folders created); returns its path."""
    if history.is_empty():
        raise ReportError(f"nothing to plot for {history.where}")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw(history).savefig(path, dpi=DPI, format="png")
    return path


# ---------------------------------------------------------------------------- the command


def load_history(run_dir: str | Path, weights_dir: str | Path, prometheus: str | None = None,
                 since_s: float = 3600.0) -> RunHistory:
    """The run's history from Prometheus when a URL is given, else from its own log."""
    if prometheus:
        return load_prometheus(prometheus, since_s)
    return load_run_log(run_dir, weights_dir)


def write_report(run_dir: str | Path, weights_dir: str | Path, out: str | Path,
                 prometheus: str | None = None, since_s: float = 3600.0
                 ) -> tuple[Path, RunHistory]:
    """Load the history, draw it into ``out``; returns the path written and the history."""
    history = load_history(run_dir, weights_dir, prometheus, since_s)
    return plot_history(history, out), history
