"""An LLM model's output table and its `<model>__errors` table, built from the staged inputs and the stored
answers. Rows follow the input; a row whose request changed keeps its previous answer (status `stale`) until
the new one arrives."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmt.persist_docs import Docs, persist_docs
from llmt.warehouse.base import Column, TempTable, Warehouse
from llmt.warehouse.staging import (
    attempts_summary_sql,
    request_key_sql,
    stage_table,
    staged_fingerprint,
    with_input_counts,
)
from llmt.warehouse.state import KEYS
from llmt.warehouse.store import StateStore

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
# text columns whose values average at least this many bytes are stored with ZSTD (see create_table)
LONG_TEXT_BYTES = 64
LONG_TEXT_SAMPLE = 2048  # the first staged rows: their output's text lengths decide
KEY_COLUMNS = ("_llmt_request_key", "_llmt_answer_key")  # hex digests: stored as KEYS (see create_table)


@dataclass(frozen=True)
class Output:
    """What an LLM model's output table is built from, besides the stored answers."""

    node: str
    schema: str  # where the output and errors tables are built
    columns: Sequence[Column]  # the select's
    referenced: Sequence[str]  # the prompt's columns (the request key covers them)
    unique_key: Sequence[str]
    max_attempts: int
    template_hash: str
    provider: str  # the kind of provider whose answers it shows
    fields: Sequence[tuple[str, Any]]  # each answer field and its structure (schema.json_structure)
    escalated: str | None  # the escalation's template hash: its answer wins over the primary one
    docs: Docs


def build_output(wh: Warehouse, store: StateStore, out: Output, since_run: str | None) -> dict[str, int]:
    """Replace the output and errors tables (caller holds the transaction). Returns status counts."""
    name = out.node
    table = wh.relation(out.schema, name)
    prev_kind = wh.relation_kind(out.schema, name)
    staged = staged_fingerprint(wh, store, name)
    stored = _stored(wh, name)
    built = _output_fingerprint(out, since_run, staged, stored)
    if (prev_kind == "table" and staged is not None and staged.get("output") == built
            and isinstance(staged.get("counts_out"), dict)
            and wh.relation_kind(out.schema, name + "__errors") == "table"):
        persist_docs(wh, out.schema, name, out.docs, META_DOCS)  # descriptions may have changed
        return {k: int(v) for k, v in staged["counts_out"].items()}  # built from the same inputs: nothing to do
    wh.create_schema(out.schema)
    needed = ["_llmt_answer_key", *out.unique_key]  # the previous table can show stale answers only with these
    has_prev = prev_kind == "table" and set(needed) <= {c.name for c in wh.describe(f"SELECT * FROM {table}")}
    # the rows without an answer first, in a table of their own: planned from a guess, a large share of them
    # was taken for one row once the answers had statistics, and the plan ran for minutes
    missing = wh.temp_table("_llmt_missing", _missing_sql(wh, out))
    # a previous table that showed no answer (by its build's counts: a model's first collect) lends none, and
    # is not read for the answers it would lend
    shown = staged.get("counts_out") if staged is not None else None
    lends = has_prev and not (isinstance(shown, dict) and not shown.get("ok") and not shown.get("stale"))
    extra = wh.temp_table("_llmt_extra", _extra_sql(wh, table if lends else None, out, since_run, missing.name),
                          parallel=True)  # (the output's statement joins it to every staged row)
    # rows without an answer that share their request with another (the next run's input counts, kept below)
    shared = int(wh.scalar(f"SELECT count(*) - count(DISTINCT _llmt_request_key) FROM {missing.name}") or 0
                 ) if staged is not None and out.escalated is None else 0
    wh.drop_temp(missing)
    rows = _Rows(wh, out, extra)
    shape = _shape(out, since_run)
    # answers and failures collected since the table was built change about as many rows: when that is
    # a large share, the table is rebuilt without comparing it row by row first
    seen = staged.get("attempts") if staged is not None else None
    attempts = stored[3]
    new_attempts = attempts - seen if isinstance(seen, int) else None
    built_rows = sum(int(n) for n in shown.values()) if isinstance(shown, dict) else None
    updated = has_prev and staged is not None and staged.get("shape") == shape and _update_in_place(
        wh, table, out.unique_key, rows, new_attempts, built_rows)
    if not updated:
        _rebuild(wh, out.schema, name, prev_kind, rows)
    _build_errors(wh, out, extra, out.escalated is not None)
    persist_docs(wh, out.schema, name, out.docs, META_DOCS)
    wh.drop_temp(extra)  # (on an error the caller's rollback drops it)
    counts = _status_counts(wh, table)
    if staged is not None:
        value = {**staged, "output": built, "shape": shape, "attempts": attempts, "counts_out": counts}
        if out.escalated is None:  # a row is ok exactly when its request has an answer: the next run's input counts
            value = with_input_counts(value, (sum(counts.values()), counts["ok"], shared), stored[:2])
        store.set_fingerprint("stage", name, value)
    return counts


class _Rows:
    """The output rows as SQL: every staged row with its answer (the escalated one, else the primary one,
    else, for a row whose request changed, the previous one) and its status."""

    def __init__(self, wh: Warehouse, out: Output, extra: TempTable) -> None:
        self.wh = wh
        answers = wh.state_table("answers")
        self.uk, self.columns, self.fields = out.unique_key, [c.name for c in out.columns], list(out.fields)
        # the input columns that neither the unique key nor the request key (a hash of the prompt's columns) covers
        self.free = [c for c in self.columns if c not in out.referenced and c not in out.unique_key]
        referenced = [c for c in out.columns if c.name in set(out.referenced)]
        esc = (f"LEFT JOIN {answers} e ON e.request_key = {request_key_sql(wh, out.escalated, referenced, 'i')}"
               if out.escalated is not None else "")
        has_extra = extra.rows > 0
        x = (f"LEFT JOIN {extra.name} x ON " + " AND ".join(f"x.{wh.quote(k)} = i.{wh.quote(k)}" for k in self.uk)
             if has_extra else "")
        self.joins = (f"FROM {stage_table(wh, out.node)} i "
                      f"LEFT JOIN {answers} a ON a.request_key = i._llmt_request_key {esc} {x}")
        picks = ["e", "a"] if out.escalated is not None else ["a"]
        answered = " OR ".join(f"{t}.request_key IS NOT NULL" for t in picks)
        status = f"CASE WHEN {answered} THEN 'ok' ELSE {'coalesce(x.status, ' if has_extra else '('}'pending') END"

        def pick(col: str, in_extra: str) -> str:
            picked = [f"{t}.{col}" for t in picks] + ([f"x.{in_extra}"] if has_extra else [])
            return picked[0] if len(picked) == 1 else f"coalesce({', '.join(picked)})"

        self.meta = (f"{status} AS _llmt_status, {pick('request_key', 'answer_key')} AS _llmt_answer_key, "
                     f"{pick('model', 'model')} AS _llmt_model, "
                     f"{pick('answered_at', 'answered_at')} AS _llmt_answered_at")
        self.answer = wh.answer_sql(pick("answer", "answer"), dict(out.fields))

    def sql(self, where: str = "") -> str:
        """Every output column, for the staged rows ``where`` selects."""
        q = self.wh.quote
        cols = [*(f"j.{q(c)}" for c in self.columns),
                *(f"{self.wh.answer_field_sql('j._llmt_answer', f, kind)} AS {q(f)}" for f, kind in self.fields),
                *(f"j.{m}" for m in META_COLUMNS)]
        return (f"SELECT {', '.join(cols)} FROM (SELECT i.*, {self.answer} AS _llmt_answer, {self.meta} "
                f"{self.joins} {where}{self.wh.FENCE}) j")

    def now(self) -> str:
        """Each row's unique key, hash of its free columns, request, status and answer (without reading answer
        texts)."""
        keys = ", ".join(f"i.{self.wh.quote(k)}" for k in self.uk)
        return (f"SELECT {keys}, {self.free_hash('i.')} AS _llmt_free_hash, i._llmt_request_key, {self.meta} "
                f"{self.joins}")

    def free_hash(self, prefix: str = "") -> str:
        """A hash of a row's free columns."""
        return self.wh.row_hash_sql([prefix + self.wh.quote(c) for c in self.free])


def _missing_sql(wh: Warehouse, out: Output) -> str:
    """The staged rows without an answer to their current request: unique key and request key."""
    q = wh.quote
    return (f"SELECT {', '.join(f'i.{q(k)}' for k in out.unique_key)}, i._llmt_request_key "
            f"FROM {stage_table(wh, out.node)} i WHERE NOT EXISTS "
            f"(SELECT 1 FROM {wh.log_table('answers')} a WHERE a.request_key = i._llmt_request_key)")


def _extra_sql(wh: Warehouse, prev: str | None, out: Output, since_run: str | None, missing: str) -> str:
    """Of the rows without an answer to their current request (``missing``: `_missing_sql`), those that have
    attempts or a previous answer (most rows are answered, or plainly pending): their status, previous answer
    and last failure. A previous answer is shown (stale) only when the output's kind of provider gave it: a
    table built by another target, on the same database, never lends a synthetic answer to a real provider's
    rows (or the other way round)."""
    q, uk, answers = wh.quote, out.unique_key, wh.state_table("answers")
    keys = ", ".join(f"m.{q(k)}" for k in uk)
    gave_up = f"(att.terminal OR att.failures >= {int(out.max_attempts)})"
    text = wh.sql_type("VARCHAR")
    prev_cte = (f", prev AS (SELECT {keys}, a2.request_key, a2.answer, a2.model, a2.answered_at FROM {missing} m "
                f"JOIN {prev} p ON " + " AND ".join(f"p.{q(k)} = m.{q(k)}" for k in uk)
                + f" JOIN {answers} a2 ON a2.request_key = p._llmt_answer_key AND a2.provider = "
                f"{wh.string(out.provider)})" if prev else "")
    prev_join = ("LEFT JOIN prev p ON " + " AND ".join(f"p.{q(k)} = m.{q(k)}" for k in uk) if prev else
                 f"LEFT JOIN (SELECT CAST(NULL AS {text}) AS request_key, CAST(NULL AS {text}) AS answer, "
                 f"CAST(NULL AS {text}) AS model, CAST(NULL AS {wh.sql_type('TIMESTAMPTZ')}) AS answered_at) p "
                 "ON false")
    return f"""
        WITH att AS ({attempts_summary_sql(wh, since_run, missing)}){prev_cte}
        SELECT {keys}, m._llmt_request_key,
               CASE WHEN p.request_key IS NOT NULL THEN 'stale' WHEN {gave_up} THEN 'failed' ELSE 'pending' END
                   AS status,
               coalesce({gave_up}, false) AS gave_up, p.request_key AS answer_key, p.answer, p.model, p.answered_at,
               att.outcome AS reason, att.status_code, att.error_code, att.detail, att.attempts, att.last_attempt_at
        FROM {missing} m LEFT JOIN att ON att.request_key = m._llmt_request_key {prev_join}
        WHERE att.request_key IS NOT NULL OR p.request_key IS NOT NULL"""


def _rebuild(wh: Warehouse, schema: str, name: str, prev_kind: str | None, rows: _Rows) -> None:
    """Replace the output table with all its rows; long texts stored with ZSTD. No order is imposed: sorting
    the rows by the unique key costs as much as writing them (rows mostly come in the staged order)."""
    new = wh.relation(schema, name + "__llmt_new")
    described = wh.describe(rows.sql())
    wh.execute(f"DROP TABLE IF EXISTS {new}")
    texts = [c.name for c in described if c.type.family == "text" and c.name not in KEY_COLUMNS]
    wh.create_table(new, rows.sql(), compression={**dict.fromkeys(_long_texts(wh, rows, texts), "zstd"),
                                                  **dict.fromkeys(KEY_COLUMNS, KEYS)})
    wh.swap_table(new, schema, name, prev_kind)


def _long_texts(wh: Warehouse, rows: _Rows, texts: list[str]) -> set[str]:
    """The text columns (of ``texts``) whose values average LONG_TEXT_BYTES or more in the first rows staged
    (only where the engine lets llmt choose a column's storage)."""
    if not texts or not wh.COMPRESSION:
        return set()
    lengths = wh.fetchone(f"SELECT {', '.join(f'avg(strlen({wh.quote(c)}))' for c in texts)} "
                          f"FROM ({rows.sql(f'WHERE i.rowid < {LONG_TEXT_SAMPLE}')})")
    return {c for c, n in zip(texts, lengths or (), strict=True) if n is not None and n >= LONG_TEXT_BYTES}


def _build_errors(wh: Warehouse, out: Output, extra: TempTable, escalated: bool) -> None:
    """The rows without an answer whose last attempt was final or that used up their attempts."""
    keys = ", ".join(wh.quote(k) for k in out.unique_key)
    table = wh.relation(out.schema, out.node)
    same = " AND ".join(f"o.{wh.quote(k)} = e.{wh.quote(k)}" for k in out.unique_key)
    unanswered = (f" AND EXISTS (SELECT 1 FROM {table} o WHERE {same} AND o._llmt_status <> 'ok')" if escalated
                  else "")
    errors = wh.relation(out.schema, out.node + "__errors")
    wh.execute(f"DROP TABLE IF EXISTS {errors}")
    wh.execute(f"""
        CREATE TABLE {errors} AS
        SELECT {keys}, _llmt_request_key AS request_key, reason, status_code, error_code, detail, attempts,
               last_attempt_at
        FROM {extra.name} e WHERE gave_up{unanswered}
        ORDER BY {keys}""")


def _update_in_place(wh: Warehouse, out: str, uk: Sequence[str], rows: _Rows, new_attempts: int | None,
                     total: int | None) -> bool:
    """Replace only the output rows whose input, request, answer or status changed; False (nothing done)
    when that is a large share of the table, which is then rebuilt whole (as cheap).

    Each row's state as it should be (without reading answer texts) is compared with the table's rows by
    unique key: its request key (which covers the prompt's columns: their long texts are not read again), its
    other input columns by their hash, its answer and status. When more attempts were made since the table
    was built (``new_attempts``) than that share of its rows (``total``, when its build counted them), it is
    rebuilt without comparing."""
    if not wh.UPDATES:
        return False
    q = wh.quote
    keys = ", ".join(q(k) for k in uk)
    on = " AND ".join(f"n.{q(k)} = o.{q(k)}" for k in uk)
    meta = ("_llmt_request_key", "_llmt_status", "_llmt_answer_key", "_llmt_model", "_llmt_answered_at")
    if total is None:
        total = int(wh.scalar(f"SELECT count(*) FROM {out}") or 0)
    if total < IN_PLACE_MIN_ROWS or (new_attempts is not None and new_attempts > total * IN_PLACE_MAX_SHARE):
        return False
    now = wh.temp_table("_llmt_now", rows.now())
    changed = wh.temp_table("_llmt_changed", f"""
        SELECT {', '.join(f'coalesce(n.{q(k)}, o.{q(k)}) AS {q(k)}' for k in uk)}
        FROM {now.name} n FULL OUTER JOIN (SELECT {keys}, {rows.free_hash()} AS _llmt_free_hash, {', '.join(meta)}
                                           FROM {out}) o
          ON {on}
        WHERE n._llmt_free_hash IS NULL OR o._llmt_free_hash IS NULL OR n._llmt_free_hash <> o._llmt_free_hash
           OR {' OR '.join(f'n.{m} IS DISTINCT FROM o.{m}' for m in meta)}""")
    try:
        if changed.rows > total * IN_PLACE_MAX_SHARE:
            return False
        if changed.rows:
            def among(alias: str) -> str:
                same = " AND ".join(f"c.{q(k)} = {alias}.{q(k)}" for k in uk)
                return f"EXISTS (SELECT 1 FROM {changed.name} c WHERE {same})"

            fresh = wh.temp_table("_llmt_fresh", rows.sql(f"WHERE {among('i')}"))  # before the delete
            wh.execute(f"DELETE FROM {out} AS o WHERE {among('o')}")
            wh.execute(f"INSERT INTO {out} SELECT * FROM {fresh.name}")
            wh.drop_temp(fresh)
        return True
    finally:
        wh.drop_temp(now)
        wh.drop_temp(changed)


def _shape(out: Output, since_run: str | None) -> str:
    """What decides the output table's columns and how rows are computed (not its data)."""
    parts = [OUTPUT_VERSION, out.schema, out.node, out.template_hash, list(out.unique_key), out.max_attempts,
             [c.name for c in out.columns], list(out.fields), since_run, out.escalated]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _status_counts(wh: Warehouse, out: str) -> dict[str, int]:
    counts = dict(wh.fetchall(f"SELECT _llmt_status, count(*) FROM {out} GROUP BY _llmt_status"))
    return {k: int(counts.get(k, 0)) for k in ("ok", "stale", "pending", "failed")}


def _stored(wh: Warehouse, node: str) -> tuple[Any, ...]:
    """What is stored, in one scan of the answers and one of the attempts (their logs: they grow when they
    change): the answers' count and latest `answered_at` (--reask replaces answers), the attempts' count, and
    the model's."""
    return wh.fetchone(f"SELECT a.n, a.newest, t.n, t.node FROM (SELECT count(*) AS n, max(answered_at) AS newest "
                       f"FROM {wh.log_table('answers')}) a, (SELECT count(*) AS n, count(CASE WHEN node = ? "
                       f"THEN 1 END) AS node FROM {wh.log_table('attempts')}) t", [node]) or (0, None, 0, 0)


def _output_fingerprint(out: Output, since_run: str | None, staged: dict[str, Any] | None,
                        stored: tuple[Any, ...]) -> str:
    """Everything the output and errors tables are built from: the staged rows (their fingerprint), the
    stored answers and attempts (append-only: their counts, `_stored`), and the model's settings. Equal
    fingerprints build equal tables, so a run that changed none of it leaves them as they are."""
    staged_rows = None if staged is None else [staged.get("layout"), staged.get("rows")]
    parts = [OUTPUT_VERSION, staged_rows, list(stored[:3]), out.schema, out.node, out.template_hash,
             list(out.unique_key), out.max_attempts, [c.name for c in out.columns], list(out.fields), since_run,
             out.escalated]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def failed_reasons(wh: Warehouse, schema: str, node: str) -> dict[str, int]:
    """The model's failed rows (its `<model>__errors`) per reason, most first."""
    return {str(r): int(n) for r, n in wh.fetchall(
        f"SELECT reason, count(*) FROM {wh.relation(schema, node + '__errors')} GROUP BY reason "
        "ORDER BY count(*) DESC, reason")}
