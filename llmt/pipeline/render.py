"""Render pending rows into batch input files (JSONL shards), streaming from DuckDB."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import duckdb

from llmt.errors import NodeError
from llmt.pipeline.spec import ENDPOINT, LlmSpec
from llmt.prompts import PromptRenderer
from llmt.tokens import RequestCounter

MAX_REQUESTS_PER_BATCH = 50_000
MAX_BYTES_PER_BATCH = 190 * 1024 * 1024  # OpenAI's limit is 200 MB per input file
FETCH_ROWS = 5_000


@dataclass
class WrittenShard:
    shard_id: str
    path: Path
    keys: list[str] = field(default_factory=list)
    bytes: int = 0
    input_tokens: int = 0


def iter_rows(cursor: duckdb.DuckDBPyConnection) -> Iterator[tuple[Any, ...]]:
    while chunk := cursor.fetchmany(FETCH_ROWS):
        yield from chunk


def render_lines(
    rows: Iterable[tuple[Any, ...]], columns: list[str], spec: LlmSpec
) -> Iterator[tuple[str, str, int]]:
    """(request key, batch input line, exact input tokens) per row; the row's first field is its key."""
    renderer = PromptRenderer(spec.prompt)
    body = spec.body_base()
    counter = RequestCounter(spec.model, body["response_format"])
    base = json.dumps(body, ensure_ascii=False, separators=(",", ":"))[:-1]  # the object, left open
    head = f'{{"custom_id":"%s","method":"POST","url":"{ENDPOINT}","body":'
    for row in rows:
        key = row[0]
        try:
            messages = renderer.messages(dict(zip(columns, row[1:], strict=True)))
        except Exception as exc:  # a template error names the prompt and the row
            raise NodeError(
                f"prompt `{spec.prompt.name}` failed to render for a row of `{spec.node}`: {exc}",
                where=str(spec.prompt.path),
                hint="Check the template against NULL or unusual values (use `default` filters).",
            ) from None
        line = head % key + base + ',"messages":' + json.dumps(messages, ensure_ascii=False, separators=(",", ":"))
        yield key, line + "}}\n", counter.count(messages)


def write_shards(
    lines: Iterable[tuple[str, str, int]],
    directory: Path,
    shard_ids: Iterator[str],
    *,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BYTES_PER_BATCH,
    advance: Callable[[int], None] | None = None,
) -> list[WrittenShard]:
    """Write request lines into shards of at most ``max_requests`` lines and ``max_bytes`` bytes.
    The files are complete when this returns."""
    directory.mkdir(parents=True, exist_ok=True)
    shards: list[WrittenShard] = []
    current: WrittenShard | None = None
    handle: IO[str] | None = None
    written = 0
    try:
        for key, line, tokens in lines:
            size = len(line.encode())
            if current is None or len(current.keys) >= max_requests or current.bytes + size > max_bytes:
                if handle is not None:
                    handle.close()
                shard_id = next(shard_ids)
                current = WrittenShard(shard_id, directory / f"{shard_id}.jsonl")
                handle = current.path.open("w", encoding="utf-8")
                shards.append(current)
            assert handle is not None
            handle.write(line)
            current.keys.append(key)
            current.bytes += size
            current.input_tokens += tokens
            written += 1
            if advance is not None and written % 1000 == 0:
                advance(1000)
    finally:
        if handle is not None:
            handle.close()
    if advance is not None:
        advance(written % 1000)
    return shards
