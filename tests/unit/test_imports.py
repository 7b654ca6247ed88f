"""Import boundaries: the library under ``online_distill/`` runs without Ray (only
``actors/`` imports it), and kafka-python is imported only when a Kafka stream is opened.

Why it matters: the CLI's ``config``/``status``/``produce`` commands, the unit tests and any
process that only reads a config or a checkpoint must start fast and must not need Ray; and
a memory-stream test must not pay for (or depend on) kafka-python.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "online_distill"
ACTORS = REPO / "actors"
OPTIONAL = {"online_distill.teachers.vllm_engine": "vllm"}
"""Modules that exist only to wrap an optional dependency: skipped when it is absent."""
KAFKA_CLIENT = "online_distill.streams.kafka"
"""The one module that is the Kafka client (KafkaSource, KafkaSink): importing it is opening
a Kafka stream, and online_distill.streams loads it only on first use of those names."""

# Each module is imported in a child forked from an interpreter that has already run every
# third-party import the library makes at module level (torch, transformers' model classes,
# fastapi, ...), so one check costs milliseconds instead of a fresh interpreter's seconds.
# The parent asserts those imports pulled in neither ray nor kafka, so what a child finds in
# sys.modules after importing its module is what that module alone brought in.
_CHECKER = textwrap.dedent("""
    import json, importlib, os, sys
    for statement in json.loads(sys.argv[1]):
        try:
            exec(statement, {})
        except ImportError:
            pass  # an optional dependency: its module reports the ImportError itself
    pulled = {"ray", "kafka"} & set(sys.modules)
    assert not pulled, f"a third-party import of the library pulled in {pulled}"
    for name in sys.argv[2:]:
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            try:
                importlib.import_module(name)
                row = {"module": name, "ray": "ray" in sys.modules,
                       "kafka": "kafka" in sys.modules}
            except ImportError as exc:
                row = {"module": name, "missing": getattr(exc, "name", None) or str(exc)}
            except Exception as exc:
                row = {"module": name, "error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(row) + "\\n")
            sys.stdout.flush()
            os._exit(0)
        os.waitpid(pid, 0)
""")


def third_party_imports(files: list[Path]) -> list[str]:
    """The module-level import statements of ``files`` that name neither the project nor
    ray/kafka (those are what the test looks for), as source lines to pre-run."""
    out: set[str] = set()
    for path in files:
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            if not any(n.split(".")[0] in {"online_distill", "ray", "kafka", "__future__"}
                       for n in names):
                out.add(ast.unparse(node))
    return sorted(out)


def library_modules() -> list[str]:
    """Every module under online_distill/, by path (walking with pkgutil would import the
    packages in this process, where other tests may already have imported ray)."""
    names = []
    for path in sorted(LIBRARY.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def test_no_library_module_imports_ray_or_kafka() -> None:
    modules = library_modules()
    assert len(modules) > 80 and "online_distill.streams.kafka" in modules
    assert not any(m.startswith("online_distill.actors") for m in modules)
    prelude = json.dumps(third_party_imports(sorted(LIBRARY.rglob("*.py"))))
    proc = subprocess.run([sys.executable, "-c", _CHECKER, prelude, *modules], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["module"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert set(rows) == set(modules), proc.stderr[-3000:]
    problems = {}
    for name, row in rows.items():
        if "missing" in row and OPTIONAL.get(name) == row["missing"]:
            continue
        if "missing" in row or "error" in row:
            problems[name] = row.get("error") or f"cannot import {row['missing']}"
        elif row["ray"] or (row["kafka"] and name != KAFKA_CLIENT):
            problems[name] = "imports " + " and ".join(
                k for k in ("ray", "kafka") if row[k])
    assert problems == {}, (
        f"{problems}: online_distill/ must import neither ray (only actors/ may) nor kafka at "
        "module level (import it inside the function that opens a Kafka stream)")


def test_kafka_is_imported_when_a_kafka_stream_is_asked_for() -> None:
    """The lazy import is real: the streams package loads kafka-python only when a Kafka
    source or sink is asked for."""
    code = textwrap.dedent("""
        import sys
        import online_distill.streams as streams
        before = "kafka" in sys.modules
        streams.KafkaSource
        print(before, "kafka" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["False", "True"]


def imports_ray_at_module_level(source: str) -> bool:
    """True when ``source`` has ``import ray[...]`` or ``from ray[...] import`` at its top
    level (not inside a function, where it would run only when called)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import) and any(
                a.name == "ray" or a.name.startswith("ray.") for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
                node.module == "ray" or node.module.startswith("ray.")):
            return True
    return False


def test_the_ray_scan_finds_what_it_looks_for() -> None:
    assert imports_ray_at_module_level("import ray\n")
    assert imports_ray_at_module_level("from ray import serve\n")
    assert imports_ray_at_module_level("import os, ray.util\n")
    assert not imports_ray_at_module_level("def f():\n    import ray\n")
    assert not imports_ray_at_module_level("import rayon\nfrom .ray import x\n")


def test_every_actors_file_imports_ray() -> None:
    """actors/ holds only the Ray shells; a module there without Ray belongs in the library."""
    files = sorted(p for p in ACTORS.glob("*.py") if p.name != "__init__.py")
    assert len(files) >= 5
    without = [p.name for p in files
               if not imports_ray_at_module_level(p.read_text(encoding="utf-8"))]
    assert without == [], "move these Ray-free modules out of actors/ into online_distill/"
