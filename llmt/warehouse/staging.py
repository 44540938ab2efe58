"""An LLM model's inputs, staged with their request keys, and the rows that need work: the SQL of the diff.

The staged table holds the select's rows with `_llmt_request_key` and `_llmt_row_hash` (a cheap hash of the
whole row, to see which rows changed). Request keys cost a SHA-256 over the referenced columns of every row,
so they are computed only for rows that are new or changed: each row's row hash is compared with the staged
one by unique key, changed rows are replaced, and when nothing changed (the usual nightly run) the staged
table is left as it is. What was staged is recorded as a fingerprint (store.py): the layout, the rows'
fingerprint, the version of the keys, and the fingerprint of what the select reads (model_state.py): while that
stays the same, the select is not even read again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmt.errors import NodeError
from llmt.warehouse.base import Column, TempTable, Warehouse
from llmt.warehouse.state import KEYS
from llmt.warehouse.store import OPEN, TERMINAL_SQL, USES_ATTEMPT_SQL, StateStore, shard_requests

STAGE_VERSION = 3  # bump when what is staged changes: every model is then staged afresh (3: canonical keys)
@dataclass(frozen=True)
class Inputs:
    """An LLM model's inputs: its select, and how its rows' requests are keyed."""

    node: str
    select: str
    columns: Sequence[str]  # the columns the prompt references (part of the key)
    unique_key: Sequence[str]
    template_hash: str
    key_version: str  # recorded with what is staged (an upgrade re-keys older versions: rekeying.py)
    where: str  # the model's file, for errors
    reads: str | None = None  # a fingerprint of what the select reads, when known (model_state.py)


def stage_table(wh: Warehouse, node: str) -> str:
    return wh.state_table("input__" + node)


def request_key_sql(wh: Warehouse, template_hash: str, columns: Sequence[Column], alias: str = "") -> str:
    """SQL of a row's request key: the template hash and the canonical input hash of ``columns``."""
    return wh.request_key_sql(wh.string(template_hash), wh.input_hash_sql(columns, alias))


def keyed_select(wh: Warehouse, inputs: Inputs, described: Sequence[Column], row_hash: bool = False) -> str:
    """The model's select with each row's request key (and, to stage it, the row hash of every column). The
    input hash is part of the key only: storing it too costs time for nothing."""
    referenced = [c for c in described if c.name in set(inputs.columns)]
    hashed = f", {wh.row_hash_sql([wh.quote(c.name) for c in described])} AS _llmt_row_hash" if row_hash else ""
    return (f"SELECT *, {request_key_sql(wh, inputs.template_hash, referenced)} AS _llmt_request_key{hashed} "
            f"FROM ({inputs.select}) AS _llmt_select")


def stage(wh: Warehouse, store: StateStore, inputs: Inputs, described: Sequence[Column]) -> None:
    """(Re)stage the select's rows (``described``: its columns). Raises NodeError (and the caller's transaction
    rolls back) on duplicate or NULL unique keys."""
    table = stage_table(wh, inputs.node)
    zone = wh.scalar(wh.TIME_ZONE_SQL)
    layout = hashlib.sha256(json.dumps(
        [STAGE_VERSION, inputs.template_hash, list(inputs.columns), list(inputs.unique_key),
         [[c.name, c.type.name] for c in described], zone]).encode()).hexdigest()[:32]
    staged = staged_fingerprint(wh, store, inputs.node)
    keys = ", ".join(wh.quote(k) for k in inputs.unique_key)
    if (staged is not None and inputs.reads is not None and staged.get("reads") == inputs.reads
            and staged.get("layout") == layout and staged.get("keys") == inputs.key_version):
        return  # nothing the select reads changed since these rows were staged: they are its rows
    if staged is None or staged.get("layout") != layout:
        wh.execute(f"DROP TABLE IF EXISTS {table}")
        texts = [c.name for c in described if c.type.name == "VARCHAR" and c.name not in inputs.unique_key]
        # texts sent to a model are usually long: ZSTD writes them several times faster (duckdb.py)
        wh.create_table(table, keyed_select(wh, inputs, described, row_hash=True),
                        compression={**dict.fromkeys(texts, "zstd"), "_llmt_request_key": KEYS}, where=inputs.where)
        _check_keys(wh, table, inputs)
    else:
        rows = wh.temp_table("_llmt_rows", f"SELECT {keys}, {wh.row_hash_sql([wh.quote(c.name) for c in described])} "
                             f"AS _llmt_row_hash FROM ({inputs.select}) AS _llmt_select", where=inputs.where)
        try:
            if _fingerprint(wh, rows.name) == staged.get("rows"):  # nothing changed (NULL and duplicate keys were
                if staged.get("reads") != inputs.reads:  # refused when it was staged)
                    store.set_fingerprint("stage", inputs.node, {**staged, "reads": inputs.reads})
                return
            _check_keys(wh, rows.name, inputs)
            if not wh.UPDATES:  # (no DELETE: every row is keyed again, by the engine that holds them)
                wh.replace_table(table, keyed_select(wh, inputs, described, row_hash=True), "table",
                                 where=inputs.where)
                return _record_stage(store, inputs, staged, layout, _fingerprint(wh, table))
            same = " AND ".join(f"k.{wh.quote(k)} = s.{wh.quote(k)}" for k in inputs.unique_key)
            wh.execute(f"DELETE FROM {table} s WHERE NOT EXISTS (SELECT 1 FROM {rows.name} k WHERE {same} "
                       "AND k._llmt_row_hash = s._llmt_row_hash)")
            # what is left staged is unchanged: every other row of the select is new or changed
            wh.insert_new(f"INSERT INTO {table} {keyed_select(wh, inputs, described, row_hash=True)} WHERE NOT EXISTS "
                          f"(SELECT 1 FROM {table} s WHERE "
                          + " AND ".join(f"s.{wh.quote(k)} = _llmt_select.{wh.quote(k)}" for k in inputs.unique_key)
                          + ")", where=inputs.where)
        finally:
            wh.drop_temp(rows)
    _record_stage(store, inputs, staged, layout, _fingerprint(wh, table))


def _record_stage(store: StateStore, inputs: Inputs, staged: dict[str, Any] | None, layout: str, rows: str) -> None:
    kept = {"shape": staged["shape"]} if staged and "shape" in staged and staged.get("layout") == layout else {}
    # (the output's shape stays valid while the layout does: the output is then updated in place)
    store.set_fingerprint("stage", inputs.node, {**kept, "layout": layout, "rows": rows,
                                                 "keys": inputs.key_version, "reads": inputs.reads})


def staged_fingerprint(wh: Warehouse, store: StateStore, node: str) -> dict[str, Any] | None:
    """What was recorded of a model's staged inputs (its layout, its rows' fingerprint, the version of its keys,
    and the output built from them: outputs.py); None when they are not staged."""
    staged = store.fingerprint("stage", node)
    if staged is None or wh.relation_kind(wh.state_schema, "input__" + node) != "table":
        return None
    return staged


def _check_keys(wh: Warehouse, table: str, inputs: Inputs) -> None:
    keys = ", ".join(wh.quote(k) for k in inputs.unique_key)
    nulls = int(wh.scalar(f"SELECT count(*) FROM {table} WHERE "
                          + " OR ".join(f"{wh.quote(k)} IS NULL" for k in inputs.unique_key)) or 0)
    if nulls:
        raise NodeError(
            f"{nulls} input row(s) of `{inputs.node}` have a NULL unique_key ({', '.join(inputs.unique_key)})",
            where=inputs.where, hint="Filter them out in the select or choose another unique_key.",
        )
    dupes = wh.fetchall(f"SELECT {keys}, count(*) AS n FROM {table} GROUP BY {keys} HAVING count(*) > 1 "
                        "ORDER BY n DESC LIMIT 5")
    if dupes:
        shown = "; ".join(
            ", ".join(f"{k}={v!r}" for k, v in zip(inputs.unique_key, row[:-1], strict=True)) + f" ({row[-1]} rows)"
            for row in dupes
        )
        raise NodeError(
            f"the unique_key of `{inputs.node}` is not unique in its input: {shown}",
            where=inputs.where,
            hint="Fix the select so each key appears once (or change unique_key). Nothing was written.",
        )


def _fingerprint(wh: Warehouse, table: str) -> str:
    """Order-independent fingerprint of a table's `_llmt_row_hash` values (count, sum and xor)."""
    row = wh.fetchone(f"SELECT count(*), {wh.sum_hashes_sql('_llmt_row_hash')} FROM {table}")
    return ":".join(str(v) for v in row) if row else ""


def attempts_summary_sql(wh: Warehouse, since_run: str | None, keys: str | None = None) -> str:
    """Per request key: failed attempts that count, whether one was final, and the last attempt (only of the
    keys in relation ``keys`` (column `_llmt_request_key`), when given)."""
    filters = [f"run_id = {wh.string(since_run)}"] if since_run else []
    if keys:
        filters.append(f"request_key IN (SELECT _llmt_request_key FROM {keys})")
    run_filter = f"WHERE {' AND '.join(filters)}" if filters else ""
    last = {c: wh.arg_max_sql(c, "created_at") for c in ("outcome", "status_code", "error_code", "detail")}
    return f"""
        SELECT request_key,
               count(CASE WHEN {USES_ATTEMPT_SQL} THEN 1 END) AS failures,
               count(*) AS attempts, bool_or({TERMINAL_SQL}) AS terminal,
               {last['outcome']} AS outcome, {last['status_code']} AS status_code,
               {last['error_code']} AS error_code, {last['detail']} AS detail,
               max(created_at) AS last_attempt_at
        FROM {wh.state_table('attempts')} {run_filter} GROUP BY request_key"""


def pending_keys(wh: Warehouse, source: str, max_attempts: int, since_run: str | None,
                 reask: bool = False) -> TempTable:
    """The request keys of ``source`` (a relation with `_llmt_request_key`) that have no answer, are not in
    flight and have attempts left, as a temporary table (column `_llmt_request_key`). With ``reask``, an answer
    counts only when this run (``since_run``) gave it.

    The keys without an answer are found first (an anti-join on the key alone), then attempts are summed up
    for those keys only, so that a run with nothing to send costs one anti-join however long the history of
    attempts."""
    # (whether a key has an answer: any row of the answers' log says so, on an engine that keeps one)
    answered = f"SELECT 1 FROM {wh.log_table('answers')} a WHERE a.request_key = i._llmt_request_key"
    if reask:
        life = wh.lifecycle
        ids = [str(r[0]) for r in life.fetchall(f"SELECT shard_id FROM {life.state_table('shards')} WHERE run_id = ?",
                                                [str(since_run)])]
        answered += f" AND a.shard_id IN ({', '.join(wh.string(i) for i in ids) or 'NULL'})"
    todo = wh.temp_table("_llmt_todo", f"SELECT DISTINCT i._llmt_request_key FROM {source} i WHERE NOT EXISTS "
                         f"({answered})")
    try:
        with shard_requests(wh, f"sh.status IN ({', '.join(wh.string(s) for s in OPEN)})") as inflight:
            return wh.temp_table("_llmt_pending", f"""
                WITH att AS ({attempts_summary_sql(wh, since_run, todo.name)})
                SELECT t._llmt_request_key FROM {todo.name} t LEFT JOIN att ON att.request_key = t._llmt_request_key
                WHERE NOT EXISTS (SELECT 1 FROM {inflight} f WHERE f.request_key = t._llmt_request_key)
                  AND coalesce(att.failures, 0) < {int(max_attempts)}
                  AND NOT coalesce(att.terminal, false)""")
    finally:
        wh.drop_temp(todo)


def pending_rows_sql(wh: Warehouse, source: str, columns: Sequence[str], keys: TempTable, staged: bool) -> str:
    """One row of ``source`` (its request key and ``columns``) per key of ``keys``; the input's columns are read
    for those keys only. ``staged``: ``source`` is a staged table (the engine may pick rows by their row ids)."""
    return wh.one_row_per_key_sql(source, [wh.quote(c) for c in columns], keys.name, staged)


def input_counts(wh: Warehouse, store: StateStore, source: str, node: str | None = None) -> tuple[int, int, int]:
    """(rows, rows already answered, rows without an answer that share their request with another).

    For a staged model (``node``) the counts are remembered with the stage and reused while neither the staged
    rows nor the stored answers changed (the output build remembers them too: see `with_input_counts`)."""
    staged = staged_fingerprint(wh, store, node) if node else None
    answers = _answers_stats(wh) if staged is not None else ()
    if staged is not None:
        cached = staged.get("counts")
        if isinstance(cached, dict) and cached.get("key") == _counts_key(staged, answers):
            rows, answered, dedup = cached["value"]
            return int(rows), int(answered), int(dedup)
    row = wh.fetchone(
        "SELECT count(*), count(a.request_key), "
        "count(CASE WHEN a.request_key IS NULL THEN 1 END) "
        "- count(DISTINCT CASE WHEN a.request_key IS NULL THEN i._llmt_request_key END) "
        f"FROM {source} i LEFT JOIN {wh.state_table('answers')} a ON a.request_key = i._llmt_request_key")
    assert row is not None
    counts = int(row[0]), int(row[1]), int(row[2])
    if staged is not None and node is not None:
        store.set_fingerprint("stage", node, with_input_counts(staged, counts, answers))
    return counts


def _answers_stats(wh: Warehouse) -> Sequence[Any]:
    """The stored answers' count and latest `answered_at` (of their log: it grows when they change)."""
    return wh.fetchone(f"SELECT count(*), max(answered_at) FROM {wh.log_table('answers')}") or ()


def with_input_counts(staged: dict[str, Any], counts: tuple[int, int, int], answers: Sequence[Any]) -> dict[str, Any]:
    """The stage's fingerprint ``staged`` with ``counts`` (what `input_counts` gives for its rows and the
    answers stored now, ``answers``: `_answers_stats`, read before the counts) remembered."""
    return {**staged, "counts": {"key": _counts_key(staged, answers), "value": list(counts)}}


def _counts_key(staged: dict[str, Any], answers: Sequence[Any]) -> str:
    """What input counts are valid for: the staged rows, and the stored answers (count, latest)."""
    return json.dumps([staged.get("layout"), staged.get("rows"), list(answers)], default=str)


def escalation_sql(wh: Warehouse, source: str, columns: Sequence[Column], key_sql: str, when: Sequence[str],
                   max_attempts: int, conditions: Sequence[str]) -> str:
    """A model's rows of ``source`` (staged, or keyed like staged rows; ``columns``: the select's) that go to its
    escalation model, keyed ``key_sql``:
    those whose request failed for good with an outcome of ``when``, and answered ones that meet one of
    ``conditions`` (SQL over the answer `a.answer`)."""
    outcomes = ", ".join(wh.string(o) for o in when) or "NULL"
    either = [f"(a.request_key IS NULL AND att.outcome IN ({outcomes}) "
              f"AND (att.terminal OR att.failures >= {int(max_attempts)}))", *conditions]
    cols = "".join(f"i.{wh.quote(c.name)}, " for c in columns)
    return f"""
        SELECT {cols}{key_sql} AS _llmt_request_key
        FROM {source} i
        LEFT JOIN {wh.state_table('answers')} a ON a.request_key = i._llmt_request_key
        LEFT JOIN ({attempts_summary_sql(wh, None)}) att ON att.request_key = i._llmt_request_key
        WHERE {" OR ".join(either)}"""
