"""Stage an LLM model's inputs with their request keys, and find the rows that need work."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import duckdb

from llmt.compile import quote, sql_string
from llmt.errors import NodeError
from llmt.pipeline.spec import KEY_VERSION, KEY_VERSIONS, LlmSpec, check_columns
from llmt.project import Node
from llmt.warehouse.duckdb import comment_record, create_table, execute, named_errors
from llmt.warehouse.state import KEYS

# outcomes that asking again will not change (the request itself must change)
TERMINAL_SQL = (
    "(outcome IN ('refused', 'truncated', 'content_filter', 'too_long') "
    "OR (outcome = 'http_error' AND status_code < 500 AND status_code <> 429))"
)
# Which attempts use up one of a request's max_attempts: only outcomes that are the request's own. Provider
# misfortune (expired, cancelled, missing, HTTP 429 and 5xx, no answer at all, a batch that failed for want
# of capacity or by the provider's fault) does not: such rows stay pending and are sent again.
OWN_OUTCOMES = ("refused", "truncated", "content_filter", "invalid_json", "schema_violation", "too_long")
# batch-level error codes that say nothing about the requests (a batch that failed with any other code, e.g.
# invalid_json_line, invalid_url, duplicate_custom_id or model_mismatch, was refused for its requests' format)
UNLUCKY_BATCH_CODES = ("token_limit_exceeded", "request_limit_exceeded", "rate_limit_exceeded", "server_error")
USES_ATTEMPT_SQL = (
    f"(outcome IN ({', '.join(map(sql_string, OWN_OUTCOMES))}) "
    "OR (outcome = 'http_error' AND coalesce(status_code, 0) BETWEEN 400 AND 499 AND status_code <> 429) "
    "OR (outcome = 'batch_failed' "
    f"AND coalesce(error_code, '') NOT IN ({', '.join(map(sql_string, UNLUCKY_BATCH_CODES))})))"
)
OPEN_STATUSES = ("written", "uploaded", "submitted")
STAGE_VERSION = 2  # bump when what is staged changes: every model is then staged afresh (2: no input hash column)
FINGERPRINT_PREFIX = "llmt-stage "


def attempts_summary_sql(state: str, since_run: str | None, keys: str | None = None) -> str:
    """Per request key: failed attempts that count, whether one was final, and the last attempt (only
    of the keys in relation ``keys`` (column `_llmt_request_key`), when given)."""
    filters = [f"run_id = '{since_run}'"] if since_run else []
    if keys:
        filters.append(f"request_key IN (SELECT _llmt_request_key FROM {keys})")
    run_filter = f"WHERE {' AND '.join(filters)}" if filters else ""
    return f"""
        SELECT request_key,
               count(*) FILTER (WHERE {USES_ATTEMPT_SQL}) AS failures,
               count(*) AS attempts, bool_or({TERMINAL_SQL}) AS terminal,
               arg_max(outcome, created_at) AS outcome, arg_max(status_code, created_at) AS status_code,
               arg_max(error_code, created_at) AS error_code, arg_max(detail, created_at) AS detail,
               max(created_at) AS last_attempt_at
        FROM {quote(state)}.attempts {run_filter} GROUP BY request_key"""


def stage_table(state: str, node: str) -> str:
    return f"{quote(state)}.{quote('input__' + node)}"


def stage_inputs(conn: duckdb.DuckDBPyConnection, state: str, node: Node, spec: LlmSpec, sql: str) -> list[str]:
    """(Re)stage the select's rows with `_llmt_request_key` and `_llmt_row_hash`;
    returns the select's columns. Raises NodeError (and the caller's transaction rolls back) on duplicate
    or NULL keys.

    Request keys cost a sha256 over the referenced columns of every row, so they are computed only for
    rows that are new or changed: each row's cheap 64-bit hash of all its columns is compared with the
    staged one (by unique key), changed rows are replaced, and when nothing changed (the usual nightly
    run) the staged table is left as it is."""
    select = sql.strip().rstrip(";")
    described = execute(conn, f"DESCRIBE {select}", node.rel_path).fetchall()
    columns = [str(r[0]) for r in described]
    check_columns(node, spec.prompt, set(spec.columns), columns, spec.output_columns)
    table = stage_table(state, node.name)
    zone = conn.execute("SELECT current_setting('TimeZone')").fetchone()
    layout = hashlib.sha256(json.dumps(
        [STAGE_VERSION, spec.template_hash, spec.columns, spec.unique_key, [[str(r[0]), str(r[1])] for r in described],
         zone[0] if zone else None]).encode()).hexdigest()[:32]
    row_hash = f"hash({', '.join(quote(c) for c in columns)})"
    staged = stage_fingerprint(conn, state, node.name)
    if staged is None or staged.get("layout") != layout:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        texts = [str(r[0]) for r in described if str(r[1]) == "VARCHAR" and str(r[0]) not in spec.unique_key]
        with named_errors(node.rel_path):  # texts sent to a model are usually long: ZSTD writes them 4-5x faster
            create_table(conn, table, keyed_select(spec, select, row_hash),
                         {**dict.fromkeys(texts, "zstd"), "_llmt_request_key": KEYS})
        _check_keys(conn, table, node, spec)
    else:
        keys = ", ".join(quote(k) for k in spec.unique_key)
        execute(conn, f"CREATE OR REPLACE TEMP TABLE _llmt_rows AS SELECT {keys}, {row_hash} AS _llmt_row_hash "
                      f"FROM ({select}) AS _llmt_select", node.rel_path)
        try:
            if _fingerprint(conn, "_llmt_rows") == staged.get("rows"):
                return columns  # nothing changed (NULL and duplicate keys were refused when it was staged)
            _check_keys(conn, "_llmt_rows", node, spec)
            same = " AND ".join(f"k.{quote(k)} = s.{quote(k)}" for k in spec.unique_key)
            conn.execute(f"DELETE FROM {table} s WHERE NOT EXISTS (SELECT 1 FROM _llmt_rows k WHERE {same} "
                         f"AND k._llmt_row_hash = s._llmt_row_hash)")
            # what is left staged is unchanged: every other row of the select is new or changed
            execute(conn, f"INSERT INTO {table} {keyed_select(spec, select, row_hash)} WHERE NOT EXISTS "
                          f"(SELECT 1 FROM {table} s WHERE "
                          + " AND ".join(f"s.{quote(k)} = _llmt_select.{quote(k)}" for k in spec.unique_key)
                          + ")", node.rel_path)
        finally:
            conn.execute("DROP TABLE IF EXISTS _llmt_rows")
    kept = {"shape": staged["shape"]} if staged and "shape" in staged and staged.get("layout") == layout else {}
    # (the output's shape stays valid while the layout does: the output is then updated in place)
    set_stage_fingerprint(conn, state, node.name, {**kept, "layout": layout, "rows": _fingerprint(conn, table),
                                                   "keys": KEY_VERSION})
    return columns


def _check_keys(conn: duckdb.DuckDBPyConnection, table: str, node: Node, spec: LlmSpec) -> None:
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


def _fingerprint(conn: duckdb.DuckDBPyConnection, table: str) -> str:
    """Order-independent fingerprint of a table's `_llmt_row_hash` values (count, sum and xor)."""
    row = conn.execute(f"SELECT count(*), sum(_llmt_row_hash::HUGEINT), bit_xor(hash(_llmt_row_hash)) "
                       f"FROM {table}").fetchone()
    return ":".join(str(v) for v in row) if row else ""


def stage_fingerprint(conn: duckdb.DuckDBPyConnection, state: str, node: str) -> dict[str, Any] | None:
    """What the staged table's comment records: its layout, its rows' fingerprint, the version of its request
    keys and the output built from it (see output.py); None when it is not staged (or by an older llmt)."""
    return comment_record(conn, state, "input__" + node, FINGERPRINT_PREFIX)


def staged_key_version(staged: dict[str, Any]) -> str:
    """The version of the request keys a staged table holds (what `stage_fingerprint` gives; before the
    version was recorded, the first)."""
    return str(staged.get("keys", KEY_VERSIONS[0].name))


def set_stage_fingerprint(conn: duckdb.DuckDBPyConnection, state: str, node: str, value: dict[str, Any]) -> None:
    text = FINGERPRINT_PREFIX + json.dumps(value, sort_keys=True)
    conn.execute(f"COMMENT ON TABLE {stage_table(state, node)} IS {sql_string(text)}")


def keyed_select(spec: LlmSpec, select: str, row_hash: str | None = None) -> str:
    """The model's select with each row's request key (and, to stage it, a hash of the whole row). The
    input hash is part of the key only: storing it too cost ~0.5 s a million rows."""
    extra = f", {row_hash} AS _llmt_row_hash" if row_hash else ""
    return (
        f"SELECT *, {spec.request_key_sql()} AS _llmt_request_key"
        f"{extra} FROM ({select}) AS _llmt_select"
    )


def pending_sql(
    state: str, source: str, columns: list[str], max_attempts: int, since_run: str | None, reask: bool = False
) -> str:
    """One row per request key that has no answer, is not in flight and has attempts left (see
    `pending_keys_sql`). Rows come in no set order."""
    keys = pending_keys_sql(state, source, max_attempts, since_run, reask)
    return f"WITH keys AS MATERIALIZED ({keys}) {pending_rows_sql(state, source, columns, 'keys')}"


def pending_keys_sql(state: str, source: str, max_attempts: int, since_run: str | None, reask: bool = False) -> str:
    """The request keys of ``source`` that have no answer, are not in flight and have attempts left. With
    ``reask``, an answer counts only when this run (``since_run``) gave it.

    The keys without an answer are found first (an anti-join on the key alone), then attempts are summed up
    for those keys only, so that a run with nothing to send costs one anti-join however long the history of
    attempts."""
    s = quote(state)
    answered = f"SELECT 1 FROM {s}.answers a WHERE a.request_key = i._llmt_request_key"
    if reask:
        answered += f" AND a.shard_id IN (SELECT shard_id FROM {s}.shards WHERE run_id = '{since_run}')"
    return f"""
        WITH todo AS MATERIALIZED (
            SELECT DISTINCT i._llmt_request_key FROM {source} i WHERE NOT EXISTS ({answered})),
        att AS ({attempts_summary_sql(state, since_run, "todo")}),
        inflight AS (
            SELECT sr.request_key FROM {s}.shard_requests sr JOIN {s}.shards sh USING (shard_id)
            WHERE sh.status IN {OPEN_STATUSES})
        SELECT t._llmt_request_key FROM todo t LEFT JOIN att ON att.request_key = t._llmt_request_key
        WHERE t._llmt_request_key NOT IN (SELECT request_key FROM inflight)
          AND coalesce(att.failures, 0) < {int(max_attempts)}
          AND NOT coalesce(att.terminal, false)
    """


def pending_rows_sql(state: str, source: str, columns: list[str], keys: str) -> str:
    """One row of ``source`` (its request key and ``columns``) per key of relation ``keys`` (column
    `_llmt_request_key`); the input's columns are read for those keys only."""
    cols = ", ".join(f"i.{quote(c)}" for c in columns)
    cols = f", {cols}" if cols else ""
    if _staged_node(state, source) is not None:  # a table: one row per key by rowid (sorting the texts is slow)
        return (f"SELECT i._llmt_request_key{cols} FROM {source} i SEMI JOIN (SELECT min(s.rowid) AS r FROM {source} s "
                f"SEMI JOIN {keys} k ON k._llmt_request_key = s._llmt_request_key GROUP BY s._llmt_request_key) p "
                f"ON p.r = i.rowid")
    return (f"SELECT DISTINCT ON (i._llmt_request_key) i._llmt_request_key{cols} FROM {source} i "
            f"SEMI JOIN {keys} k ON k._llmt_request_key = i._llmt_request_key ORDER BY i._llmt_request_key")


def input_counts(conn: duckdb.DuckDBPyConnection, state: str, source: str) -> tuple[int, int, int]:
    """(rows, rows already answered, rows without an answer that share their request with another).

    For a staged model the counts are remembered with the stage and reused while neither the staged
    rows nor the stored answers changed (the output build remembers them too: see `with_input_counts`)."""
    node = _staged_node(state, source)
    staged = stage_fingerprint(conn, state, node) if node else None
    if staged is not None:
        cached = staged.get("counts")
        if isinstance(cached, dict) and cached.get("key") == _counts_key(conn, state, staged):
            rows, answered, dedup = cached["value"]
            return int(rows), int(answered), int(dedup)
    row = conn.execute(
        "SELECT count(*), count(a.request_key), "
        "count(*) FILTER (WHERE a.request_key IS NULL) "
        "- count(DISTINCT i._llmt_request_key) FILTER (WHERE a.request_key IS NULL) "
        f"FROM {source} i LEFT JOIN {quote(state)}.answers a "
        f"ON a.request_key = i._llmt_request_key"
    ).fetchone()
    assert row is not None
    counts = int(row[0]), int(row[1]), int(row[2])
    if staged is not None and node is not None:
        set_stage_fingerprint(conn, state, node, with_input_counts(conn, state, staged, counts))
    return counts


def with_input_counts(conn: duckdb.DuckDBPyConnection, state: str, staged: dict[str, Any],
                      counts: tuple[int, int, int]) -> dict[str, Any]:
    """The stage's fingerprint ``staged`` with ``counts`` (what `input_counts` gives for its rows and the
    answers stored now) remembered."""
    return {**staged, "counts": {"key": _counts_key(conn, state, staged), "value": list(counts)}}


def _counts_key(conn: duckdb.DuckDBPyConnection, state: str, staged: dict[str, Any]) -> str:
    """What input counts are valid for: the staged rows, and the stored answers (count, latest)."""
    stats = conn.execute(f"SELECT count(*), max(answered_at) FROM {quote(state)}.answers").fetchone()
    return json.dumps([staged.get("layout"), staged.get("rows"), list(stats or ())], default=str)


def _staged_node(state: str, source: str) -> str | None:
    """The model whose staged table ``source`` is (as `stage_table` names it), else None."""
    prefix = f"{quote(state)}.{quote('input__')[:-1]}"
    if not (source.startswith(prefix) and source.endswith('"')):
        return None
    name = source[len(prefix):-1].replace('""', '"')
    return name if stage_table(state, name) == source else None
