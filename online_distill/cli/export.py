"""Export the labeled stream (the distilled dataset) as JSONL, or Parquet with pyarrow."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

from online_distill.config import Config
from online_distill.messages import LabeledExample, MessageDecodeError, decode, to_json_dict
from online_distill.messages.wire import DEFAULT_MAX_BYTES

log = logging.getLogger(__name__)


def read_topic(cfg: Config, bootstrap: str, topic: str, reader: str, idle_polls: int = 3
               ) -> Iterator[bytes]:
    """Every record value of ``topic`` from its start until ``idle_polls`` empty polls.

    Reads with its own consumer (``reader`` names it) and commits nothing, so the loop's
    consumer groups are not disturbed.
    """
    from online_distill.streams import KafkaSource

    source = KafkaSource(cfg.kafka, bootstrap, reader, [topic], manual_assign=True)
    source.seek({p: 0 for p in source.assignment()})
    empty = 0
    try:
        while empty < idle_polls:
            records = source.poll(timeout_s=1.0)
            empty = 0 if records else empty + 1
            for rec in records:
                yield rec.value
    finally:
        source.close()


def export_labels(cfg: Config, bootstrap: str, out: Path) -> int:
    """Read the labels topic from its start to its end; write one example per line.

    Undecodable records are skipped and counted in the log. ``.parquet`` output needs pyarrow.
    """
    rows: list[dict] = []
    bad = 0
    for value in read_topic(cfg, bootstrap, cfg.kafka.labels_topic, f"export-{out.name}"):
        try:
            rows.append(to_json_dict(decode(value, LabeledExample, DEFAULT_MAX_BYTES)))
        except MessageDecodeError:
            bad += 1
    if bad:
        log.warning("export: skipped %d undecodable records", bad)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise RuntimeError("Parquet export needs pyarrow: pip install pyarrow, "
                               "or write .jsonl") from exc
        pq.write_table(pa.Table.from_pylist([{"json": json.dumps(r)} | _flat(r) for r in rows]),
                       out)
    else:
        with out.open("w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return len(rows)


def _flat(row: dict) -> dict:
    """Columns a dataset user wants first: prompt (rendered, for a conversation), the
    conversation (empty for a text prompt), the PT texts, origin, kind."""
    pts = row.get("pseudo_targets", [])
    return {"prompt_id": row.get("prompt_id"), "prompt": row.get("prompt_text"),
            "messages": row.get("messages", []),
            "targets": [pt.get("text") for pt in pts], "origin": row.get("origin"),
            "kind": row.get("kind")}
