"""Render pending rows into batch input files (JSONL shards), streaming from DuckDB."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from json.encoder import encode_basestring as _json_text
from multiprocessing.pool import AsyncResult
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
PARALLEL_AFTER = 20_000  # rows rendered in-process before worker processes start (they take ~0.5 s)
CHUNK_ROWS = 2_000  # rows per task sent to a worker
MAX_WORKERS = 8


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
    rows: Iterable[tuple[Any, ...]], columns: list[str], spec: LlmSpec, *, workers: int | None = None
) -> Iterator[tuple[str, str, int]]:
    """(request key, batch input line, exact input tokens) per row; the row's first field is its key.

    Rows come out in the order they went in. Past the first ``PARALLEL_AFTER`` rows the rest is
    rendered and counted in worker processes (``workers``, default: one per core, or the
    LLMT_RENDER_WORKERS environment variable; 1 renders in this process). Counting tokens
    exactly is most of the work, and it runs in parallel there."""
    renderer = _LineRenderer(spec, columns)
    n_workers, threshold = _workers(workers)
    it = iter(rows)
    for count, row in enumerate(it):
        yield renderer.line(row)
        if n_workers > 1 and count + 1 >= threshold:
            break
    else:
        return
    yield from _parallel(it, renderer, n_workers)


class _LineRenderer:
    """Renders rows into batch input lines: the constant parts of a line are encoded once."""

    def __init__(self, spec: LlmSpec, columns: list[str]) -> None:
        self.spec = spec
        self.render = PromptRenderer(spec.prompt).row_renderer(columns)
        body = spec.body_base()
        self.response_format = body["response_format"]
        self.counter = RequestCounter(spec.model, self.response_format)
        base = json.dumps(body, ensure_ascii=False, separators=(",", ":"))[:-1]  # the object, left open
        self.mid = f'","method":"POST","url":"{ENDPOINT}","body":' + base + ',"messages":['
        self._system: tuple[str | None, str] = (None, "")  # the last system content and its JSON

    def contents(self, row: tuple[Any, ...]) -> tuple[str | None, str]:
        try:
            return self.render(row[1:])
        except Exception as exc:  # a template error names the prompt and the row
            raise NodeError(
                f"prompt `{self.spec.prompt.name}` failed to render for a row of `{self.spec.node}`: {exc}",
                where=str(self.spec.prompt.path),
                hint="Check the template against NULL or unusual values (use `default` filters).",
            ) from None

    def text(self, key: str, system: str | None, user: str) -> str:
        """The batch input line (the same JSON as ``json.dumps`` of the request, compact)."""
        if system is None:
            messages = '{"role":"user","content":' + _json_text(user) + "}]"
        else:
            if system is not self._system[0] and system != self._system[0]:
                self._system = (system, '{"role":"system","content":' + _json_text(system) + "},")
            messages = self._system[1] + '{"role":"user","content":' + _json_text(user) + "}]"
        return '{"custom_id":"' + key + self.mid + messages + "}}\n"

    def line(self, row: tuple[Any, ...]) -> tuple[str, str, int]:
        system, user = self.contents(row)
        return row[0], self.text(row[0], system, user), self.counter.count_chat(system, user)


def _workers(workers: int | None) -> tuple[int, int]:
    """(worker processes, rows rendered here first). An explicit count starts the workers at once."""
    if workers is None:
        env = os.environ.get("LLMT_RENDER_WORKERS", "").strip()
        if env.isdigit() and int(env) > 0:
            return int(env), 0
        return min(os.cpu_count() or 1, MAX_WORKERS), PARALLEL_AFTER
    return max(workers, 1), 0


_counter: RequestCounter | None = None  # in a worker process


def _init_worker(model: str, response_format: dict[str, Any]) -> None:
    global _counter
    _counter = RequestCounter(model, response_format)


def _count_chunk(contents: list[tuple[str | None, str]]) -> list[int]:
    assert _counter is not None
    count = _counter.count_chat
    return [count(system, user) for system, user in contents]


def _parallel(rows: Iterator[tuple[Any, ...]], renderer: _LineRenderer, n: int) -> Iterator[tuple[str, str, int]]:
    """Render here and count tokens (most of the work) in ``n`` worker processes, a bounded number of
    chunks in flight; lines come out in order."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with context.Pool(n, initializer=_init_worker, initargs=(renderer.spec.model, renderer.response_format)) as pool:
        in_flight: deque[tuple[list[str], list[str], AsyncResult[list[int]]]] = deque()

        def drain(keep: int) -> Iterator[tuple[str, str, int]]:
            while len(in_flight) > keep:
                keys, lines, counts = in_flight.popleft()
                yield from zip(keys, lines, counts.get(), strict=True)

        while chunk := list(islice(rows, CHUNK_ROWS)):
            keys, lines, contents = [], [], []
            for row in chunk:
                system, user = renderer.contents(row)
                keys.append(row[0])
                lines.append(renderer.text(row[0], system, user))
                contents.append((system, user))
            in_flight.append((keys, lines, pool.apply_async(_count_chunk, (contents,))))
            yield from drain(2 * n)
        yield from drain(0)


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
    handle: IO[bytes] | None = None
    written = 0
    try:
        for key, line, tokens in lines:
            data = line.encode()
            size = len(data)
            if current is None or len(current.keys) >= max_requests or current.bytes + size > max_bytes:
                if handle is not None:
                    handle.close()
                shard_id = next(shard_ids)
                current = WrittenShard(shard_id, directory / f"{shard_id}.jsonl")
                handle = current.path.open("wb")
                shards.append(current)
            assert handle is not None
            handle.write(data)
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
