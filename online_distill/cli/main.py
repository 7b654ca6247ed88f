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
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily where used, so `online-distill config` answers at once
    from online_distill.weights import WeightsStore


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


def _cmd_tiny_chat(args: argparse.Namespace) -> int:
    from online_distill.models.tiny_chat import build_tiny_chat

    paths = build_tiny_chat(args.out, seed=args.seed)
    print(f"wrote a random Qwen2 teacher to {paths.teacher} and a random Llama student to "
          f"{paths.student}, sharing one byte-level BPE tokenizer with a ChatML template "
          f"({paths.tokenizer}); try them with `online-distill up --file deploy/chat.yaml "
          f"teacher.model={paths.teacher} learner.student_model={paths.student}`")
    return 0


def _cmd_demo_eval(args: argparse.Namespace) -> int:
    from online_distill.tasks.probes import measure_demo_model

    report = measure_demo_model(args.model, size=args.size, seed=args.seed,
                                continuation_trials=args.trials)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    import logging

    from transformers.utils import logging as hf_logging

    from online_distill.cli.status import print_summary
    from online_distill.cli.up import run_up
    from online_distill.config import load_config

    cfg = load_config(args.file, args.overrides)
    hf_logging.disable_progress_bar()  # no loading bars between the status lines
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    # kafka-python logs every connection at INFO; its warnings and errors still show.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLevelName(cfg.log_level)))
    demo = args.demo_traffic if args.demo_traffic is not None else cfg.demo.enabled
    duration = args.duration if args.duration is not None else cfg.demo.duration_s
    summary = run_up(cfg, demo_traffic=demo, duration_s=duration)
    references: dict[str, dict[str, float]] = {}
    if demo and not cfg.teacher.model:
        from online_distill.cli.status import score_model
        from online_distill.tasks.models import DEMO_STUDENT_DIR, DEMO_TEACHER_DIR

        references["teacher"] = score_model(str(DEMO_TEACHER_DIR), 100)
        if not cfg.learner.student_model:
            references["fresh student"] = score_model(str(DEMO_STUDENT_DIR), 100)
    print_summary(summary, references)
    return 0


def _bootstrap_or_exit(cfg) -> str:  # type: ignore[no-untyped-def]
    if not cfg.kafka.bootstrap_servers:
        from online_distill.config import ConfigError

        raise ConfigError("is empty: produce and export talk to a running broker; pass "
                          "kafka.bootstrap_servers=host:port (the address `up` printed)",
                          path="kafka.bootstrap_servers", value="")
    return str(cfg.kafka.bootstrap_servers)


def _cmd_produce(args: argparse.Namespace) -> int:
    from online_distill.cli.produce import produce_file
    from online_distill.config import load_config
    from online_distill.streams import KafkaSink

    cfg = load_config(args.file, args.overrides)
    bootstrap = _bootstrap_or_exit(cfg)
    sink = KafkaSink(cfg.kafka, bootstrap, "produce")
    stream = sys.stdin if args.input == "-" else open(args.input)  # noqa: SIM115
    try:
        count = produce_file(sink, cfg.kafka.prompts_topic, stream)
    except ValueError as exc:
        print(f"online-distill produce: {args.input}: {exc}", file=sys.stderr)
        return 2
    finally:
        sink.close()
        if stream is not sys.stdin:
            stream.close()
    print(f"produced {count} prompts to {cfg.kafka.prompts_topic}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from online_distill.cli.export import export_labels
    from online_distill.config import load_config

    cfg = load_config(args.file, args.overrides)
    count = export_labels(cfg, _bootstrap_or_exit(cfg), Path(args.out))
    print(f"exported {count} labeled examples to {args.out}")
    return 0


def _version_and_overrides(args: argparse.Namespace) -> int | None:
    """Split ``[V] [a.b=c ...]``: a bare number is the version, the rest are overrides."""
    versions = [a for a in args.rest if "=" not in a]
    args.overrides = [a for a in args.rest if "=" in a]
    if len(versions) > 1 or (versions and not versions[0].lstrip("v").isdigit()):
        raise SystemExit(f"online-distill: expected one version number (like 12 or v12), "
                         f"got {' '.join(versions)}")
    return int(versions[0].lstrip("v")) if versions else None


def _store(args: argparse.Namespace) -> WeightsStore:
    from online_distill.config import load_config
    from online_distill.weights.store import store_for

    cfg = load_config(args.file, args.overrides)
    root = Path(cfg.gate.weights_dir)
    if not root.is_dir():
        raise SystemExit(f"online-distill: no weights store at {root}; run `online-distill up` "
                         "first or point gate.weights_dir=... at one")
    return store_for(cfg)


def _cmd_versions(args: argparse.Namespace) -> int:
    from online_distill.weights.table import format_versions, version_rows

    store = _store(args)
    if args.json:
        print(json.dumps(version_rows(store), indent=2))
    else:
        print(format_versions(store))
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    version = _version_and_overrides(args)
    if version is None:
        raise SystemExit("online-distill: promote needs a version number (see `versions`)")
    store = _store(args)
    before = store.promoted()
    try:
        store.promote(version, reason="manual", by="operator")
    except ValueError as exc:
        print(f"online-distill: {exc}", file=sys.stderr)
        return 2
    print(f"promoted v{version} (was v{before}); every replica switches "
          "serve.swap_delay_s after it")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    version = _version_and_overrides(args)
    store = _store(args)
    before = store.promoted()
    try:
        target = store.rollback(version)
    except ValueError as exc:
        print(f"online-distill: {exc}", file=sys.stderr)
        return 2
    print(f"rolled back from v{before} to v{target}; every replica switches "
          "serve.swap_delay_s after it")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from online_distill.config import load_config
    from online_distill.report.draw import ReportError, summary_line, write_report

    cfg = load_config(args.file, args.overrides)
    run_dir = Path(args.run_dir or cfg.run_dir)
    weights_dir = Path(args.weights_dir or cfg.gate.weights_dir)
    out = Path(args.out) if args.out else run_dir / "report.png"
    try:
        path, history = write_report(run_dir, weights_dir, out, args.prometheus, args.since)
    except ReportError as exc:
        print(f"online-distill report: {exc}", file=sys.stderr)
        return 1
    print(path)
    print(summary_line(history))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from online_distill.tasks.models import DEMO_STUDENT_DIR, DEMO_TEACHER_DIR
    from online_distill.tasks.teacher_training import TeacherRecipe

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

    p = sub.add_parser("up", help="run the whole loop with a live status line")
    p.add_argument("--file", "--config", "-f", dest="file", default=None,
                   help="YAML config file (default: built-in defaults, the embedded demo)")
    p.add_argument("--demo-traffic", action=argparse.BooleanOptionalAction, default=None,
                   help="generate demo traffic (default: demo.enabled)")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: demo.duration_s; 0 = never)")
    p.add_argument("overrides", nargs="*", metavar="a.b.c=value", help="dotted overrides")
    p.set_defaults(func=_cmd_up)

    p = sub.add_parser("produce", help="send JSONL (or plain-text) prompts to the prompts topic")
    p.add_argument("input", help="a file, or - for stdin; lines: {\"text\": ...} or plain text")
    p.add_argument("--file", "--config", "-f", dest="file", default=None)
    p.add_argument("overrides", nargs="*", metavar="a.b.c=value")
    p.set_defaults(func=_cmd_produce)

    p = sub.add_parser("export", help="write the labeled stream as JSONL (or .parquet)")
    p.add_argument("--out", required=True, help="output file (.jsonl or .parquet)")
    p.add_argument("--file", "--config", "-f", dest="file", default=None)
    p.add_argument("overrides", nargs="*", metavar="a.b.c=value")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("versions", help="list kept student versions, their gate scores and "
                       "which one is served")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--file", "--config", "-f", dest="file", default=None)
    p.add_argument("overrides", nargs="*", metavar="a.b.c=value")
    p.set_defaults(func=_cmd_versions)

    p = sub.add_parser("promote", help="serve version V now (bypasses the gate)")
    p.add_argument("--file", "--config", "-f", dest="file", default=None)
    p.add_argument("rest", nargs="*", metavar="V [a.b.c=value ...]",
                   help="a kept version number (see `versions`), then dotted overrides")
    p.set_defaults(func=_cmd_promote)

    p = sub.add_parser("rollback", help="serve the previously served version (or V)")
    p.add_argument("--file", "--config", "-f", dest="file", default=None)
    p.add_argument("rest", nargs="*", metavar="[V] [a.b.c=value ...]",
                   help="version to return to (default: the one served before the current), "
                   "then dotted overrides")
    p.set_defaults(func=_cmd_rollback)

    p = sub.add_parser("report", help="draw one PNG of a run: accuracy, drift, versions, lag")
    p.add_argument("--file", "--config", "-f", dest="file", default=None)
    p.add_argument("--run-dir", default=None,
                   help="the run to draw (default: run_dir; reads its timeline.jsonl)")
    p.add_argument("--weights-dir", default=None,
                   help="its weights store (default: gate.weights_dir; reads verdicts.jsonl "
                   "and promotions.jsonl)")
    p.add_argument("--prometheus", default=None, metavar="URL",
                   help="read Prometheus at URL (like http://127.0.0.1:9090) instead of the log")
    p.add_argument("--since", type=float, default=3600.0, metavar="SECONDS",
                   help="with --prometheus: how far back to look (default: %(default)g)")
    p.add_argument("--out", default=None, help="the PNG to write (default: RUN_DIR/report.png)")
    p.add_argument("overrides", nargs="*", metavar="a.b.c=value")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("demo-teacher",
                       help="train the demo teacher from scratch (about 40 min on 2 cores)")
    p.add_argument("--out", default=str(DEMO_TEACHER_DIR), help="output directory (HF format)")
    p.add_argument("--student-out", default=str(DEMO_STUDENT_DIR),
                   help="where to write the fresh student initialisation")
    p.add_argument("--steps", type=int, default=TeacherRecipe().steps,
                   help="optimizer steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo_teacher)

    p = sub.add_parser("tiny-chat", help="build tiny random chat models (Qwen2 teacher, Llama "
                       "student, one BPE tokenizer with a chat template) to try deploy/chat.yaml")
    p.add_argument("out", nargs="?", default="models/tiny-chat", help="output directory "
                   "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_tiny_chat)

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
    from online_distill.streams import BrokerUnreachable

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"online-distill: configuration error: {exc}", file=sys.stderr)
        return 2
    except BrokerUnreachable as exc:
        print(f"online-distill: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("online-distill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
