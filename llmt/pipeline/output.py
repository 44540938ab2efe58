"""Build an LLM model's output table and its `<model>__errors` table from staged inputs and
stored answers. Rows follow the input; a row whose request changed keeps its previous answer
(status `stale`) until the new one arrives."""

from __future__ import annotations

import json

import duckdb

from llmt.compile import quote, sql_string
from llmt.pipeline.spec import LlmSpec
from llmt.pipeline.stage import attempts_summary_sql, stage_table
from llmt.schema import json_structure
from llmt.warehouse.duckdb import relation_kind

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
    needed = ["_llmt_answer_key", *uk]  # the previous table can show stale answers only if it has these
    has_prev = prev_kind == "table" and conn.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
        "AND column_name IN (SELECT unnest(?::VARCHAR[]))", [schema, name, needed],
    ).fetchone() == (len(needed),)
    prev_join = (
        f"LEFT JOIN (SELECT {', '.join(quote(k) for k in uk)}, _llmt_answer_key FROM {out}) p "
        f"ON {' AND '.join(f'p.{quote(k)} = i.{quote(k)}' for k in uk)} "
        f"LEFT JOIN {s}.answers a2 ON a2.request_key = p._llmt_answer_key AND a.request_key IS NULL"
        if has_prev else _no_answers("a2")
    )
    esc_join = (f"LEFT JOIN {s}.answers e ON e.request_key = {escalated.request_key_sql('i')}"
                if escalated is not None else _no_answers("e"))
    structure = sql_string(json.dumps(json_structure(spec.strict_schema)))
    select_cols = ", ".join(f"j.{quote(c)}" for c in columns)
    fields = ", ".join(f"j._llmt_answer.{quote(f)} AS {quote(f)}" for f, _ in spec.output_columns)
    order = ", ".join(f"j.{quote(k)}" for k in uk)
    conn.execute(f"DROP TABLE IF EXISTS {new}")
    conn.execute(f"""
        CREATE TABLE {new} AS
        WITH att AS ({attempts_summary_sql(state, since_run)})
        SELECT {select_cols}, {fields},
               j._llmt_status, j._llmt_request_key, j._llmt_answer_key, j._llmt_model, j._llmt_answered_at
        FROM (
            SELECT i.*, json_transform(coalesce(e.answer, a.answer, a2.answer), {structure}) AS _llmt_answer,
                   CASE WHEN e.request_key IS NOT NULL OR a.request_key IS NOT NULL THEN 'ok'
                        WHEN a2.request_key IS NOT NULL THEN 'stale'
                        WHEN att.terminal OR att.failures >= {spec.max_attempts} THEN 'failed'
                        ELSE 'pending' END AS _llmt_status,
                   coalesce(e.request_key, a.request_key, a2.request_key) AS _llmt_answer_key,
                   coalesce(e.model, a.model, a2.model) AS _llmt_model,
                   coalesce(e.answered_at, a.answered_at, a2.answered_at) AS _llmt_answered_at
            FROM {stage_table(state, name)} i
            LEFT JOIN {s}.answers a ON a.request_key = i._llmt_request_key
            {esc_join}
            {prev_join}
            LEFT JOIN att ON att.request_key = i._llmt_request_key
        ) j
        ORDER BY {order}""")
    if prev_kind == "view":
        conn.execute(f"DROP VIEW {out}")
    elif prev_kind == "table":
        conn.execute(f"DROP TABLE {out}")
    conn.execute(f"ALTER TABLE {new} RENAME TO {quote(name)}")
    errors = f"{quote(schema)}.{quote(name + '__errors')}"
    key_cols = ", ".join(f"i.{quote(k)}" for k in uk)
    conn.execute(f"""
        CREATE OR REPLACE TABLE {errors} AS
        WITH att AS ({attempts_summary_sql(state, since_run)})
        SELECT {key_cols}, i._llmt_request_key AS request_key, att.outcome AS reason, att.status_code,
               att.error_code, att.detail, att.attempts, att.last_attempt_at
        FROM {stage_table(state, name)} i
        JOIN att ON att.request_key = i._llmt_request_key
        LEFT JOIN {s}.answers a ON a.request_key = i._llmt_request_key
        {esc_join}
        WHERE a.request_key IS NULL AND e.request_key IS NULL AND (att.terminal OR att.failures >= {spec.max_attempts})
        ORDER BY {', '.join(quote(k) for k in uk)}""")
    counts = dict(conn.execute(f"SELECT _llmt_status, count(*) FROM {out} GROUP BY 1").fetchall())
    return {k: int(counts.get(k, 0)) for k in ("ok", "stale", "pending", "failed")}


def _no_answers(alias: str) -> str:
    """A join that matches nothing, with the columns of `answers` the output reads."""
    return (f"LEFT JOIN (SELECT NULL::VARCHAR AS request_key, NULL::VARCHAR AS answer, NULL::VARCHAR AS model, "
            f"NULL::TIMESTAMP AS answered_at) {alias} ON false")
