"""Stage an LLM model's inputs with their request keys, and find the rows that need work."""

from __future__ import annotations

import duckdb

from llmt.compile import quote
from llmt.errors import NodeError
from llmt.pipeline.spec import LlmSpec, check_columns
from llmt.project import Node
from llmt.warehouse.duckdb import execute

# outcomes that asking again will not change (the request itself must change)
TERMINAL_SQL = (
    "(outcome IN ('refused', 'truncated', 'content_filter') "
    "OR (outcome = 'http_error' AND status_code < 500 AND status_code <> 429))"
)
# a failure that says nothing about the request: the batch queue was full; it does not use up an attempt
NOT_COUNTED_SQL = "(outcome = 'batch_failed' AND error_code = 'token_limit_exceeded')"
OPEN_STATUSES = ("written", "uploaded", "submitted")


def attempts_summary_sql(state: str, since_run: str | None) -> str:
    """Per request key: failed attempts that count, whether one was final, and the last attempt."""
    run_filter = f"WHERE run_id = '{since_run}'" if since_run else ""
    return f"""
        SELECT request_key,
               count(*) FILTER (WHERE outcome <> 'ok' AND NOT {NOT_COUNTED_SQL}) AS failures,
               count(*) AS attempts, bool_or({TERMINAL_SQL}) AS terminal,
               arg_max(outcome, created_at) AS outcome, arg_max(status_code, created_at) AS status_code,
               arg_max(error_code, created_at) AS error_code, arg_max(detail, created_at) AS detail,
               max(created_at) AS last_attempt_at
        FROM {quote(state)}.attempts {run_filter} GROUP BY request_key"""


def stage_table(state: str, node: str) -> str:
    return f"{quote(state)}.{quote('input__' + node)}"


def stage_inputs(conn: duckdb.DuckDBPyConnection, state: str, node: Node, spec: LlmSpec, sql: str) -> list[str]:
    """(Re)create the staged inputs with `_llmt_input_hash` and `_llmt_request_key`; returns the select's
    columns. Raises NodeError (and the caller's transaction rolls back) on duplicate or NULL keys."""
    select = sql.strip().rstrip(";")
    described = execute(conn, f"DESCRIBE {select}", node.rel_path).fetchall()
    columns = [str(r[0]) for r in described]
    check_columns(node, spec.prompt, set(spec.columns), columns, spec.output_columns)
    table = stage_table(state, node.name)
    execute(conn, f"CREATE OR REPLACE TABLE {table} AS {keyed_select(spec, select)}", node.rel_path)
    keys = ", ".join(quote(k) for k in spec.unique_key)
    nulls = conn.execute(
        f"SELECT count(*) FROM {table} WHERE " + " OR ".join(f"{quote(k)} IS NULL" for k in spec.unique_key)
    ).fetchone()
    if nulls and nulls[0]:
        raise NodeError(
            f"{nulls[0]} input row(s) of `{node.name}` have a NULL unique_key ({', '.join(spec.unique_key)})",
            where=node.rel_path, hint="Filter them out in the select or choose another unique_key.",
        )
    dupes = conn.execute(
        f"SELECT {keys}, count(*) AS n FROM {table} GROUP BY ALL HAVING count(*) > 1 ORDER BY n DESC LIMIT 5"
    ).fetchall()
    if dupes:
        shown = "; ".join(
            ", ".join(f"{k}={v!r}" for k, v in zip(spec.unique_key, row[:-1], strict=True)) + f" ({row[-1]} rows)"
            for row in dupes
        )
        raise NodeError(
            f"the unique_key of `{node.name}` is not unique in its input: {shown}",
            where=node.rel_path,
            hint="Fix the select so each key appears once (or change unique_key). Nothing was written.",
        )
    return columns


def keyed_select(spec: LlmSpec, select: str) -> str:
    """The model's select with each row's input hash and request key."""
    return (
        f"SELECT *, {spec.input_hash_sql()} AS _llmt_input_hash, {spec.request_key_sql()} AS _llmt_request_key "
        f"FROM ({select}) AS _llmt_select"
    )


def pending_sql(
    state: str, source: str, columns: list[str], max_attempts: int, since_run: str | None, reask: bool = False
) -> str:
    """One row per request key that has no answer, is not in flight and has attempts left. With
    ``reask``, an answer counts only when this run (``since_run``) gave it."""
    s = quote(state)
    cols = ", ".join(f"i.{quote(c)}" for c in columns)
    cols = f", {cols}" if cols else ""
    answered_filter = "a.request_key IS NULL"
    if reask:
        answered_filter = (f"(a.request_key IS NULL OR a.shard_id NOT IN "
                           f"(SELECT shard_id FROM {s}.shards WHERE run_id = '{since_run}'))")
    return f"""
        WITH att AS ({attempts_summary_sql(state, since_run)}),
        inflight AS (
            SELECT sr.request_key FROM {s}.shard_requests sr JOIN {s}.shards sh USING (shard_id)
            WHERE sh.status IN {OPEN_STATUSES})
        SELECT DISTINCT ON (i._llmt_request_key) i._llmt_request_key AS _llmt_request_key{cols}
        FROM {source} i
        LEFT JOIN {s}.answers a ON a.request_key = i._llmt_request_key
        LEFT JOIN att ON att.request_key = i._llmt_request_key
        WHERE {answered_filter}
          AND i._llmt_request_key NOT IN (SELECT request_key FROM inflight)
          AND coalesce(att.failures, 0) < {int(max_attempts)}
          AND NOT coalesce(att.terminal, false)
        ORDER BY i._llmt_request_key
    """


def input_counts(conn: duckdb.DuckDBPyConnection, state: str, source: str) -> tuple[int, int, int]:
    """(rows, rows already answered, rows without an answer that share their request with another)."""
    row = conn.execute(
        "SELECT count(*), count(a.request_key), "
        "count(*) FILTER (WHERE a.request_key IS NULL) "
        "- count(DISTINCT i._llmt_request_key) FILTER (WHERE a.request_key IS NULL) "
        f"FROM {source} i LEFT JOIN {quote(state)}.answers a "
        f"ON a.request_key = i._llmt_request_key"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])
