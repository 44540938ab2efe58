"""Storing collected attempts and answers, and DuckDB's fast path to them: batch result files read,
classified and reconciled in SQL (`RESULT_FILES`).

Collection is idempotent: an attempt already stored (shard, key) is not stored again, and a key already
answered keeps its answer (unless ``replace``, --reask). Caller holds the transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmt.crash import crash_point
from llmt.warehouse.base import TempTable, Warehouse

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
                         cost: tuple[str, list[float]], replace: bool = False) -> dict[str, int]:
    """Classify the lines of finished batches' output and error files in SQL (what `pipeline.collect.classify`
    does to one line), validate the distinct answer texts (``invalid``), reconcile every submitted key of each
    shard (exactly one attempt each; ids the shard did not ask for are ignored; a key with several lines takes
    its first ok one, else its first; a key without a readable line gets its batch's unanswered outcome),
    price them with ``cost`` (`PriceTable.cost_sql`) and store them. The shards are of one model (``source``);
    each step is one statement for all of them. Returns outcome counts."""
    files = [(str(p), f.shard_id) for f in finished for p in f.paths]
    # each line's shard by its file's name (a join would not keep the lines in the order read)
    source_sql = ("(SELECT *, MAP(?::VARCHAR[], ?::VARCHAR[])[filename] AS shard_id FROM read_json(?::VARCHAR[], "
                  f"format='newline_delimited', columns={LINE_COLUMNS}, ignore_errors=true, filename=true))"
                  if files else f"(SELECT ''::VARCHAR custom_id, NULL::JSON error, NULL::{RESPONSE} response, "
                  "''::VARCHAR shard_id WHERE false)")
    names = [f for f, _ in files]
    lines = wh.temp_table("_llmt_lines", CLASSIFY_SQL.format(source=source_sql),
                          [names, [s for _, s in files], names] if files else [])
    ended: dict[str, list[Any]] = {"shard_id": [], "unanswered": [], "error_code": [], "detail": []}
    for f in finished:
        unanswered = UNANSWERED.get(f.batch_status, "missing")
        for name, value in zip(ended, (f.shard_id, unanswered, f.batch_error if unanswered == "batch_failed" else None,
                                       f"no result line (batch {f.batch_status})"), strict=True):
            ended[name].append(value)
    ended_table = wh.temp_rows("_llmt_ended", ended, dict.fromkeys(ended, "VARCHAR"))
    answers = [r[0] for r in wh.fetchall(f"SELECT DISTINCT answer FROM {lines.name} WHERE outcome IS NULL")]
    several = bool(wh.scalar(f"SELECT count(*) > count(DISTINCT request_key) FROM {lines.name}"))
    cost_sql, cost_params = cost
    reconcile = RECONCILE_SQL.format(s=wh.state, cost=cost_sql, best=BEST_OF_SEVERAL if several else "judged")
    # Answers are validated in a thread (Python) while DuckDB (which lets go of the GIL) reconciles, taking
    # every answer as valid; the invalid ones are then marked. A key with several lines needs to know which
    # of its lines are valid first.
    with ThreadPoolExecutor(1, thread_name_prefix="llmt-validate") as pool:
        validated = pool.submit(invalid, answers)
        if not several:
            wh.execute(reconcile, cost_params)
        found = validated.result()
    bad = wh.temp_rows("_llmt_invalid", dict(zip(("answer", "outcome", "detail"), found, strict=True)),
                       dict.fromkeys(("answer", "outcome", "detail"), "VARCHAR"))
    marked = lines.name if several else "_llmt_collected"  # only an answer to validate or an ok one has a text
    wh.execute(f"UPDATE {marked} SET outcome = i.outcome, detail = i.detail, answer = NULL FROM {bad.name} i "
               f"WHERE {marked}.answer = i.answer")
    if several:
        wh.execute(reconcile, cost_params)
    for table in (lines, bad, ended_table):
        wh.drop_temp(table)
    collected = TempTable("_llmt_collected")
    counts = {str(k): int(n) for k, n in wh.fetchall(
        f"SELECT outcome, count(*) FROM {collected.name} GROUP BY outcome")}
    insert_collected(wh, collected, source, replace, distinct_keys=not several)
    return counts


def insert_collected(wh: Warehouse, collected: TempTable, source: Source, replace: bool,
                     distinct_keys: bool = False) -> None:
    """Insert the attempts of ``collected`` not stored yet, then its ok answers whose keys have none stored
    (``replace``: replacing the stored ones); drops it. Stored keys are found by probing the stored ones with the
    collected ones (a semi join): a small store does not hash every stored key. ``distinct_keys``: the caller
    knows that no key is ok twice (no key had two result lines)."""
    s, c = wh.state, collected.name
    wh.execute(
        f"""INSERT INTO {s}.attempts
        SELECT c.shard_id, c.request_key, ?, ?, ?, c.outcome, c.status_code, c.error_code, c.detail,
               c.prompt_tokens, c.completion_tokens, c.cached_tokens, now(), c.cost_usd, ?, ?
        FROM {c} c ANTI JOIN (
            SELECT a.shard_id, a.request_key FROM {s}.attempts a
            SEMI JOIN {c} k ON k.shard_id = a.shard_id AND k.request_key = a.request_key) d
          ON d.shard_id = c.shard_id AND d.request_key = c.request_key""",
        [source.run_id, source.node, source.model, source.batch, source.provider],
    )
    crash_point("mid_store")
    if replace:
        wh.execute(f"DELETE FROM {s}.answers WHERE request_key IN (SELECT request_key FROM {c} WHERE outcome = 'ok')")
    twice = not distinct_keys and bool(wh.scalar(
        f"SELECT count(*) > count(DISTINCT request_key) FROM {c} WHERE outcome = 'ok'"))
    # a key answered in two shards collected together (not expected: a key is in one open shard at a time)
    # keeps the first shard's answer, as when they are collected one by one
    first = "QUALIFY row_number() OVER (PARTITION BY c.request_key ORDER BY c.shard_id) = 1" if twice else ""
    wh.execute(
        f"""INSERT INTO {s}.answers
        SELECT c.request_key, c.answer, ?, ?, c.shard_id, now(), c.prompt_tokens, c.completion_tokens, c.cached_tokens,
               ?
        FROM {c} c ANTI JOIN (
            SELECT a.request_key FROM {s}.answers a SEMI JOIN {c} k ON k.request_key = a.request_key) d
          ON d.request_key = c.request_key
        WHERE c.outcome = 'ok' {first}""",
        [source.model, source.node, source.provider],
    )
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
CREATE OR REPLACE TEMP TABLE _llmt_collected AS
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
