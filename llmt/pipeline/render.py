"""Render pending rows into batch input files (JSONL shards), streaming from DuckDB."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import duckdb

from llmt.errors import NodeError
from llmt.pipeline.spec import ENDPOINT, LlmSpec
from llmt.prompts import PromptRenderer

MAX_REQUESTS_PER_BATCH = 50_000
MAX_BYTES_PER_BATCH = 190 * 1024 * 1024  # OpenAI's limit is 200 MB per input file
FETCH_ROWS = 5_000


@dataclass
class WrittenShard:
    shard_id: str
    path: Path
    keys: list[str] = field(default_factory=list)
    bytes: int = 0


def iter_rows(cursor: duckdb.DuckDBPyConnection) -> Iterator[tuple[Any, ...]]:
    while chunk := cursor.fetchmany(FETCH_ROWS):
        yield from chunk


def write_shards(
    rows: Iterator[tuple[Any, ...]],
    columns: list[str],
    spec: LlmSpec,
    directory: Path,
    shard_ids: Iterator[str],
    *,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BYTES_PER_BATCH,
    limit: int | None = None,
    advance: Callable[[int], None] | None = None,
) -> list[WrittenShard]:
    """Write one JSONL line per row (first field: request key, then ``columns``) into shards of
    at most ``max_requests`` lines and ``max_bytes`` bytes. Files are complete when this returns."""
    directory.mkdir(parents=True, exist_ok=True)
    renderer = PromptRenderer(spec.prompt)
    base = json.dumps(spec.body_base(), ensure_ascii=False, separators=(",", ":"))[:-1]  # open object
    head = f'{{"custom_id":"%s","method":"POST","url":"{ENDPOINT}","body":'
    shards: list[WrittenShard] = []
    current: WrittenShard | None = None
    handle: IO[str] | None = None
    written = 0
    try:
        for row in rows:
            if limit is not None and written >= limit:
                break
            key = row[0]
            values = dict(zip(columns, row[1:], strict=True))
            try:
                messages = renderer.messages(values)
            except Exception as exc:
                raise NodeError(
                    f"prompt `{spec.prompt.name}` failed to render for a row of `{spec.node}`: {exc}",
                    where=str(spec.prompt.path),
                    hint="Check the template against NULL or unusual values (use `default` filters).",
                ) from None
            line = (
                head % key + base + ',"messages":'
                + json.dumps(messages, ensure_ascii=False, separators=(",", ":")) + "}}\n"
            )
            size = len(line.encode())
            if current is None or len(current.keys) >= max_requests or current.bytes + size > max_bytes:
                if handle is not None:
                    handle.close()
                current = WrittenShard(next(shard_ids), directory / "")
                current.path = directory / f"{current.shard_id}.jsonl"
                handle = current.path.open("w", encoding="utf-8")
                shards.append(current)
            assert handle is not None
            handle.write(line)
            current.keys.append(key)
            current.bytes += size
            written += 1
            if advance is not None and written % 1000 == 0:
                advance(1000)
    finally:
        if handle is not None:
            handle.close()
    if advance is not None:
        advance(written % 1000)
    return shards
