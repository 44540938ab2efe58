"""Build an LLM model's output table and its `<model>__errors` table from staged inputs and
stored answers. Rows follow the input; a row whose request changed keeps its previous answer
(status `stale`) until the new one arrives."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import duckdb

from llmt.compile import quote, sql_string
from llmt.pipeline.spec import LlmSpec
from llmt.pipeline.stage import attempts_summary_sql, set_stage_fingerprint, stage_fingerprint, stage_table
from llmt.schema import json_structure
from llmt.warehouse.duckdb import relation_kind

OUTPUT_VERSION = 1  # bump when what build_output writes changes: every output table is then rebuilt
IN_PLACE_MIN_ROWS = 10_000  # smaller output tables are always rebuilt whole (sorted by the unique key)
IN_PLACE_MAX_SHARE = 0.1  # when more than this share of the rows changed, the table is rebuilt whole
META_COLUMNS = ("_llmt_status", "_llmt_request_key", "_llmt_answer_key", "_llmt_model", "_llmt_answered_at")


def build_output(
    conn: duckdb.DuckDBPyConnection,
    state: str,
    schema: str,
    spec: LlmSpec,
    columns: list[str],
    since_run: str | None,
    escalated: LlmSpec | None = None,
) -> dict[str, int]:
    """Replace the output and errors tables (caller holds the transaction). Returns status counts.
    With a cascade (``escalated``), a row's escalated answer wins over the primary model's."""
    name = spec.node
    out, new = f"{quote(schema)}.{quote(name)}", f"{quote(schema)}.{quote(name + '__llmt_new')}"
    s = quote(state)
    uk = spec.unique_key
    prev_kind = relation_kind(conn, schema, name)
    staged = stage_fingerprint(conn, state, name)
    built = _output_fingerprint(conn, state, schema, spec, columns, since_run, escalated, staged)
    if (prev_kind == "table" and staged is not None and staged.get("output") == built
            and relation_kind(conn, schema, name + "__errors") == "table"):
        return _status_counts(conn, out)  # built from the same inputs, answers and attempts: nothing to do
    needed = ["_llmt_answer_key", *uk]  # the previous table can show stale answers only if it has these
    has_prev = prev_kind == "table" and conn.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
        "AND column_name IN (SELECT unnest(?::VARCHAR[]))", [schema, name, needed],
    ).fetchone() == (len(needed),)
    # rows without an answer to their current request: only they need their attempts, or an older answer
    missing = (f"missing AS MATERIALIZED (SELECT {', '.join(f'i.{quote(k)}' for k in uk)}, "
               f"i._llmt_request_key FROM {stage_table(state, name)} i WHERE NOT EXISTS "
               f"(SELECT 1 FROM {s}.answers a WHERE a.request_key = i._llmt_request_key))")
    att = f"att AS ({attempts_summary_sql(state, since_run, 'missing')})"
    prev = (f", prev AS MATERIALIZED (SELECT {', '.join(f'm.{quote(k)}' for k in uk)}, a2.request_key, a2.answer, "
            f"a2.model, a2.answered_at FROM missing m JOIN {out} p ON "
            + " AND ".join(f"p.{quote(k)} = m.{quote(k)}" for k in uk)
            + f" JOIN {s}.answers a2 ON a2.request_key = p._llmt_answer_key)" if has_prev else "")
    prev_join = (
        f"LEFT JOIN prev a2 ON {' AND '.join(f'a2.{quote(k)} = i.{quote(k)}' for k in uk)} AND a.request_key IS NULL"
        if has_prev else _no_answers("a2")
    )
    esc_join = (f"LEFT JOIN {s}.answers e ON e.request_key = {escalated.request_key_sql('i')}"
                if escalated is not None else _no_answers("e"))
    structure = sql_string(json.dumps(json_structure(spec.strict_schema)))
    select_cols = ", ".join(f"j.{quote(c)}" for c in columns)
    fields = ", ".join(f"j._llmt_answer.{quote(f)} AS {quote(f)}" for f, _ in spec.output_columns)
    order = ", ".join(f"j.{quote(k)}" for k in uk)
    status = (f"CASE WHEN e.request_key IS NOT NULL OR a.request_key IS NOT NULL THEN 'ok' "
              f"WHEN a2.request_key IS NOT NULL THEN 'stale' "
              f"WHEN att.terminal OR att.failures >= {spec.max_attempts} THEN 'failed' ELSE 'pending' END")
    joins = f"""FROM {stage_table(state, name)} i
            LEFT JOIN {s}.answers a ON a.request_key = i._llmt_request_key
            {esc_join}
            {prev_join}
            LEFT JOIN att ON att.request_key = i._llmt_request_key"""

    def rows_sql(where: str = "") -> str:
        return f"""
        WITH {missing}, {att}{prev}
        SELECT {select_cols}, {fields},
               j._llmt_status, j._llmt_request_key, j._llmt_answer_key, j._llmt_model, j._llmt_answered_at
        FROM (
            SELECT i.*, json_transform(coalesce(e.answer, a.answer, a2.answer), {structure}) AS _llmt_answer,
                   {status} AS _llmt_status,
                   coalesce(e.request_key, a.request_key, a2.request_key) AS _llmt_answer_key,
                   coalesce(e.model, a.model, a2.model) AS _llmt_model,
                   coalesce(e.answered_at, a.answered_at, a2.answered_at) AS _llmt_answered_at
            {joins}
            {where}
        ) j"""

    shape = _shape(schema, spec, columns, since_run, escalated)
    updated = has_prev and staged is not None and staged.get("shape") == shape and _update_in_place(
        conn, out, uk, columns, f"WITH {missing}, {att}{prev} SELECT {', '.join(f'i.{quote(k)}' for k in uk)}, "
        f"i._llmt_row_hash, i._llmt_request_key, {status} AS _llmt_status, "
        f"coalesce(e.request_key, a.request_key, a2.request_key) AS _llmt_answer_key, "
        f"coalesce(e.model, a.model, a2.model) AS _llmt_model, "
        f"coalesce(e.answered_at, a.answered_at, a2.answered_at) AS _llmt_answered_at {joins}", rows_sql)
    if not updated:
        conn.execute(f"DROP TABLE IF EXISTS {new}")
        conn.execute(f"CREATE TABLE {new} AS {rows_sql()} ORDER BY {order}")
        if prev_kind == "view":
            conn.execute(f"DROP VIEW {out}")
        elif prev_kind == "table":
            conn.execute(f"DROP TABLE {out}")
        conn.execute(f"ALTER TABLE {new} RENAME TO {quote(name)}")
    errors = f"{quote(schema)}.{quote(name + '__errors')}"
    key_cols = ", ".join(f"i.{quote(k)}" for k in uk)
    conn.execute(f"""
        CREATE OR REPLACE TABLE {errors} AS
        WITH {missing}, {att}
        SELECT {key_cols}, i._llmt_request_key AS request_key, att.outcome AS reason, att.status_code,
               att.error_code, att.detail, att.attempts, att.last_attempt_at
        FROM {stage_table(state, name)} i
        JOIN att ON att.request_key = i._llmt_request_key
        LEFT JOIN {s}.answers a ON a.request_key = i._llmt_request_key
        {esc_join}
        WHERE a.request_key IS NULL AND e.request_key IS NULL AND (att.terminal OR att.failures >= {spec.max_attempts})
        ORDER BY {', '.join(quote(k) for k in uk)}""")
    if staged is not None:
        set_stage_fingerprint(conn, state, name, {**staged, "output": built, "shape": shape})
    return _status_counts(conn, out)


def _update_in_place(
    conn: duckdb.DuckDBPyConnection, out: str, uk: list[str], columns: list[str], now_sql: str,
    rows_sql: Callable[[str], str],
) -> bool:
    """Replace only the output rows whose input, request, answer or status changed; False (nothing done)
    when that is a large share of the table, which is then rebuilt whole (as cheap, and it stays sorted).

    ``now_sql`` gives each row's state as it should be (without reading answer texts); the table's rows
    are compared with it by unique key (input columns by their hash, as staged)."""
    keys = ", ".join(quote(k) for k in uk)
    on = " AND ".join(f"n.{quote(k)} = o.{quote(k)}" for k in uk)
    meta = ("_llmt_request_key", "_llmt_status", "_llmt_answer_key", "_llmt_model", "_llmt_answered_at")
    row_hash = f"hash({', '.join(quote(c) for c in columns)})"
    size = conn.execute(f"SELECT count(*) FROM {out}").fetchone()
    total = int(size[0]) if size else 0
    if total < IN_PLACE_MIN_ROWS:
        return False
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _llmt_now AS {now_sql}")
    conn.execute(f"""CREATE OR REPLACE TEMP TABLE _llmt_changed AS
        SELECT {', '.join(f'coalesce(n.{quote(k)}, o.{quote(k)}) AS {quote(k)}' for k in uk)}
        FROM _llmt_now n FULL OUTER JOIN (SELECT {keys}, {row_hash} AS _llmt_row_hash, {', '.join(meta)} FROM {out}) o
          ON {on}
        WHERE n._llmt_row_hash IS NULL OR o._llmt_row_hash IS NULL OR n._llmt_row_hash <> o._llmt_row_hash
           OR {' OR '.join(f'n.{m} IS DISTINCT FROM o.{m}' for m in meta)}""")
    row = conn.execute("SELECT count(*) FROM _llmt_changed").fetchone()
    changed = int(row[0]) if row else 0
    try:
        if changed > total * IN_PLACE_MAX_SHARE:
            return False
        if changed:
            picked = "WHERE (" + ", ".join(f"i.{quote(k)}" for k in uk) + f") IN (SELECT ({keys}) FROM _llmt_changed)"
            conn.execute(f"CREATE OR REPLACE TEMP TABLE _llmt_rows AS {rows_sql(picked)}")  # before the delete
            conn.execute(f"DELETE FROM {out} WHERE ({keys}) IN (SELECT ({keys}) FROM _llmt_changed)")
            conn.execute(f"INSERT INTO {out} BY NAME SELECT * FROM _llmt_rows")
            conn.execute("DROP TABLE _llmt_rows")
        return True
    finally:
        conn.execute("DROP TABLE IF EXISTS _llmt_now")
        conn.execute("DROP TABLE IF EXISTS _llmt_changed")


def _shape(schema: str, spec: LlmSpec, columns: list[str], since_run: str | None, escalated: LlmSpec | None) -> str:
    """What decides the output table's columns and how rows are computed (not its data)."""
    parts = [OUTPUT_VERSION, schema, spec.node, spec.template_hash, spec.unique_key, spec.max_attempts, columns,
             spec.output_columns, since_run, escalated.template_hash if escalated is not None else None]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _status_counts(conn: duckdb.DuckDBPyConnection, out: str) -> dict[str, int]:
    counts = dict(conn.execute(f"SELECT _llmt_status, count(*) FROM {out} GROUP BY 1").fetchall())
    return {k: int(counts.get(k, 0)) for k in ("ok", "stale", "pending", "failed")}


def _output_fingerprint(
    conn: duckdb.DuckDBPyConnection, state: str, schema: str, spec: LlmSpec, columns: list[str],
    since_run: str | None, escalated: LlmSpec | None, staged: dict[str, Any] | None,
) -> str:
    """Everything the output and errors tables are built from: the staged rows (their fingerprint), the
    stored answers and attempts (append-only: their counts), and the model's settings. Equal
    fingerprints build equal tables, so a run that changed none of it leaves them as they are."""
    s = quote(state)
    row = conn.execute(f"SELECT (SELECT count(*) FROM {s}.answers), (SELECT max(answered_at) FROM {s}.answers), "
                       f"(SELECT count(*) FROM {s}.attempts)").fetchone()  # max(answered_at): --reask replaces
    staged_rows = None if staged is None else [staged.get("layout"), staged.get("rows")]
    parts = [OUTPUT_VERSION, staged_rows, list(row or ()), schema, spec.node, spec.template_hash, spec.unique_key,
             spec.max_attempts, columns, spec.output_columns, since_run,
             escalated.template_hash if escalated is not None else None]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _no_answers(alias: str) -> str:
    """A join that matches nothing, with the columns of `answers` the output reads."""
    return (f"LEFT JOIN (SELECT NULL::VARCHAR AS request_key, NULL::VARCHAR AS answer, NULL::VARCHAR AS model, "
            f"NULL::TIMESTAMP AS answered_at) {alias} ON false")
