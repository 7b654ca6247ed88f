"""Soak: the whole loop under steady traffic for a long while, with periodic actor kills.

    .venv/bin/python bench/soak.py                 # 10 minutes, 20 prompts/s, a kill every 90 s
    .venv/bin/python bench/soak.py --minutes 30 --rate 30

Runs the fault harness of tests/faults (real broker, real Ray, the demo models; every prompt
must be trained on) and, every ``--sample-s``, the resident memory (RSS) of each actor, the
driver and the broker. Kills alternate between teacher-0 and the learner; the gate, the
driver and the broker are never killed, so their memory shows a leak over the whole run.

Prints the counts (prompts in, labeled, trained, lost, duplicates, dead letters), each
process's RSS growth from its first sample after ``--warmup-s`` of its life to its last
(goal: under 10 %), and the lag of every consumer once traffic has stopped (goal: 0).
Writes everything to runs/soak/soak.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "faults"))

import ray  # noqa: E402
from harness import Fault, Outcome, run_scenario  # noqa: E402

from online_distill.streams import EmbeddedBroker  # noqa: E402

OUT = REPO / "runs" / "soak"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_of(pid: int) -> int | None:
    """Resident bytes of ``pid`` (Linux /proc), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def _own_pid(_actor: Any) -> int:
    return os.getpid()


@dataclass
class Sampler:
    """RSS samples per process name: [(seconds since start, pid, bytes)]."""

    every_s: float
    samples: dict[str, list[tuple[float, int, int]]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self, sup: Any, broker: EmbeddedBroker) -> None:
        t0 = time.monotonic()

        def actors() -> dict[str, Any]:
            loop = sup.loop
            out = {f"teacher-{i}": h for i, h in enumerate(loop.teachers)}
            out.update(learner=loop.learner, gate=loop.gate)
            return out

        def run() -> None:
            while not self.stop.wait(self.every_s):
                pids = {"driver": os.getpid(), "broker": broker.pid}
                for name, handle in actors().items():
                    try:
                        pids[name] = ray.get(handle.__ray_call__.remote(_own_pid), timeout=10)
                    except Exception:  # noqa: BLE001 - restarting: no sample this time
                        pids[name] = None
                now = time.monotonic() - t0
                for name, pid in pids.items():
                    rss = rss_of(pid) if pid else None
                    if rss is not None:
                        self.samples.setdefault(name, []).append((round(now, 1), pid, rss))

        threading.Thread(target=run, name="soak-sampler", daemon=True).start()

    def growth(self, warmup_s: float) -> dict[str, dict[str, Any]]:
        """Per process: the longest-lived pid's RSS after ``warmup_s`` of its life vs its
        last sample."""
        out: dict[str, dict[str, Any]] = {}
        for name, rows in self.samples.items():
            lives: dict[int, list[tuple[float, int]]] = {}
            for t, pid, rss in rows:
                lives.setdefault(pid, []).append((t, rss))
            pid, life = max(lives.items(), key=lambda kv: kv[1][-1][0] - kv[1][0][0])
            born = life[0][0]
            warm = [(t, r) for t, r in life if t - born >= warmup_s] or life[-1:]
            (t_a, a), (t_b, b) = warm[0], life[-1]
            out[name] = {"pid": pid, "pids": len(lives), "from_s": t_a, "to_s": t_b,
                         "rss_from_mb": round(a / 2**20, 1), "rss_to_mb": round(b / 2**20, 1),
                         "growth_pct": round(100 * (b - a) / a, 1)}
        return out


def kill(target: str):
    def action(sup: Any) -> None:
        loop = sup.loop
        handle = loop.learner if target == "learner" else loop.teachers[0]
        ray.kill(handle, no_restart=False)
    return action


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=20.0, help="prompts per second")
    ap.add_argument("--fault-every-s", type=float, default=90.0)
    ap.add_argument("--sample-s", type=float, default=15.0)
    ap.add_argument("--warmup-s", type=float, default=90.0,
                    help="a process's RSS is compared from this far into its life")
    args = ap.parse_args()

    seconds = args.minutes * 60
    prompts = int(seconds * args.rate)
    targets = ["teacher-0", "learner"]
    faults = []
    at, i = args.fault_every_s, 0
    while at < seconds - 30:
        target = targets[i % 2]
        watch = ("learner", "step") if target == "learner" else ("teacher-0", "labeled")
        faults.append(Fault(at, f"kill {target}", kill(target), watch))
        at, i = at + args.fault_every_s, i + 1
    sampler = Sampler(args.sample_s)
    lag: dict[str, Any] = {}

    def at_end(sup: Any, _out: Outcome) -> None:
        time.sleep(10)  # one more lag probe (every 5 s) after the last commit
        snap = sup.snapshot()
        lag.update({k: getattr(v, "lag", None) for k, v in snap.by_name().items()})
        sampler.stop.set()

    print(f"soak: {args.minutes:g} min, {prompts} prompts at {args.rate:g}/s, "
          f"{len(faults)} kills (every {args.fault_every_s:g} s), RSS every {args.sample_s:g} s",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        broker = EmbeddedBroker(log_dir=Path(tmp) / "broker").start()
        try:
            out = run_scenario("soak", Path(tmp), faults, prompts=prompts, rate=args.rate,
                               broker=broker, recover_s=180, settle_s=300, check=at_end,
                               on_start=lambda sup: sampler.start(sup, broker))
        finally:
            broker.stop()
    growth = sampler.growth(args.warmup_s)
    print("\nprocess       pids  RSS MB (from s -> to s)          growth")
    for name, g in sorted(growth.items()):
        print(f"{name:12s} {g['pids']:5d}  {g['rss_from_mb']:7.1f} ({g['from_s']:5.0f}) -> "
              f"{g['rss_to_mb']:7.1f} ({g['to_s']:5.0f})   {g['growth_pct']:+6.1f}%")
    print(f"lag at the end: {lag}")
    print(f"recovery after each kill (s): {out.recovery_s}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "soak.json").write_text(json.dumps(
        {"args": vars(args), "outcome": out.__dict__, "rss": growth, "lag_at_end": lag,
         "samples": sampler.samples}, indent=1, default=str))
    print(f"wrote {OUT / 'soak.json'}")


if __name__ == "__main__":
    main()
