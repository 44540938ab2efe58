"""An embedding model's requests as batch lines, and its results as attempts.

A line asks for the embeddings of many inputs at once (up to the model's `inputs_per_request`, at most 2,048,
and 300,000 tokens together); a shard holds at most 50,000 inputs (the Batch API's limit for embeddings). The
inputs of a shard are written in the order of their request keys, and a line's `custom_id` says which of them
it carries (`<first>+<count>`: positions in that order), so the shard's request keys (`shard_requests`), sorted,
say which input each embedding of a result belongs to: nothing per input is kept anywhere else.

Each input of a line gets its own attempt: `ok` with the answer ``{"embedding": [...]}``, `schema_violation`
when its vector is not ``dimensions`` numbers, or the line's outcome (an HTTP error, expired, ...). The API
reports usage per request: its tokens are shared evenly among the line's inputs, so a run's spend is what was
billed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from llmt.errors import NodeError
from llmt.pipeline.collect import Attempt, failed, store
from llmt.pipeline.render import WRITE_BUFFER, WrittenShard
from llmt.providers.base import MAX_BYTES_PER_BATCH
from llmt.providers.embeddings import ENDPOINT, MAX_BATCH_INPUTS, MAX_REQUEST_TOKENS
from llmt.warehouse.base import Warehouse
from llmt.warehouse.collecting import UNANSWERED, Finished, Source

STORE_ROWS = 5_000  # attempts stored at a time while a shard's results are read


@dataclass
class EmbeddingShard(WrittenShard):
    """A shard of embedding requests: ``n_requests`` lines carrying ``inputs`` inputs."""

    inputs: int = 0


@dataclass
class Screened:
    """Inputs not sent: empty ones (the API refuses them) and ones over the model's token limit."""

    empty: list[str]
    too_long: list[tuple[str, int]]  # (request key, tokens)


def write_embedding_shards(rows: Iterable[tuple[str, str | None]], directory: Path, shard_ids: Iterator[str], *,
                           body: dict[str, Any], count: Callable[[str], int], limit: int, per_request: int,
                           max_requests: int, screened: Screened) -> list[EmbeddingShard]:
    """Write (request key, text) rows, in ascending key order, into shards of lines of ``body`` with up to
    ``per_request`` inputs each; every text is counted exactly (``count``), and those that are empty or over
    ``limit`` tokens go to ``screened`` instead. ``max_requests`` lines at most a shard."""
    directory.mkdir(parents=True, exist_ok=True)
    head = json.dumps(body, ensure_ascii=False, separators=(",", ":"))[:-1] + ',"input":'
    shards: list[EmbeddingShard] = []
    shard: EmbeddingShard | None = None
    handle: IO[bytes] | None = None
    keys: IO[str] | None = None
    texts: list[str] = []
    tokens = 0
    previous = ""

    def flush() -> None:
        nonlocal texts, tokens
        if not texts:
            return
        assert shard is not None and handle is not None
        start = shard.inputs - len(texts)
        data = (json.dumps({"custom_id": f"{start}+{len(texts)}", "method": "POST", "url": ENDPOINT},
                           separators=(",", ":"))[:-1] + ',"body":' + head
                + json.dumps(texts, ensure_ascii=False, separators=(",", ":")) + "}}\n").encode("utf-8")
        handle.write(data)
        shard.n_requests += 1
        shard.bytes += len(data)
        shard.input_tokens += tokens
        shard.largest = max(shard.largest, tokens)
        texts, tokens = [], 0

    try:
        for key, text in rows:
            if key <= previous:  # the positions in a custom_id hold only in ascending key order
                raise NodeError(f"embedding inputs came out of request key order ({previous!r}, then {key!r})",
                                hint="This is a bug in llmt: please report it.")
            previous = key
            if not text:
                screened.empty.append(key)
                continue
            n = count(text)
            if n > limit:
                screened.too_long.append((key, n))
                continue
            size = len(text.encode("utf-8"))
            if texts and (len(texts) >= per_request or tokens + n > MAX_REQUEST_TOKENS):
                flush()
            if (shard is None or shard.inputs >= MAX_BATCH_INPUTS
                    or (not texts and (shard.n_requests >= max_requests or shard.bytes + size > MAX_BYTES_PER_BATCH))):
                flush()
                for file in (handle, keys):
                    if file is not None:
                        file.close()
                shard_id = next(shard_ids)
                shard = EmbeddingShard(shard_id, directory / f"{shard_id}.jsonl")
                handle = shard.path.open("wb", buffering=WRITE_BUFFER)
                keys = shard.keys_path.open("w", encoding="ascii", buffering=WRITE_BUFFER)
                shards.append(shard)
            assert keys is not None
            keys.write(key + "\n")
            texts.append(text)
            tokens += n
            shard.inputs += 1
        flush()
    finally:
        for file in (handle, keys):
            if file is not None:
                file.close()
    return shards


def answer_schema(dimensions: int) -> dict[str, Any]:
    """The JSON schema of an embedding model's stored answer (recorded with its shards)."""
    vector = {"type": "array", "items": {"type": "number"}, "minItems": dimensions, "maxItems": dimensions}
    return {"type": "object", "properties": {"embedding": vector}, "required": ["embedding"],
            "additionalProperties": False}


def schema_dimensions(schema: dict[str, Any]) -> int:
    """The vector length an `answer_schema` asks for."""
    return int(schema["properties"]["embedding"]["minItems"])


def line_inputs(custom_id: str, keys: list[str]) -> list[str] | None:
    """The request keys of a line's inputs (``keys``: its shard's, sorted); None for an id llmt did not write."""
    first, _, n = custom_id.partition("+")
    if not (first.isdigit() and n.isdigit()) or int(first) + int(n) > len(keys) or not int(n):
        return None
    return keys[int(first):int(first) + int(n)]


def line_attempts(line: dict[str, Any], inputs: list[str], dimensions: int) -> list[Attempt]:
    """One attempt per input of an embeddings result line."""
    outcome = failed(line, inputs[0])
    if outcome is not None:
        return [Attempt(key, outcome.outcome, status_code=outcome.status_code, error_code=outcome.error_code,
                        detail=outcome.detail) for key in inputs]
    body = line["response"].get("body") or {}
    usage = body.get("usage") or {}
    billed = int(usage.get("prompt_tokens") or 0)
    share, rest = divmod(billed, len(inputs))
    vectors = {item.get("index"): item.get("embedding") for item in body.get("data") or [] if isinstance(item, dict)}
    attempts = []
    for i, key in enumerate(inputs):
        attempt = Attempt(key, "ok", status_code=200, prompt_tokens=share + (i < rest))
        vector = vectors.get(i)
        if not isinstance(vector, list) or len(vector) != dimensions or not all(
                type(v) is float or type(v) is int for v in vector):
            got = f"{len(vector)} values" if isinstance(vector, list) else "no embedding"
            attempt.outcome, attempt.detail = "schema_violation", f"{got} for input {i}; expected {dimensions} numbers"
        else:
            attempt.answer = json.dumps({"embedding": vector}, separators=(",", ":"))
        attempts.append(attempt)
    return attempts


def collect_embedding_files(wh: Warehouse, keys_of: Callable[[str], list[str]], finished: list[Finished],
                            source: Source, cost: Callable[[int], float], dimensions: int,
                            replace: bool = False) -> dict[str, int]:
    """Read the result files of ended embedding batches of one model and store an attempt for every input of
    their shards (in the caller's transaction): the first line of a custom_id counts (the output file is read
    before the error file), ids llmt did not write are ignored, and inputs without a line get their batch's
    unanswered outcome. ``keys_of``: a shard's request keys; ``cost``: what a number of input tokens costs.
    Returns outcome counts."""
    counts: dict[str, int] = {}
    for shard in finished:
        keys = sorted(keys_of(shard.shard_id))
        answered: set[str] = set()
        pending: list[Attempt] = []

        def save(attempts: list[Attempt], shard_id: str = shard.shard_id) -> None:
            for a in attempts:
                a.cost_usd = cost(a.prompt_tokens)
                counts[a.outcome] = counts.get(a.outcome, 0) + 1
            store(wh, attempts, shard_id, source, replace)

        for path in shard.paths:
            with path.open(encoding="utf-8") as handle:
                for raw in handle:
                    line = _parsed(raw)
                    inputs = line_inputs(str(line.get("custom_id")), keys) if line is not None else None
                    if line is None or inputs is None or inputs[0] in answered:
                        continue
                    answered.update(inputs)
                    pending += line_attempts(line, inputs, dimensions)
                    if len(pending) >= STORE_ROWS:
                        save(pending)
                        pending = []
        outcome = UNANSWERED.get(shard.batch_status, "missing")
        error = shard.batch_error if outcome == "batch_failed" else None
        pending += [Attempt(key, outcome, error_code=error, detail=f"no result line (batch {shard.batch_status})")
                    for key in keys if key not in answered]
        save(pending)
    return counts


def _parsed(raw: str) -> dict[str, Any] | None:
    try:
        line = json.loads(raw)
    except ValueError:
        return None
    return line if isinstance(line, dict) else None
