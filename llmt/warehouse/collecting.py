"""Storing collected attempts and answers: batch result lines read and classified by DuckDB, reconciled with
the shards' requests in SQL (`collect_result_files`), or attempts given as rows (`store_attempts`).

Collection is idempotent: an attempt already stored (shard, key) is not stored again, and a key already
answered keeps its answer (unless ``replace``, --reask). Caller holds the transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmt.crash import crash_point
from llmt.warehouse.base import TempTable, Warehouse
from llmt.warehouse.duckdb import scratch

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
    price them with ``cost`` (`PriceTable.cost_sql`) and store them in ``into`` (else ``wh``, whose state
    knows the shards). The shards are of one model (``source``); each step is one statement for all of them.
    DuckDB does all but the storing: ``wh`` itself when it reads result files (`RESULT_FILES`), else a scratch
    DuckDB given the shards' requests (`_reader`). Returns outcome counts."""
    with _reader(wh, finished) as reader:
        lines = _classified(reader, finished)
        ended = _ended(reader, finished)
        answers = [r[0] for r in reader.fetchall(f"SELECT DISTINCT answer FROM {lines.name} WHERE outcome IS NULL")]
        several = bool(reader.scalar(f"SELECT count(*) > count(DISTINCT request_key) FROM {lines.name}"))
        cost_sql, cost_params = cost
        reconcile = RECONCILE_SQL.format(s=reader.state, cost=cost_sql, best=BEST_OF_SEVERAL if several else "judged")
        # Answers are validated in a thread (Python) while DuckDB (which lets go of the GIL) reconciles, taking
        # every answer as valid; the invalid ones are then marked. A key with several lines needs to know which
        # of its lines are valid first.
        with ThreadPoolExecutor(1, thread_name_prefix="llmt-validate") as pool:
            validated = pool.submit(invalid, answers)
            if not several:
                reader.temp_table("_llmt_collected", reconcile, cost_params)
            found = validated.result()
        bad = reader.temp_rows("_llmt_invalid", dict(zip(("answer", "outcome", "detail"), found, strict=True)),
                               dict.fromkeys(("answer", "outcome", "detail"), "VARCHAR"))
        marked = lines.name if several else "_llmt_collected"  # only an answer to validate or an ok one has a text
        reader.execute(f"UPDATE {marked} SET outcome = i.outcome, detail = i.detail, answer = NULL FROM {bad.name} i "
                       f"WHERE {marked}.answer = i.answer")
        if several:
            reader.temp_table("_llmt_collected", reconcile, cost_params)
        for table in (lines, bad, ended):
            reader.drop_temp(table)
        counts = {str(k): int(n) for k, n in reader.fetchall(
            "SELECT outcome, count(*) FROM _llmt_collected GROUP BY outcome")}
        collected = TempTable("_llmt_collected", sum(counts.values()))
        insert_collected(reader, collected, source, replace, distinct_keys=not several, into=into or wh)
    return counts


@contextmanager
def _reader(wh: Warehouse, finished: list[Finished]) -> Iterator[Warehouse]:
    """Where the result files are read and reconciled: ``wh`` when it reads them (DuckDB), else a scratch DuckDB
    into which the shards' requests are copied from ``wh``: the reconcile's joins then run beside the lines, and
    only the attempts go to the server (benchmarks/README.md, issue 18)."""
    if wh.RESULT_FILES:
        yield wh
        return
    with scratch() as reader:
        ids = [f.shard_id for f in finished]
        # a shard's keys as one text (hex digests, comma-separated): a few rows cross over, not one per key
        texts = wh.fetchall(f"SELECT shard_id, string_agg(request_key, ',') FROM {wh.state}.shard_requests "
                            f"WHERE shard_id IN ({', '.join('?' for _ in ids)}) GROUP BY shard_id", ids) if ids else []
        if texts:
            reader.execute(f"INSERT INTO {reader.state}.shard_requests SELECT s, unnest(string_split(k, ',')) "
                           "FROM (SELECT unnest(?::VARCHAR[]) AS s, unnest(?::VARCHAR[]) AS k)",
                           [[str(s) for s, _ in texts], [str(k) for _, k in texts]])
        yield reader


def _classified(reader: Warehouse, finished: list[Finished]) -> TempTable:
    """The lines of the shards' result files, classified (`CLASSIFY_SQL`), in DuckDB's table `_llmt_lines`."""
    files = [(str(p), f.shard_id) for f in finished for p in f.paths]
    # each line's shard by its file's name (a join would not keep the lines in the order read)
    source_sql = ("(SELECT *, MAP(?::VARCHAR[], ?::VARCHAR[])[filename] AS shard_id FROM read_json(?::VARCHAR[], "
                  f"format='newline_delimited', columns={LINE_COLUMNS}, ignore_errors=true, filename=true))"
                  if files else f"(SELECT ''::VARCHAR custom_id, NULL::JSON error, NULL::{RESPONSE} response, "
                  "''::VARCHAR shard_id WHERE false)")
    names = [f for f, _ in files]
    return reader.temp_table("_llmt_lines", CLASSIFY_SQL.format(source=source_sql),
                             [names, [s for _, s in files], names] if files else [])


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
    """Insert the attempts of ``collected`` (with its row count) not stored yet, then its ok answers whose keys have
    none stored (``replace``: replacing the stored ones); drops it. ``distinct_keys``: the caller knows that no key
    is ok twice (no key had two result lines). ``into``: the warehouse that keeps answers and attempts, when they
    were reconciled elsewhere (a scratch DuckDB, or Spark's state store): they cross to a temporary table of
    ``into`` in bulk (`Warehouse.load_from`) and are stored from there. On Spark they are appended to its logs
    (`Warehouse.log_table`), where the newest answer of a key is the one read (replacing, as ``replace`` asks) and a
    row appended again, by a collect that was cut short, counts once."""
    if into is not None and into is not wh:
        moved = into.temp_rows("_llmt_collected", {n: [] for n in ATTEMPT_TYPES}, ATTEMPT_TYPES)
        into.load_from(moved.name, wh, f"SELECT {', '.join(ATTEMPT_TYPES)} FROM {collected.name}")
        moved = TempTable(moved.name, collected.rows, moved.columns)
        into.analyze(moved.name, moved.rows)
        wh.drop_temp(collected)
        insert_collected(into, moved, source, replace, distinct_keys)
        return
    c, appended = collected.name, not wh.UPDATES
    attempts = (f"FROM {c} c" if appended else
                wh.unstored_sql(c, wh.state_table("attempts"), ("shard_id", "request_key")))
    wh.insert_new(
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
    wh.insert_new(
        f"""INSERT INTO {wh.log_table('answers')}
        SELECT c.request_key, c.answer, ?, ?, c.shard_id, now(), c.prompt_tokens, c.completion_tokens, c.cached_tokens,
               ?
        {answers} AND c.outcome = 'ok' {first}""",
        [source.model, source.node, source.provider],
    )
    # statistics for the plans that join the staged rows with the answers (PostgreSQL; autovacuum comes later):
    # from a guess of their number (taken from the table's size) the output build hashed the wider side
    wh.analyze(wh.state_table("answers"), collected.rows)
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
    SELECT shard_id, request_key, rowid AS n, coalesce(outcome, 'ok') AS outcome, answer, status_code, error_code,
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
