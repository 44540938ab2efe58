"""Render pending rows into batch input files (JSONL shards), streaming from DuckDB."""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from json.encoder import encode_basestring as _json_text
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from llmt.cost import RequestLimits
from llmt.errors import NodeError
from llmt.pipeline.spec import ENDPOINT, LlmSpec
from llmt.prompts import PromptRenderer
from llmt.providers.base import MAX_BYTES_PER_BATCH, MAX_REQUESTS_PER_BATCH
from llmt.tokens import RequestCounter, TokenMemo, count_batch_file, count_request
from llmt.warehouse.base import Warehouse

if TYPE_CHECKING:
    from multiprocessing.pool import AsyncResult

PARALLEL_AFTER = 20_000  # rows rendered in-process before worker processes start (they take ~0.5 s)
CHUNK_ROWS = 2_000  # rows per task sent to a worker
MAX_WORKERS = 8
WRITE_BUFFER = 1 << 20
NO_LIMITS = RequestLimits()
INFINITE = float("inf")
_RARE_CONTROLS = bytes(c for c in range(32) if c not in b"\t\n\r")  # json_utf8 leaves these to json


@dataclass
class WrittenShard:
    shard_id: str
    path: Path
    n_requests: int = 0
    bytes: int = 0
    input_tokens: int = 0
    exact: bool = True  # False: input_tokens is an upper bound (UTF-8 bytes), not a count
    largest: int = 0  # the input tokens of its largest request (a bound, or exact, like input_tokens)

    @property
    def keys_path(self) -> Path:
        """The shard's request keys, one per line (read by the state tables, then removed)."""
        return self.path.with_suffix(".keys")


def render_lines(
    rows: Iterable[tuple[Any, ...]], columns: list[str], spec: LlmSpec, *, exact: bool = True,
    workers: int | None = None, memo: TokenMemo | None = None,
) -> Iterator[tuple[str, bytes, int]]:
    """(request key, batch input line in UTF-8, input tokens) per row; the row's first field is its key.

    Rows come out in the order they went in. With ``exact`` the tokens are counted exactly, and
    past the first ``PARALLEL_AFTER`` rows the rest is rendered and counted in worker processes
    (``workers``, default: one per core, or the LLMT_RENDER_WORKERS environment variable; 1 renders
    in this process): counting is most of the work. Without ``exact`` the tokens are an upper bound
    (the user message's UTF-8 bytes), about 50 times cheaper, and everything runs here; with ``memo``
    knowing the system message and schema, no encoding is loaded."""
    renderer = _LineRenderer(spec, columns, memo)
    if not exact:
        yield from map(renderer.line_bound, rows)
        return
    n_workers, threshold = _workers(workers)
    it = iter(rows)
    for count, row in enumerate(it):
        yield renderer.line(row)
        if n_workers > 1 and count + 1 >= threshold:
            break
    else:
        return
    yield from _parallel(it, renderer, n_workers)


def render_pending(
    wh: Warehouse, select: str, columns: list[str], spec: LlmSpec, memo: TokenMemo | None = None,
) -> Iterator[tuple[str, bytes, int]]:
    """What `render_lines` gives without ``exact`` for the rows of ``select`` (a request key, then
    ``columns``, from `one_row_per_key_sql`), read from the warehouse. When the prompt is text and
    `{{ column }}` only (and its system message has no variables), its text columns are read as their UTF-8
    bytes and joined as bytes: DuckDB hands over bytes at half the cost of text, and the line wants bytes
    (benchmarks/README.md)."""
    described = [(c.name, c.type.family) for c in wh.describe(select)]
    texts = {name for name, family in described[1:] if family == "text"}
    utf8 = PromptRenderer(spec.prompt).utf8_renderer(columns, texts) if texts else None
    if utf8 is None:
        yield from render_lines(first_per_key(wh, wh.stream(select)), columns, spec, exact=False, memo=memo)
        return
    system, body = utf8
    renderer = _LineRenderer(spec, columns, memo)
    read = ", ".join(wh.utf8_sql(wh.quote(name)) if i and name in texts else wh.quote(name)
                     for i, (name, _) in enumerate(described))

    def line(row: tuple[Any, ...]) -> tuple[str, bytes, int]:
        user_json = utf8_json(body(row[1:]))
        return row[0], renderer.data(row[0], system, user_json), renderer.counter.bound_chat(system, len(user_json))

    yield from map(line, first_per_key(wh, wh.stream(f"SELECT {read} FROM ({select}) AS _llmt_pending")))


def first_per_key(wh: Warehouse, rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """``rows`` of `one_row_per_key_sql` (a request key first), each key once: its later rows are dropped
    where the engine may repeat keys (`ROW_PER_KEY`)."""
    if wh.ROW_PER_KEY:
        yield from rows
        return
    seen: set[str] = set()
    for row in rows:
        if row[0] not in seen:
            seen.add(row[0])
            yield row


class _LineRenderer:
    """Renders rows into batch input lines: the constant parts of a line are encoded once."""

    def __init__(self, spec: LlmSpec, columns: list[str], memo: TokenMemo | None = None) -> None:
        self.spec = spec
        self.render = PromptRenderer(spec.prompt).row_renderer(columns)
        body = spec.body_base()
        self.response_format = body["response_format"]
        self.counter = RequestCounter(spec.model, self.response_format, memo)
        base = json.dumps(body, ensure_ascii=False, separators=(",", ":"))[:-1]  # the object, left open
        self.mid = f'","method":"POST","url":"{ENDPOINT}","body":' + base + ',"messages":['
        self._after_key: tuple[str | None, bytes] | None = None  # the last system content, and what follows a key

    def contents(self, row: tuple[Any, ...]) -> tuple[str | None, str]:
        try:
            return self.render(row[1:])
        except Exception as exc:  # a template error names the prompt and the row
            raise NodeError(
                f"prompt `{self.spec.prompt.name}` failed to render for a row of `{self.spec.node}`: {exc}",
                where=str(self.spec.prompt.path),
                hint="Check the template against NULL or unusual values (use `default` filters).",
            ) from None

    def data(self, key: str, system: str | None, user_json: bytes) -> bytes:
        """The batch input line, UTF-8 (the same JSON as ``json.dumps`` of the request, compact,
        non-ASCII kept), from the user message as a JSON string (`json_utf8`)."""
        after = self._after_key
        if after is None or (system is not after[0] and system != after[0]):
            system_json = "" if system is None else '{"role":"system","content":' + _json_text(system) + "},"
            after = self._after_key = (system, (self.mid + system_json + '{"role":"user","content":').encode())
        return b"".join((b'{"custom_id":"', key.encode(), after[1], user_json, b"}]}}\n"))

    def line(self, row: tuple[Any, ...]) -> tuple[str, bytes, int]:
        system, user = self.contents(row)
        return row[0], self.data(row[0], system, json_utf8(user)), self.counter.count_chat(system, user)

    def line_bound(self, row: tuple[Any, ...]) -> tuple[str, bytes, int]:
        """The line, and an upper bound of its tokens from the length of the user message's JSON (at least its
        UTF-8 bytes)."""
        system, user = self.contents(row)
        user_json = json_utf8(user)
        return row[0], self.data(row[0], system, user_json), self.counter.bound_chat(system, len(user_json))


def json_utf8(text: str) -> bytes:
    """``text`` as a JSON string in UTF-8, non-ASCII kept: ``json.dumps(text, ensure_ascii=False).encode()``
    at two thirds of its cost (1.0-1.4 µs less for a 500-character review)."""
    return utf8_json(text.encode())


def utf8_json(data: bytes) -> bytes:
    """A text given as its UTF-8 bytes, as a JSON string in UTF-8 (what `json_utf8` gives for the text): the
    bytes with backslash, quote, newline, return and tab escaped. A text with another control character
    takes json's way."""
    if len(data.translate(None, _RARE_CONTROLS)) != len(data):
        return _json_text(data.decode()).encode()
    return b'"' + (data.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n")
                   .replace(b"\r", b"\\r").replace(b"\t", b"\\t")) + b'"'


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


def _parallel(rows: Iterator[tuple[Any, ...]], renderer: _LineRenderer, n: int) -> Iterator[tuple[str, bytes, int]]:
    """Render here and count tokens (most of the work) in ``n`` worker processes, a bounded number of
    chunks in flight; lines come out in order."""
    import multiprocessing  # (here: only rendering many rows uses worker processes)

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with context.Pool(n, initializer=_init_worker, initargs=(renderer.spec.model, renderer.response_format)) as pool:
        in_flight: deque[tuple[list[str], list[bytes], AsyncResult[list[int]]]] = deque()

        def drain(keep: int) -> Iterator[tuple[str, bytes, int]]:
            while len(in_flight) > keep:
                keys, lines, counts = in_flight.popleft()
                yield from zip(keys, lines, counts.get(), strict=True)

        while chunk := list(islice(rows, CHUNK_ROWS)):
            keys: list[str] = []
            lines: list[bytes] = []
            contents: list[tuple[str | None, str]] = []
            for row in chunk:
                system, user = renderer.contents(row)
                keys.append(row[0])
                lines.append(renderer.data(row[0], system, json_utf8(user)))
                contents.append((system, user))
            in_flight.append((keys, lines, pool.apply_async(_count_chunk, (contents,))))
            yield from drain(2 * n)
        yield from drain(0)


def write_shards(
    lines: Iterable[tuple[str, bytes, int]],
    directory: Path,
    shard_ids: Iterator[str],
    *,
    exact: bool = True,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BYTES_PER_BATCH,
    limits: RequestLimits = NO_LIMITS,
    too_long: list[tuple[str, int]] | None = None,
    advance: Callable[[int], None] | None = None,
) -> list[WrittenShard]:
    """Write request lines into shards of at most ``max_requests`` lines and ``max_bytes`` bytes, and
    each shard's request keys next to it (nothing per request is kept in memory). ``exact`` says
    whether the lines' token figures are counts or upper bounds. The model's ``limits`` screen the lines as
    `screen` does (a line too long for it goes to ``too_long``, to be given with a limit, not to a shard), and
    lines over its
    long-context threshold go to shards of their own, so that a shard's tokens and requests say what it
    costs. The files are complete when this returns."""
    directory.mkdir(parents=True, exist_ok=True)
    shards: list[WrittenShard] = []
    check, long_above = _check_above(limits), limits.long_above or INFINITE
    set_aside = too_long if too_long is not None else []
    current: WrittenShard | None = None  # the shard being written, of tier `tier` (0 short, 1 long-context)
    handle: IO[bytes] | None = None
    keys: IO[str] | None = None
    tier, other = 0, (None, None, None)  # the other tier's shard, file and keys file, while it waits
    written = 0
    try:
        for key, data, tokens in lines:
            long = 0
            if tokens > check:  # rare: a long request
                counted = _screened(key, data, tokens, limits, set_aside, exact)
                if counted is None:
                    continue
                tokens, long = counted, int(counted > long_above)
            if long != tier:
                (current, handle, keys), other, tier = other, (current, handle, keys), long
            size = len(data)
            if current is None or current.n_requests >= max_requests or current.bytes + size > max_bytes:
                if handle is not None and keys is not None:
                    handle.close()
                    keys.close()
                shard_id = next(shard_ids)
                current = WrittenShard(shard_id, directory / f"{shard_id}.jsonl", exact=exact)
                handle = current.path.open("wb", buffering=WRITE_BUFFER)
                keys = current.keys_path.open("w", encoding="ascii", buffering=WRITE_BUFFER)
                shards.append(current)
            assert handle is not None and keys is not None
            handle.write(data)
            keys.write(key + "\n")
            current.n_requests += 1
            current.bytes += size
            current.input_tokens += tokens
            if tokens > current.largest:
                current.largest = tokens
            written += 1
            if advance is not None and written % 1000 == 0:
                advance(1000)
    finally:
        for file in (handle, keys, *other[1:]):
            if file is not None:
                file.close()
    if advance is not None:
        advance(written % 1000)
    return shards


def screen(lines: Iterable[tuple[str, bytes, int]], limits: RequestLimits, too_long: list[tuple[str, int]], *,
           exact: bool = False) -> Iterator[tuple[str, bytes, int]]:
    """The lines a model accepts. A line whose token figure (an upper bound unless ``exact``) passes a limit is
    counted exactly (few are: the bound of a usual row is far below); one really over ``limits.limit`` is
    appended to ``too_long`` (request key, input tokens) instead of passed on. So every line passed on over
    ``limits.long_above`` carries its exact count."""
    check = _check_above(limits)
    for key, data, tokens in lines:
        if tokens > check:
            counted = _screened(key, data, tokens, limits, too_long, exact)
            if counted is None:
                continue
            tokens = counted
        yield key, data, tokens


def _check_above(limits: RequestLimits) -> float:
    """The token figure above which a line is looked at again."""
    return min((n for n in (limits.limit, limits.long_above) if n is not None), default=INFINITE)


def _screened(key: str, data: bytes, tokens: int, limits: RequestLimits, too_long: list[tuple[str, int]],
              exact: bool) -> int | None:
    """A line's exact tokens, or None when they are over the limit (the line is then noted in ``too_long``)."""
    if not exact:
        tokens = count_request(json.loads(data)["body"])
    if limits.limit is not None and tokens > limits.limit:
        too_long.append((key, tokens))
        return None
    return tokens


def count_exactly(paths: list[Path], workers: int | None = None) -> list[tuple[int, int]]:
    """Exact input tokens of each batch input file, and of its largest request, in worker processes when there
    are several."""
    n = min(_workers(workers)[0], len(paths))
    if n <= 1:
        return [count_batch_file(str(p)) for p in paths]
    import multiprocessing

    with multiprocessing.get_context("forkserver").Pool(n) as pool:
        return pool.map(count_batch_file, [str(p) for p in paths])
