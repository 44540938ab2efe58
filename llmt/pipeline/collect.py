"""Collect a finished batch: classify every result line into an outcome, reconcile every
submitted id, and store attempts and answers in one transaction.

Outcomes: ok, refused, truncated, content_filter, invalid_json, schema_violation,
http_error (status and code), expired, cancelled, batch_failed, missing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from llmt.compile import quote
from llmt.pipeline.crash import crash_point
from llmt.validate import AnswerValidator

# a batch that ended this way leaves its unanswered ids with this outcome
UNANSWERED = {"completed": "missing", "expired": "expired", "cancelled": "cancelled", "failed": "batch_failed"}
OUTCOMES = (
    "ok", "refused", "truncated", "content_filter", "invalid_json", "schema_violation",
    "http_error", "expired", "cancelled", "batch_failed", "missing",
)


@dataclass
class Attempt:
    request_key: str
    outcome: str
    answer: str | None = None
    status_code: int | None = None
    error_code: str | None = None
    detail: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0


def classify(line: dict[str, Any], validator: AnswerValidator) -> Attempt:
    """One batch output/error line -> an Attempt (the realtime path). `collect_files` does the same to
    whole result files in SQL: tests/test_collect_sql.py checks that the two agree."""
    key = str(line.get("custom_id"))
    error = line.get("error")
    response = line.get("response") or {}
    if error and not response:
        code = str(error.get("code") or "")
        outcome = {"batch_expired": "expired", "batch_cancelled": "cancelled"}.get(code, "http_error")
        return Attempt(key, outcome, error_code=code, detail=str(error.get("message") or "")[:500])
    status = int(response.get("status_code") or 0)
    body = response.get("body") or {}
    if status != 200:
        err = body.get("error") or {}
        return Attempt(
            key, "http_error", status_code=status, error_code=str(err.get("code") or err.get("type") or ""),
            detail=str(err.get("message") or "")[:500],
        )
    usage = body.get("usage") or {}
    att = Attempt(
        key, "ok", status_code=status,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
    )
    choices = body.get("choices") or []
    if not choices:
        att.outcome, att.detail = "invalid_json", "the response has no choices"
        return att
    choice = choices[0]
    message = choice.get("message") or {}
    finish = choice.get("finish_reason")
    if message.get("refusal"):
        att.outcome, att.detail = "refused", str(message["refusal"])[:500]
    elif finish == "length":
        att.outcome, att.detail = "truncated", "finish_reason=length: raise max_output_tokens"
    elif finish == "content_filter":
        att.outcome, att.detail = "content_filter", "finish_reason=content_filter"
    else:
        content = message.get("content")
        if not isinstance(content, str):
            att.outcome, att.detail = "invalid_json", "the message has no content"
        else:
            outcome, reason = validator.check(content)
            att.outcome = outcome
            if outcome == "ok":
                att.answer = content
            else:
                att.detail = reason[:500]
    return att


@dataclass(frozen=True)
class Finished:
    """A shard whose batch ended: its result files (downloaded), the batch's status and error code."""

    shard_id: str
    paths: list[Path]
    batch_status: str
    batch_error: str | None


def collect_files(
    conn: duckdb.DuckDBPyConnection,
    state: str,
    *,
    finished: list[Finished],
    validator: AnswerValidator,
    source: Source,
    cost: tuple[str, list[float]],
    replace: bool = False,
) -> dict[str, int]:
    """Classify the lines of finished batches' output and error files in DuckDB (what `classify` does to
    one line), validate the distinct answer texts with ``validator``, reconcile every submitted key of each
    shard (exactly one attempt each; ids the shard did not ask for are ignored; a key with several lines
    takes its first ok one, else its first; a key without a readable line gets its batch's unanswered
    outcome), price them with ``cost`` (`PriceTable.cost_sql`) and store them. The shards are of one model
    (``source``); each step is one statement for all of them. Returns outcome counts. Caller holds the
    transaction."""
    files = [(str(p), f.shard_id) for f in finished for p in f.paths]
    # each line's shard by its file's name (a join would not keep the lines in the order read)
    source_sql = ("(SELECT *, MAP(?::VARCHAR[], ?::VARCHAR[])[filename] AS shard_id FROM read_json(?::VARCHAR[], "
                  f"format='newline_delimited', columns={LINE_COLUMNS}, ignore_errors=true, filename=true))"
                  if files else f"(SELECT ''::VARCHAR custom_id, NULL::JSON error, NULL::{RESPONSE} response, "
                  "''::VARCHAR shard_id WHERE false)")
    names = [f for f, _ in files]
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _llmt_lines AS {CLASSIFY_SQL.format(source=source_sql)}",
                 [names, [s for _, s in files], names] if files else [])
    ended: dict[str, list[str | None]] = {"shard_id": [], "unanswered": [], "error_code": [], "detail": []}
    for f in finished:
        unanswered = UNANSWERED.get(f.batch_status, "missing")
        for name, value in zip(ended, (f.shard_id, unanswered, f.batch_error if unanswered == "batch_failed" else None,
                                       f"no result line (batch {f.batch_status})"), strict=True):
            ended[name].append(value)
    conn.execute("CREATE OR REPLACE TEMP TABLE _llmt_ended AS SELECT " + ", ".join(
        f"unnest(?::VARCHAR[]) AS {name}" for name in ended), list(ended.values()))
    answers = [r[0] for r in conn.execute("SELECT DISTINCT answer FROM _llmt_lines WHERE outcome IS NULL").fetchall()]
    row = conn.execute("SELECT count(*) > count(DISTINCT request_key) FROM _llmt_lines").fetchone()
    several = row is not None and bool(row[0])
    cost_sql, cost_params = cost
    reconcile = RECONCILE_SQL.format(s=quote(state), cost=cost_sql, best=BEST_OF_SEVERAL if several else "judged")
    # Answers are validated in a thread (Python) while DuckDB (which lets go of the GIL) reconciles, taking
    # every answer as valid; the invalid ones are then marked. A key with several lines needs to know which
    # of its lines are valid first.
    with ThreadPoolExecutor(1, thread_name_prefix="llmt-validate") as pool:
        validated = pool.submit(_invalid_answers, validator, answers)
        if not several:
            conn.execute(reconcile, cost_params)
        conn.execute("CREATE OR REPLACE TEMP TABLE _llmt_invalid AS SELECT unnest(?::VARCHAR[]) AS answer, "
                     "unnest(?::VARCHAR[]) AS outcome, unnest(?::VARCHAR[]) AS detail", validated.result())
    marked = "_llmt_lines" if several else "_llmt_collected"  # only an answer to validate or an ok one has a text
    conn.execute(f"UPDATE {marked} SET outcome = i.outcome, detail = i.detail, answer = NULL FROM _llmt_invalid i "
                 f"WHERE {marked}.answer = i.answer")
    if several:
        conn.execute(reconcile, cost_params)
    for table in ("_llmt_lines", "_llmt_invalid", "_llmt_ended"):
        conn.execute(f"DROP TABLE {table}")
    counts = dict(conn.execute("SELECT outcome, count(*) FROM _llmt_collected GROUP BY outcome").fetchall())
    _insert_collected(conn, quote(state), source, replace, distinct_keys=not several)
    return counts


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


@dataclass(frozen=True)
class Source:
    """Who made the attempts being stored."""

    run_id: str
    node: str
    model: str
    batch: bool
    provider: str  # the kind of provider that answered (fake or openai)


def store(
    conn: duckdb.DuckDBPyConnection,
    state: str,
    *,
    attempts: list[Attempt],
    shard_id: str,
    run_id: str,
    node: str,
    model: str,
    batch: bool,
    provider: str,
    replace: bool = False,
) -> None:
    """Insert attempts and new answers (idempotent on shard and key); ``provider``: the kind of provider that
    answered. Caller holds the transaction."""
    cols: dict[str, list[Any]] = {
        "shard_id": [shard_id] * len(attempts),
        "request_key": [a.request_key for a in attempts],
        "outcome": [a.outcome for a in attempts],
        "answer": [a.answer for a in attempts],
        "status_code": [a.status_code for a in attempts],
        "error_code": [a.error_code for a in attempts],
        "detail": [a.detail for a in attempts],
        "prompt_tokens": [a.prompt_tokens for a in attempts],
        "completion_tokens": [a.completion_tokens for a in attempts],
        "cached_tokens": [a.cached_tokens for a in attempts],
        "cost_usd": [a.cost_usd for a in attempts],
    }
    if not attempts:
        return
    unnest = ", ".join(f"unnest(?::{_type(name)}[]) AS {name}" for name in cols)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _llmt_collected AS SELECT {unnest}", list(cols.values()))
    _insert_collected(conn, quote(state), Source(run_id, node, model, batch, provider), replace)


def _invalid_answers(validator: AnswerValidator, answers: list[str]) -> list[list[str]]:
    """The answers that fail ``validator``, their outcomes and reasons (three lists)."""
    invalid: list[list[str]] = [[], [], []]
    for content in answers:
        outcome, reason = validator.check(content)
        if outcome != "ok":
            for column, value in zip(invalid, (content, outcome, reason[:500]), strict=True):
                column.append(value)
    return invalid


def _insert_collected(conn: duckdb.DuckDBPyConnection, s: str, source: Source, replace: bool,
                      distinct_keys: bool = False) -> None:
    """Insert the attempts of temp table _llmt_collected not stored yet, then its ok answers whose keys have
    none stored (``replace``: replacing the stored ones); drops it. Stored keys are found by probing the
    stored ones with the collected ones (a semi join): a small store does not hash every stored key.
    ``distinct_keys``: the caller knows that no key is ok twice (no key had two result lines)."""
    conn.execute(
        f"""INSERT INTO {s}.attempts
        SELECT c.shard_id, c.request_key, ?, ?, ?, c.outcome, c.status_code, c.error_code, c.detail,
               c.prompt_tokens, c.completion_tokens, c.cached_tokens, now(), c.cost_usd, ?, ?
        FROM _llmt_collected c ANTI JOIN (
            SELECT a.shard_id, a.request_key FROM {s}.attempts a
            SEMI JOIN _llmt_collected k ON k.shard_id = a.shard_id AND k.request_key = a.request_key) d
          ON d.shard_id = c.shard_id AND d.request_key = c.request_key""",
        [source.run_id, source.node, source.model, source.batch, source.provider],
    )
    crash_point("mid_store")
    if replace:
        conn.execute(f"DELETE FROM {s}.answers WHERE request_key IN "
                     "(SELECT request_key FROM _llmt_collected WHERE outcome = 'ok')")
    row = None if distinct_keys else conn.execute(
        "SELECT count(*) > count(DISTINCT request_key) FROM _llmt_collected WHERE outcome = 'ok'").fetchone()
    # a key answered in two shards collected together (not expected: a key is in one open shard at a time)
    # keeps the first shard's answer, as when they are collected one by one
    first = ("QUALIFY row_number() OVER (PARTITION BY c.request_key ORDER BY c.shard_id) = 1"
             if row is not None and row[0] else "")
    conn.execute(
        f"""INSERT INTO {s}.answers
        SELECT c.request_key, c.answer, ?, ?, c.shard_id, now(), c.prompt_tokens, c.completion_tokens, c.cached_tokens,
               ?
        FROM _llmt_collected c ANTI JOIN (
            SELECT a.request_key FROM {s}.answers a SEMI JOIN _llmt_collected k ON k.request_key = a.request_key) d
          ON d.request_key = c.request_key
        WHERE c.outcome = 'ok' {first}""",
        [source.model, source.node, source.provider],
    )
    conn.execute("DROP TABLE _llmt_collected")


def _type(name: str) -> str:
    if name.endswith("tokens"):
        return "BIGINT"
    if name == "cost_usd":
        return "DOUBLE"
    return "INTEGER" if name == "status_code" else "VARCHAR"
