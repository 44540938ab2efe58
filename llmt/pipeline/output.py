"""Build an LLM model's output table and its `<model>__errors` table from staged inputs and
stored answers. Rows follow the input; a row whose request changed keeps its previous answer
(status `stale`) until the new one arrives."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import duckdb

from llmt.compile import quote, sql_string
from llmt.persist_docs import persist_docs
from llmt.pipeline.spec import LlmSpec
from llmt.pipeline.stage import (
    attempts_summary_sql,
    set_stage_fingerprint,
    stage_fingerprint,
    stage_table,
    with_input_counts,
)
from llmt.schema import json_structure
from llmt.warehouse.duckdb import create_table, relation_kind
from llmt.warehouse.state import KEYS

# bump when what build_output writes changes: every output table is then rebuilt (2: _llmt_answered_at TIMESTAMPTZ)
OUTPUT_VERSION = 2
IN_PLACE_MIN_ROWS = 10_000  # smaller output tables are always rebuilt whole
IN_PLACE_MAX_SHARE = 0.1  # when more than this share of the rows changed, the table is rebuilt whole
META_COLUMNS = ("_llmt_status", "_llmt_request_key", "_llmt_answer_key", "_llmt_model", "_llmt_answered_at")
META_DOCS = {  # their comments in the database (persist_docs)
    "_llmt_status": "llmt: ok; stale (the request changed: the previous answer until the new one arrives); pending "
                    "(no answer yet); failed (see <model>__errors)",
    "_llmt_request_key": "llmt: the key of the row's current request",
    "_llmt_answer_key": "llmt: the request key of the answer shown (differs from _llmt_request_key when stale)",
    "_llmt_model": "llmt: the LLM that answered",
    "_llmt_answered_at": "llmt: when the answer was stored",
}
# VARCHAR columns whose values average at least this many bytes are stored with ZSTD (see create_table)
LONG_TEXT_BYTES = 64
LONG_TEXT_SAMPLE = 2048  # the first staged rows: their output's text lengths decide
KEY_COLUMNS = ("_llmt_request_key", "_llmt_answer_key")  # hex digests: stored as KEYS (see create_table)
EXTRA = "_llmt_extra"  # temp table: the rows without an answer to their current request that are not plainly pending


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
    out = f"{quote(schema)}.{quote(name)}"
    prev_kind = relation_kind(conn, schema, name)
    staged = stage_fingerprint(conn, state, name)
    built = _output_fingerprint(conn, state, schema, spec, columns, since_run, escalated, staged)
    if (prev_kind == "table" and staged is not None and staged.get("output") == built
            and isinstance(staged.get("counts_out"), dict)
            and relation_kind(conn, schema, name + "__errors") == "table"):
        persist_docs(conn, schema, name, spec.docs, META_DOCS)  # descriptions may have changed
        return {k: int(v) for k, v in staged["counts_out"].items()}  # built from the same inputs: nothing to do
    needed = ["_llmt_answer_key", *spec.unique_key]  # the previous table can show stale answers only with these
    has_prev = prev_kind == "table" and conn.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
        "AND column_name IN (SELECT unnest(?::VARCHAR[]))", [schema, name, needed],
    ).fetchone() == (len(needed),)
    row = conn.execute(f"SELECT count(*) FROM {quote(state)}.attempts WHERE node = ?", [name]).fetchone()
    attempts = int(row[0]) if row else 0
    extra = _extra_sql(state, out if has_prev else None, spec, since_run)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {EXTRA} AS {extra}")
    rows = _Rows(state, spec, columns, escalated, extra=_has_rows(conn, EXTRA))
    shape = _shape(schema, spec, columns, since_run, escalated)
    # answers and failures collected since the table was built change about as many rows: when that is
    # a large share, the table is rebuilt without comparing it row by row first
    seen = staged.get("attempts") if staged is not None else None
    new_attempts = attempts - seen if isinstance(seen, int) else None
    updated = has_prev and staged is not None and staged.get("shape") == shape and _update_in_place(
        conn, out, spec.unique_key, rows, new_attempts)
    if not updated:
        _rebuild(conn, schema, name, prev_kind, rows)
    _build_errors(conn, schema, spec, out, escalated is not None)
    persist_docs(conn, schema, name, spec.docs, META_DOCS)
    conn.execute(f"DROP TABLE {EXTRA}")  # (on an error the caller's rollback drops it)
    counts = _status_counts(conn, out)
    if staged is not None:
        value = {**staged, "output": built, "shape": shape, "attempts": attempts, "counts_out": counts}
        if escalated is None:  # a row is ok exactly when its request has an answer: the next run's input counts
            value = with_input_counts(conn, state, value, _input_counts(conn, out, counts))
        set_stage_fingerprint(conn, state, name, value)
    return counts


class _Rows:
    """The output rows as SQL: every staged row with its answer (the escalated one, else the primary one,
    else, for a row whose request changed, the previous one) and its status."""

    def __init__(self, state: str, spec: LlmSpec, columns: list[str], escalated: LlmSpec | None,
                 extra: bool) -> None:
        s = quote(state)
        self.uk, self.columns, self.fields = spec.unique_key, columns, [f for f, _ in spec.output_columns]
        # the input columns that neither the unique key nor the request key (a hash of the prompt's columns) covers
        self.free = [c for c in columns if c not in spec.columns and c not in spec.unique_key]
        esc = (f"LEFT JOIN {s}.answers e ON e.request_key = {escalated.request_key_sql('i')}"
               if escalated is not None else "")
        x = (f"LEFT JOIN {EXTRA} x ON " + " AND ".join(f"x.{quote(k)} = i.{quote(k)}" for k in self.uk)
             if extra else "")
        self.joins = (f"FROM {stage_table(state, spec.node)} i "
                      f"LEFT JOIN {s}.answers a ON a.request_key = i._llmt_request_key {esc} {x}")
        answers = ["e", "a"] if escalated is not None else ["a"]
        answered = " OR ".join(f"{t}.request_key IS NOT NULL" for t in answers)
        status = f"CASE WHEN {answered} THEN 'ok' ELSE {'coalesce(x.status, ' if extra else '('}'pending') END"

        def pick(col: str, in_extra: str) -> str:
            picked = [f"{t}.{col}" for t in answers] + ([f"x.{in_extra}"] if extra else [])
            return picked[0] if len(picked) == 1 else f"coalesce({', '.join(picked)})"

        self.meta = (f"{status} AS _llmt_status, {pick('request_key', 'answer_key')} AS _llmt_answer_key, "
                     f"{pick('model', 'model')} AS _llmt_model, "
                     f"{pick('answered_at', 'answered_at')} AS _llmt_answered_at")
        structure = sql_string(json.dumps(json_structure(spec.strict_schema)))
        self.answer = f"json_transform({pick('answer', 'answer')}, {structure})"

    def sql(self, where: str = "") -> str:
        """Every output column, for the staged rows ``where`` selects."""
        cols = [*(f"j.{quote(c)}" for c in self.columns),
                *(f"j._llmt_answer.{quote(f)} AS {quote(f)}" for f in self.fields),
                *(f"j.{m}" for m in META_COLUMNS)]
        return (f"SELECT {', '.join(cols)} FROM (SELECT i.*, {self.answer} AS _llmt_answer, {self.meta} "
                f"{self.joins} {where}) j")

    def now(self) -> str:
        """Each row's unique key, hash of its free columns, request, status and answer (without reading answer
        texts)."""
        keys = ", ".join(f"i.{quote(k)}" for k in self.uk)
        free = self.free_hash("i.")
        return f"SELECT {keys}, {free} AS _llmt_free_hash, i._llmt_request_key, {self.meta} {self.joins}"

    def free_hash(self, prefix: str = "") -> str:
        """A hash of a row's free columns (0 when there are none)."""
        return f"hash({', '.join(prefix + quote(c) for c in self.free)})" if self.free else "0::UBIGINT"


def _extra_sql(state: str, prev: str | None, spec: LlmSpec, since_run: str | None) -> str:
    """The rows without an answer to their current request that have attempts or a previous answer (most
    rows are answered, or plainly pending): their status, previous answer and last failure. A previous answer
    is shown (stale) only when the spec's kind of provider gave it: a table built by another target, on the
    same database, never lends a synthetic answer to a real provider's rows (or the other way round)."""
    s, uk = quote(state), spec.unique_key
    keys = ", ".join(f"m.{quote(k)}" for k in uk)
    gave_up = f"(att.terminal OR att.failures >= {int(spec.max_attempts)})"
    prev_cte = (f", prev AS (SELECT {keys}, a2.request_key, a2.answer, a2.model, a2.answered_at FROM missing m "
                f"JOIN {prev} p ON " + " AND ".join(f"p.{quote(k)} = m.{quote(k)}" for k in uk)
                + f" JOIN {s}.answers a2 ON a2.request_key = p._llmt_answer_key AND a2.provider = "
                f"{sql_string(spec.provider)})" if prev else "")
    prev_join = ("LEFT JOIN prev p ON " + " AND ".join(f"p.{quote(k)} = m.{quote(k)}" for k in uk) if prev else
                 "LEFT JOIN (SELECT NULL::VARCHAR AS request_key, NULL::VARCHAR AS answer, NULL::VARCHAR AS model, "
                 "NULL::TIMESTAMPTZ AS answered_at) p ON false")
    return f"""
        WITH missing AS MATERIALIZED (SELECT {', '.join(f'i.{quote(k)}' for k in uk)}, i._llmt_request_key
            FROM {stage_table(state, spec.node)} i
            WHERE NOT EXISTS (SELECT 1 FROM {s}.answers a WHERE a.request_key = i._llmt_request_key)),
        att AS ({attempts_summary_sql(state, since_run, 'missing')}){prev_cte}
        SELECT {keys}, m._llmt_request_key,
               CASE WHEN p.request_key IS NOT NULL THEN 'stale' WHEN {gave_up} THEN 'failed' ELSE 'pending' END
                   AS status,
               coalesce({gave_up}, false) AS gave_up, p.request_key AS answer_key, p.answer, p.model, p.answered_at,
               att.outcome AS reason, att.status_code, att.error_code, att.detail, att.attempts, att.last_attempt_at
        FROM missing m LEFT JOIN att ON att.request_key = m._llmt_request_key {prev_join}
        WHERE att.request_key IS NOT NULL OR p.request_key IS NOT NULL"""


def _rebuild(conn: duckdb.DuckDBPyConnection, schema: str, name: str, prev_kind: str | None, rows: _Rows) -> None:
    """Replace the output table with all its rows; long texts stored with ZSTD. No order is imposed: sorting
    1M rows by the unique key cost as much as writing them (rows mostly come in the staged order)."""
    out, new = f"{quote(schema)}.{quote(name)}", f"{quote(schema)}.{quote(name + '__llmt_new')}"
    described = [(str(r[0]), str(r[1])) for r in conn.execute(f"DESCRIBE {rows.sql()}").fetchall()]
    conn.execute(f"DROP TABLE IF EXISTS {new}")
    texts = [c for c, t in described if t == "VARCHAR" and c not in KEY_COLUMNS]
    create_table(conn, new, rows.sql(), {**dict.fromkeys(_long_texts(conn, rows, texts), "zstd"),
                                         **dict.fromkeys(KEY_COLUMNS, KEYS)})
    if prev_kind == "view":
        conn.execute(f"DROP VIEW {out}")
    elif prev_kind == "table":
        conn.execute(f"DROP TABLE {out}")
    conn.execute(f"ALTER TABLE {new} RENAME TO {quote(name)}")


def _long_texts(conn: duckdb.DuckDBPyConnection, rows: _Rows, texts: list[str]) -> set[str]:
    """The VARCHAR columns (of ``texts``) whose values average LONG_TEXT_BYTES or more in the first rows staged."""
    if not texts:
        return set()
    sample = f"WHERE i.rowid < {LONG_TEXT_SAMPLE}"
    lengths = conn.execute(f"SELECT {', '.join(f'avg(strlen({quote(c)}))' for c in texts)} "
                           f"FROM ({rows.sql(sample)})").fetchone()
    return {c for c, n in zip(texts, lengths or (), strict=True) if n is not None and n >= LONG_TEXT_BYTES}


def _build_errors(conn: duckdb.DuckDBPyConnection, schema: str, spec: LlmSpec, out: str, escalated: bool) -> None:
    """The rows without an answer whose last attempt was final or that used up their attempts."""
    keys = ", ".join(quote(k) for k in spec.unique_key)
    unanswered = f" AND ({keys}) IN (SELECT ({keys}) FROM {out} WHERE _llmt_status <> 'ok')" if escalated else ""
    conn.execute(f"""
        CREATE OR REPLACE TABLE {quote(schema)}.{quote(spec.node + '__errors')} AS
        SELECT {keys}, _llmt_request_key AS request_key, reason, status_code, error_code, detail, attempts,
               last_attempt_at
        FROM {EXTRA} WHERE gave_up{unanswered}
        ORDER BY {keys}""")


def _update_in_place(
    conn: duckdb.DuckDBPyConnection, out: str, uk: list[str], rows: _Rows, new_attempts: int | None,
) -> bool:
    """Replace only the output rows whose input, request, answer or status changed; False (nothing done)
    when that is a large share of the table, which is then rebuilt whole (as cheap).

    Each row's state as it should be (without reading answer texts) is compared with the table's rows by
    unique key: its request key (which covers the prompt's columns: their long texts are not read again), its
    other input columns by their hash, its answer and status. When more attempts were made since the table
    was built (``new_attempts``) than that share of rows, it is rebuilt without comparing."""
    keys = ", ".join(quote(k) for k in uk)
    on = " AND ".join(f"n.{quote(k)} = o.{quote(k)}" for k in uk)
    meta = ("_llmt_request_key", "_llmt_status", "_llmt_answer_key", "_llmt_model", "_llmt_answered_at")
    free_hash = rows.free_hash()
    size = conn.execute(f"SELECT count(*) FROM {out}").fetchone()
    total = int(size[0]) if size else 0
    if total < IN_PLACE_MIN_ROWS or (new_attempts is not None and new_attempts > total * IN_PLACE_MAX_SHARE):
        return False
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _llmt_now AS {rows.now()}")
    conn.execute(f"""CREATE OR REPLACE TEMP TABLE _llmt_changed AS
        SELECT {', '.join(f'coalesce(n.{quote(k)}, o.{quote(k)}) AS {quote(k)}' for k in uk)}
        FROM _llmt_now n FULL OUTER JOIN (SELECT {keys}, {free_hash} AS _llmt_free_hash, {', '.join(meta)} FROM {out}) o
          ON {on}
        WHERE n._llmt_free_hash IS NULL OR o._llmt_free_hash IS NULL OR n._llmt_free_hash <> o._llmt_free_hash
           OR {' OR '.join(f'n.{m} IS DISTINCT FROM o.{m}' for m in meta)}""")
    row = conn.execute("SELECT count(*) FROM _llmt_changed").fetchone()
    changed = int(row[0]) if row else 0
    try:
        if changed > total * IN_PLACE_MAX_SHARE:
            return False
        if changed:
            picked = "WHERE (" + ", ".join(f"i.{quote(k)}" for k in uk) + f") IN (SELECT ({keys}) FROM _llmt_changed)"
            conn.execute(f"CREATE OR REPLACE TEMP TABLE _llmt_rows AS {rows.sql(picked)}")  # before the delete
            conn.execute(f"DELETE FROM {out} WHERE ({keys}) IN (SELECT ({keys}) FROM _llmt_changed)")
            conn.execute(f"INSERT INTO {out} BY NAME SELECT * FROM _llmt_rows")
            conn.execute("DROP TABLE _llmt_rows")
        return True
    finally:
        conn.execute("DROP TABLE IF EXISTS _llmt_now")
        conn.execute("DROP TABLE IF EXISTS _llmt_changed")


def _has_rows(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    return conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone() == (True,)


def _shape(schema: str, spec: LlmSpec, columns: list[str], since_run: str | None, escalated: LlmSpec | None) -> str:
    """What decides the output table's columns and how rows are computed (not its data)."""
    parts = [OUTPUT_VERSION, schema, spec.node, spec.template_hash, spec.unique_key, spec.max_attempts, columns,
             spec.output_columns, since_run, escalated.template_hash if escalated is not None else None]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _status_counts(conn: duckdb.DuckDBPyConnection, out: str) -> dict[str, int]:
    counts = dict(conn.execute(f"SELECT _llmt_status, count(*) FROM {out} GROUP BY 1").fetchall())
    return {k: int(counts.get(k, 0)) for k in ("ok", "stale", "pending", "failed")}


def _input_counts(conn: duckdb.DuckDBPyConnection, out: str, statuses: dict[str, int]) -> tuple[int, int, int]:
    """What `input_counts` gives, from the status counts and output table of a model without a cascade (not a
    join of every staged key with the answers: 0.3 s at 1M rows, for the run after a collect)."""
    row = conn.execute(f"SELECT count(*) - count(DISTINCT _llmt_request_key) FROM {out} "
                       "WHERE _llmt_status <> 'ok'").fetchone()
    return sum(statuses.values()), statuses["ok"], int(row[0]) if row else 0


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
