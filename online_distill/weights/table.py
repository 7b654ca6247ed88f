"""The ``online-distill versions`` table: every kept version, its scores and the gate's word."""

from __future__ import annotations

import time
from typing import Any

from online_distill.weights.protocol import WeightsStore

PRIMARY = ("exact_match", "agreement")


def version_rows(store: WeightsStore) -> list[dict[str, Any]]:
    """One dict per kept version: manifest, verdict and whether it is served."""
    promoted = store.promoted()
    rows = []
    for v in store.versions():
        m = store.manifest(v)
        verdict = store.verdict(v) or {}
        rows.append({"version": v, "step": m.learner_step, "created_at": m.created_at,
                     "promoted": v == promoted, "decision": verdict.get("decision", "pending"),
                     "scores": verdict.get("scores", {}), "reasons": verdict.get("reasons", [])})
    return rows


def _score(scores: dict[str, float]) -> str:
    for metric in PRIMARY:
        if metric in scores:
            return f"{scores[metric]:.1%}"
    return "-"


def format_versions(store: WeightsStore) -> str:
    rows = version_rows(store)
    if not rows:
        return f"no versions in {store.root} yet"
    probes: list[str] = []
    for r in rows:
        probes += [p for p in r["scores"] if p not in probes]
    head = ["version", "step", "age", *probes, "served", "gate", "reason"]
    table = [head]
    now = time.time()
    for r in rows:
        age = f"{now - r['created_at']:.0f}s"
        table.append([f"v{r['version']}", str(r["step"]), age,
                      *[_score(r["scores"].get(p, {})) for p in probes],
                      "*" if r["promoted"] else "", r["decision"], "; ".join(r["reasons"])])
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
             for row in table]
    return "\n".join(line.rstrip() for line in lines)
