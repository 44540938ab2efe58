"""Storing collected attempts and answers: batch result lines classified in Python and reconciled in SQL
(`collect_lines`), or, on engines that read files (`RESULT_FILES`: DuckDB), read, classified and reconciled in
SQL (`collect_result_files`).

Collection is idempotent: an attempt already stored (shard, key) is not stored again, and a key already
answered keeps its answer (unless ``replace``, --reask). Caller holds the transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from llmt.crash import crash_point
from llmt.warehouse.base import TempTable, Warehouse
from llmt.warehouse.store import MOVE_ROWS

# a batch that ended this way leaves its unanswered ids with this outcome
UNANSWERED = {"completed": "missing", "expired": "expired", "cancelled": "cancelled", "failed": "batch_failed"}
# the columns of collected attempts, with their types
ATTEMPT_TYPES = {"shard_id": "VARCHAR", "request_key": "VARCHAR", "outcome": "VARCHAR", "answer": "VARCHAR",
                 "status_code": "INTEGER", "error_code": "VARCHAR", "detail": "VARCHAR", "prompt_tokens": "BIGINT",
                 "completion_tokens": "BIGINT", "cached_tokens": "BIGINT", "cost_usd": "DOUBLE"}
Invalid = Callable[[list[str]], list[list[str]]]  # answer texts -> the invalid ones, their outcomes and reasons


@dataclass(frozen=True)
class Finished:
    """A shard whose batch ended: its result files (downloaded), the batch's status and error code."""

    shard_id: str
    paths: list[Path]
    batch_status: str
    batch_error: str | None


@dataclass(frozen=True)
class Source:
    """Who made the attempts being stored."""

    run_id: str
    node: str
    model: str
    batch: bool
    provider: str  # the kind of provider that answered (fake or openai)


def store_attempts(wh: Warehouse, columns: dict[str, Sequence[Any]], source: Source, replace: bool = False) -> None:
    """Store attempts given column by column (`ATTEMPT_TYPES`) and their new answers."""
    if not columns["request_key"]:
        return
    collected = wh.temp_rows("_llmt_collected", columns, ATTEMPT_TYPES)
    insert_collected(wh, collected, source, replace)


def collect_result_files(wh: Warehouse, *, finished: list[Finished], invalid: Invalid, source: Source,
                         cost: tuple[str, list[float]], replace: bool = False,
                         into: Warehouse | None = None) -> dict[str, int]:
    """Classify the lines of finished batches' output and error files in SQL (what `pipeline.collect.classify`
    does to one line), validate the distinct answer texts (``invalid``), reconcile every submitted key of each
    shard (exactly one attempt each; ids the shard did not ask for are ignored; a key with several lines takes
    its first ok one, else its first; a key without a readable line gets its batch's unanswered outcome),
    price them with ``cost`` (`PriceTable.cost_sql`) and store them. The shards are of one model (``source``);
    each step is one statement for all of them (``into``: see `insert_collected`). Returns outcome counts."""
    files = [(str(p), f.shard_id) for f in finished for p in f.paths]
    # each line's shard by its file's name (a join would not keep the lines in the order read)
    source_sql = ("(SELECT *, MAP(?::VARCHAR[], ?::VARCHAR[])[filename] AS shard_id FROM read_json(?::VARCHAR[], "
                  f"format='newline_delimited', columns={LINE_COLUMNS}, ignore_errors=true, filename=true))"
                  if files else f"(SELECT ''::VARCHAR custom_id, NULL::JSON error, NULL::{RESPONSE} response, "
                  "''::VARCHAR shard_id WHERE false)")
    names = [f for f, _ in files]
    lines = wh.temp_table("_llmt_lines", CLASSIFY_SQL.format(source=source_sql),
                          [names, [s for _, s in files], names] if files else [])
    ended_table = _ended(wh, finished)
    answers = [r[0] for r in wh.fetchall(f"SELECT DISTINCT answer FROM {lines.name} WHERE outcome IS NULL")]
    several = bool(wh.scalar(f"SELECT count(*) > count(DISTINCT request_key) FROM {lines.name}"))
    cost_sql, cost_params = cost
    reconcile = RECONCILE_SQL.format(s=wh.state, cost=cost_sql, n="rowid",
                                     best=BEST_OF_SEVERAL if several else "judged")
    # Answers are validated in a thread (Python) while DuckDB (which lets go of the GIL) reconciles, taking
    # every answer as valid; the invalid ones are then marked. A key with several lines needs to know which
    # of its lines are valid first.
    with ThreadPoolExecutor(1, thread_name_prefix="llmt-validate") as pool:
        validated = pool.submit(invalid, answers)
        if not several:
            wh.temp_table("_llmt_collected", reconcile, cost_params)
        found = validated.result()
    bad = wh.temp_rows("_llmt_invalid", dict(zip(("answer", "outcome", "detail"), found, strict=True)),
                       dict.fromkeys(("answer", "outcome", "detail"), "VARCHAR"))
    marked = lines.name if several else "_llmt_collected"  # only an answer to validate or an ok one has a text
    wh.execute(f"UPDATE {marked} SET outcome = i.outcome, detail = i.detail, answer = NULL FROM {bad.name} i "
               f"WHERE {marked}.answer = i.answer")
    if several:
        wh.temp_table("_llmt_collected", reconcile, cost_params)
    for table in (lines, bad, ended_table):
        wh.drop_temp(table)
    collected = TempTable("_llmt_collected")
    counts = {str(k): int(n) for k, n in wh.fetchall(
        f"SELECT outcome, count(*) FROM {collected.name} GROUP BY outcome")}
    insert_collected(wh, collected, source, replace, distinct_keys=not several, into=into)
    return counts


# classified lines: shard_id and n (the order read), then what `Lines` gives, in this order
LINE_TYPES = {"shard_id": "VARCHAR", "n": "BIGINT", **{k: v for k, v in ATTEMPT_TYPES.items()
                                                      if k not in ("shard_id", "cost_usd")}}
LOAD_ROWS = 50_000  # classified lines loaded at a time (memory stays flat in the number of lines)
Lines = Callable[[Finished], Iterable[Sequence[Any]]]  # a shard's classified result lines, in the files' order


def collect_lines(wh: Warehouse, *, finished: list[Finished], read: Lines, source: Source,
                  cost: tuple[str, list[float]], replace: bool = False, into: Warehouse | None = None
                  ) -> dict[str, int]:
    """What `collect_result_files` does, on engines that do not read result files in SQL: ``read`` classifies
    and validates each shard's lines in Python (`LINE_TYPES` without shard_id and n: an answer only when
    ok), which are loaded in bulk and reconciled in SQL as there. Returns outcome counts."""
    names = [n for n in LINE_TYPES if n not in ("shard_id", "n")]
    lines = wh.temp_rows("_llmt_lines", {n: [] for n in LINE_TYPES}, LINE_TYPES)
    n = 0
    # whether a key has several lines, by the hashes of the keys seen (cheaper than counting distinct keys in
    # SQL afterwards; two keys of the same hash only take the slower way that is right for any lines)
    seen: set[int] = set()
    for f in finished:
        chunk: list[Sequence[Any]] = []
        for line in read(f):
            chunk.append(line)
            seen.add(hash(line[0]))
            if len(chunk) >= LOAD_ROWS:
                n = _load_lines(wh, lines, f.shard_id, chunk, names, n)
        n = _load_lines(wh, lines, f.shard_id, chunk, names, n)
    several = len(seen) < n
    del seen
    wh.analyze(lines.name, n)  # (the reconcile's joins are planned for the lines' real number)
    ended = _ended(wh, finished)
    cost_sql, cost_params = cost
    collected = wh.temp_table("_llmt_collected", RECONCILE_SQL.format(
        s=wh.state, cost=cost_sql, n="n", best=BEST_OF_SEVERAL_PORTABLE if several else "judged"), cost_params)
    for table in (lines, ended):
        wh.drop_temp(table)
    counts = {str(k): int(v) for k, v in
              wh.fetchall(f"SELECT outcome, count(*) FROM {collected.name} GROUP BY outcome")}
    insert_collected(wh, collected, source, replace, distinct_keys=not several, into=into)
    return counts


def _load_lines(wh: Warehouse, lines: TempTable, shard_id: str, chunk: list[Sequence[Any]], names: list[str],
                n: int) -> int:
    if chunk:
        columns: dict[str, Sequence[Any]] = {"shard_id": [shard_id] * len(chunk), "n": range(n, n + len(chunk)),
                                             **dict(zip(names, zip(*chunk, strict=True), strict=True))}
        wh.load_rows(lines.name, columns, LINE_TYPES)
        n += len(chunk)
        chunk.clear()
    return n


def _ended(wh: Warehouse, finished: list[Finished]) -> TempTable:
    """Each ended shard's outcome for the keys its batch left unanswered (`_llmt_ended`)."""
    ended: dict[str, list[Any]] = {"shard_id": [], "unanswered": [], "error_code": [], "detail": []}
    for f in finished:
        unanswered = UNANSWERED.get(f.batch_status, "missing")
        for name, value in zip(ended, (f.shard_id, unanswered, f.batch_error if unanswered == "batch_failed" else None,
                                       f"no result line (batch {f.batch_status})"), strict=True):
            ended[name].append(value)
    return wh.temp_rows("_llmt_ended", ended, dict.fromkeys(ended, "VARCHAR"))


def insert_collected(wh: Warehouse, collected: TempTable, source: Source, replace: bool,
                     distinct_keys: bool = False, into: Warehouse | None = None) -> None:
    """Insert the attempts of ``collected`` not stored yet, then its ok answers whose keys have none stored
    (``replace``: replacing the stored ones); drops it. ``distinct_keys``: the caller knows that no key is ok
    twice (no key had two result lines). ``into``: the warehouse that keeps answers and attempts, when they were
    reconciled in its state store (Spark's): they cross to a temporary table of ``into`` a chunk at a time, then
    are appended to its logs (`Warehouse.log_table`), where the newest answer of a key is the one read (replacing,
    as ``replace`` asks) and a row appended again, by a collect that was cut short, counts once."""
    if into is not None and into is not wh:
        moved = into.temp_rows("_llmt_collected", {n: [] for n in ATTEMPT_TYPES}, ATTEMPT_TYPES)
        rows = wh.stream(f"SELECT {', '.join(ATTEMPT_TYPES)} FROM {collected.name}")
        while chunk := list(islice(rows, MOVE_ROWS)):
            into.load_rows(moved.name, dict(zip(ATTEMPT_TYPES, zip(*chunk, strict=True), strict=True)), ATTEMPT_TYPES)
        wh.drop_temp(collected)
        insert_collected(into, moved, source, replace, distinct_keys)
        return
    c, appended = collected.name, not wh.UPDATES
    attempts = (f"FROM {c} c" if appended else
                wh.unstored_sql(c, wh.state_table("attempts"), ("shard_id", "request_key")))
    wh.execute(
        f"""INSERT INTO {wh.log_table('attempts')}
        SELECT c.shard_id, c.request_key, ?, ?, ?, c.outcome, c.status_code, c.error_code, c.detail,
               c.prompt_tokens, c.completion_tokens, c.cached_tokens, now(), c.cost_usd, ?, ?
        {attempts}""",
        [source.run_id, source.node, source.model, source.batch, source.provider],
    )
    crash_point("mid_store")
    if replace and not appended:
        wh.execute(f"DELETE FROM {wh.state_table('answers')} WHERE request_key IN "
                   f"(SELECT request_key FROM {c} WHERE outcome = 'ok')")
    twice = not distinct_keys and bool(wh.scalar(
        f"SELECT count(*) > count(DISTINCT request_key) FROM {c} WHERE outcome = 'ok'"))
    # a key answered in two shards collected together (not expected: a key is in one open shard at a time)
    # keeps the first shard's answer, as when they are collected one by one
    first = (f"AND NOT EXISTS (SELECT 1 FROM {c} f WHERE f.request_key = c.request_key AND f.outcome = 'ok' "
             "AND f.shard_id < c.shard_id)" if twice else "")
    answers = f"FROM {c} c WHERE true" if appended else wh.unstored_sql(c, wh.state_table("answers"), ("request_key",))
    wh.execute(
        f"""INSERT INTO {wh.log_table('answers')}
        SELECT c.request_key, c.answer, ?, ?, c.shard_id, now(), c.prompt_tokens, c.completion_tokens, c.cached_tokens,
               ?
        {answers} AND c.outcome = 'ok' {first}""",
        [source.model, source.node, source.provider],
    )
    crash_point("after_store")
    wh.drop_temp(collected)


# the fields of a result line that classification reads; a value of another type reads as null
RESPONSE = (
    "STRUCT(status_code INTEGER, body STRUCT("
    "error STRUCT(code VARCHAR, type VARCHAR, message VARCHAR), "
    "usage STRUCT(prompt_tokens BIGINT, completion_tokens BIGINT, prompt_tokens_details STRUCT(cached_tokens BIGINT)), "
    "choices STRUCT(message STRUCT(content JSON, refusal JSON), finish_reason VARCHAR)[]))"
)
LINE_COLUMNS = {"custom_id": "VARCHAR", "error": "JSON", "response": RESPONSE}

# `classify` over every line; outcome NULL: an answer to validate. A JSON string reads as '"...' (DuckDB's
# JSON is minified). The rowid of the lines' table is their order as read when DuckDB preserves insertion
# order (its default; llmt turns it off under a memory limit, and then a key's "first" line among several is
# any of them, as a row_number() window, which cost a fifth of the read, gave too).
CLASSIFY_SQL = """
WITH l AS (
    SELECT shard_id, custom_id AS request_key,
           coalesce(json_type(error) = 'OBJECT' AND error <> '{{}}', false)
               AND (response IS NULL OR (response.status_code IS NULL AND response.body IS NULL)) AS failed,
           error->>'code' AS failed_code, error->>'message' AS failed_message,
           coalesce(response.status_code, 0) AS status, response.body.error AS err, response.body.usage AS usage,
           coalesce(len(response.body.choices), 0) = 0 AS no_choices, response.body.choices[1].message AS message,
           response.body.choices[1].finish_reason AS finish
    FROM {source}
),
c AS (
    SELECT *, NOT failed AND status = 200 AS answered,
        CASE WHEN failed THEN CASE failed_code WHEN 'batch_expired' THEN 'expired'
                                               WHEN 'batch_cancelled' THEN 'cancelled' ELSE 'http_error' END
             WHEN status <> 200 THEN 'http_error'
             WHEN no_choices THEN 'invalid_json'
             WHEN message.refusal NOT IN ('""', 'false', '0', '0.0', '[]', '{{}}') THEN 'refused'
             WHEN finish = 'length' THEN 'truncated'
             WHEN finish = 'content_filter' THEN 'content_filter'
             WHEN message.content LIKE '"%' THEN NULL
             ELSE 'invalid_json' END AS outcome
    FROM l
)
SELECT shard_id, request_key, outcome,
    CASE WHEN answered AND outcome IS NULL THEN message.content->>'$' END AS answer,
    CASE WHEN NOT failed THEN status END AS status_code,
    CASE WHEN failed THEN coalesce(failed_code, '')
         WHEN status <> 200 THEN coalesce(nullif(err.code, ''), nullif(err.type, ''), '') END AS error_code,
    CASE WHEN failed THEN left(coalesce(failed_message, ''), 500)
         WHEN status <> 200 THEN left(coalesce(err.message, ''), 500)
         WHEN outcome = 'refused' THEN left(message.refusal->>'$', 500)
         ELSE CASE outcome WHEN 'truncated' THEN 'finish_reason=length: raise max_output_tokens'
                           WHEN 'content_filter' THEN 'finish_reason=content_filter'
                           WHEN 'invalid_json' THEN CASE WHEN no_choices THEN 'the response has no choices'
                                                         ELSE 'the message has no content' END END END AS detail,
    CASE WHEN answered THEN coalesce(usage.prompt_tokens, 0) ELSE 0 END AS prompt_tokens,
    CASE WHEN answered THEN coalesce(usage.completion_tokens, 0) ELSE 0 END AS completion_tokens,
    CASE WHEN answered THEN coalesce(usage.prompt_tokens_details.cached_tokens, 0) ELSE 0 END AS cached_tokens
FROM c
"""

# one attempt per submitted key of each ended shard: its best line (an answer not yet marked invalid is ok),
# else the batch's unanswered outcome; priced
RECONCILE_SQL = """
WITH judged AS (
    SELECT shard_id, request_key, {n} AS n, coalesce(outcome, 'ok') AS outcome, answer, status_code, error_code,
           detail, prompt_tokens, completion_tokens, cached_tokens
    FROM _llmt_lines
),
best AS (SELECT * FROM {best}),
attempts AS (
    SELECT r.shard_id, r.request_key, coalesce(j.outcome, e.unanswered) AS outcome, j.answer, j.status_code,
           CASE WHEN j.n IS NULL THEN e.error_code ELSE j.error_code END AS error_code,
           CASE WHEN j.n IS NULL THEN e.detail ELSE j.detail END AS detail,
           coalesce(j.prompt_tokens, 0) AS prompt_tokens, coalesce(j.completion_tokens, 0) AS completion_tokens,
           coalesce(j.cached_tokens, 0) AS cached_tokens
    FROM {s}.shard_requests r JOIN _llmt_ended e USING (shard_id)
    LEFT JOIN best j ON j.shard_id = r.shard_id AND j.request_key = r.request_key
)
SELECT *, {cost} AS cost_usd FROM attempts
"""
# a key with several lines: its first ok line, else its first line (costs more than the rest of the reconcile,
# so it is left out when no key has two lines)
BEST_OF_SEVERAL = ("judged WHERE n IN "
                   "(SELECT arg_min(n, (outcome <> 'ok', n)) FROM judged GROUP BY shard_id, request_key)")
BEST_OF_SEVERAL_PORTABLE = ("judged WHERE n IN (SELECT coalesce(min(CASE WHEN outcome = 'ok' THEN n END), min(n)) "
                            "FROM judged GROUP BY shard_id, request_key)")
