"""The demo loop, several times: what `make demo` serves at the end, with mean and spread.

    .venv/bin/python bench/demo_runs.py [--runs 3] [--duration 420] [override ...]

Each run is `online-distill up --file deploy/demo.yaml --duration D` (the whole daemon: the
embedded broker, Ray, teacher, OOD actor, learner, gate, Serve, metrics) in its own run
directory, with ``demo.seed`` set to the run's index (different traffic; the rest of the
demo config as shipped, plus any ``section.field=value`` overrides given). From each run's
``timeline.jsonl`` it prints: the served version's head, tail and post-drift exact-match at
the end; the post-drift probe 120 s after the scheduled drift; the peak label lag (labels
not yet committed by the learner) and prompt lag; the feedback share of what the learner
trained; and the tail kinds' share of the feedback prompts (every kind but the head, add2).
Then each figure's mean (min-max) over the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HEAD_KIND = "add2"


def run_once(index: int, duration: float, overrides: list[str]) -> dict[str, float | None]:
    run = Path(tempfile.mkdtemp(prefix=f"od-demo-run{index}-"))
    cmd = [str(Path(sys.executable).parent / "online-distill"), "up", "--file",
           "deploy/demo.yaml", "--duration", f"{duration:g}", f"run_dir={run}",
           f"learner.checkpoint_dir={run}/ckpt", f"gate.weights_dir={run}/w",
           f"demo.seed={index}", *overrides]
    started = time.monotonic()
    with open(run / "up.out", "w") as out:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"run {index}: `online-distill up` exited {rc}; see {run}/up.out")
    rows = [json.loads(line) for line in (run / "timeline.jsonl").read_text().splitlines()
            if line.strip()]
    figures = summarize(rows)
    print(f"run {index} ({time.monotonic() - started:.0f} s, {run}): "
          + ", ".join(f"{k} {fmt(k, v)}" for k, v in figures.items()), flush=True)
    return figures


def summarize(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """The figures of one run from its timeline records."""
    last = rows[-1]
    scores = last.get("served_scores") or {}
    drift_at = next((r["elapsed_s"] for r in rows if r.get("demo_drifted")), None)
    after = None
    if drift_at is not None:
        later = [r for r in rows if r["elapsed_s"] >= drift_at + 120.0]
        if later:
            after = (later[0].get("served_scores") or {}).get("post_drift")
    kinds = last.get("feedback_kinds") or {}
    total = sum(kinds.values())
    return {
        "head": scores.get("head"), "tail": scores.get("tail"),
        "post_drift": scores.get("post_drift"), "post_drift_at_drift+120s": after,
        "label_lag_peak": max((r["label_lag"] for r in rows if r.get("label_lag") is not None),
                              default=None),
        "prompt_lag_peak": max((r["prompt_lag"] for r in rows
                                if r.get("prompt_lag") is not None), default=None),
        "feedback_share": last.get("feedback_share"),
        "tail_kinds_in_feedback": (1 - kinds.get(HEAD_KIND, 0) / total) if total else None,
    }


def fmt(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if key.endswith("_peak") else f"{value:.1%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=420.0)
    ap.add_argument("overrides", nargs="*", help="section.field=value for every run")
    args = ap.parse_args()
    results = [run_once(i, args.duration, args.overrides) for i in range(args.runs)]
    print(f"\n{args.runs} runs of {args.duration:g} s: mean (min-max)")
    print("| figure | value |\n| --- | --- |")
    for key in results[0]:
        values = [r[key] for r in results if r[key] is not None]
        if not values:
            print(f"| {key} | - |")
            continue
        mean = statistics.mean(values)
        print(f"| {key} | {fmt(key, mean)} ({fmt(key, min(values))}-{fmt(key, max(values))})"
              f"{'' if len(values) == len(results) else f' of {len(values)} runs'} |")


if __name__ == "__main__":
    main()
