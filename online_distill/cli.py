"""The ``online-distill`` command line: one entry point, one subcommand per job.

Subcommands import what they need lazily, so ``online-distill config`` answers at once.
Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _cmd_config(args: argparse.Namespace) -> int:
    from online_distill.config import describe_config, load_config

    cfg = load_config(args.file, args.overrides)
    print(describe_config(cfg))
    return 0


def _cmd_demo_teacher(args: argparse.Namespace) -> int:
    from online_distill.tasks.models import write_student_init
    from online_distill.tasks.probes import measure_demo_model
    from online_distill.tasks.teacher_training import TeacherRecipe, train_teacher

    recipe = TeacherRecipe(steps=args.steps, seed=args.seed)
    out = Path(args.out)
    train_teacher(out, recipe, log=lambda line: print(line, flush=True))
    write_student_init(Path(args.student_out), seed=args.seed)
    print(f"saved teacher to {out} and the fresh student to {args.student_out}")
    print(json.dumps(measure_demo_model(out), indent=2))
    return 0


def _cmd_demo_eval(args: argparse.Namespace) -> int:
    from online_distill.tasks.probes import measure_demo_model

    report = measure_demo_model(args.model, size=args.size, seed=args.seed,
                                continuation_trials=args.trials)
    print(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from online_distill.tasks.models import DEMO_STUDENT_DIR, DEMO_TEACHER_DIR

    parser = argparse.ArgumentParser(
        prog="online-distill",
        description="Distil a stream of unlabeled prompts into an always-fresh student model.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="print the effective config with every field's help")
    p.add_argument("--file", "--config", "-f", dest="file", default=None,
                   help="YAML config file (default: built-in defaults)")
    p.add_argument("overrides", nargs="*", metavar="a.b.c=value", help="dotted overrides")
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("demo-teacher",
                       help="train the demo teacher from scratch (about 40 min on 2 cores)")
    p.add_argument("--out", default=str(DEMO_TEACHER_DIR), help="output directory (HF format)")
    p.add_argument("--student-out", default=str(DEMO_STUDENT_DIR),
                   help="where to write the fresh student initialisation")
    p.add_argument("--steps", type=int, default=10000, help="optimizer steps")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo_teacher)

    p = sub.add_parser("demo-eval", help="measure a model on the demo probe sets")
    p.add_argument("--model", default=str(DEMO_TEACHER_DIR), help="model directory (HF format)")
    p.add_argument("--size", type=int, default=300, help="problems per probe set")
    p.add_argument("--seed", type=int, default=None, help="draw fresh probes with this seed")
    p.add_argument("--trials", type=int, default=100, help="few-shot continuation trials per kind")
    p.set_defaults(func=_cmd_demo_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    from online_distill.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"online-distill: configuration error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("online-distill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
