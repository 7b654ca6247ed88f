"""Run `online-distill up` in a subprocess for a fixed time and read its summary line."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(r"labeled (\d+), learner steps (\d+)")


@dataclass
class UpRun:
    returncode: int
    output: str
    labeled: int
    steps: int


def run_up(exe: Path, run: Path, duration_s: int, overrides: list[str],
           env: dict[str, str] | None = None, timeout_s: float = 400) -> UpRun:
    """`up --file deploy/demo.yaml` with its run state under ``run`` and no serving."""
    cmd = [str(exe), "up", "--file", "deploy/demo.yaml", "--duration", str(duration_s),
           f"run_dir={run}", f"learner.checkpoint_dir={run}/ckpt", f"gate.weights_dir={run}/w",
           "serve.enabled=false", "metrics.port=0", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    out = proc.stdout + proc.stderr
    found = SUMMARY.search(out)
    labeled, steps = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    return UpRun(proc.returncode, out, labeled, steps)
