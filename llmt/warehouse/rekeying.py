"""The SQL of an upgrade of the request key (pipeline/rekey.py): each staged row's request keyed as an older
version keyed it and as the current version does, and the answers stored under the older keys copied under the
current ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmt.warehouse.base import TempTable, Warehouse


def rekey_rows(wh: Warehouse, table: str, unique_key: Sequence[str], old_input: str, new_input: str,
               kinds: Sequence[tuple[str, str, str]]) -> TempTable:
    """The staged rows of ``table`` whose older key has a stored answer of a kind of provider that may have given
    it (``kinds``: each kind with its older and its current template hash; `old_input`/`new_input`: SQL of a
    row `i`'s input hash in each version): their unique key, kind, older key, current key and the answer's
    recorded provider (NULL: not known)."""
    answers = wh.state_table("answers")
    keys = ", ".join(f"i.{wh.quote(k)}" for k in unique_key)
    values = ", ".join(f"({wh.string(k)}, {wh.string(old)}, {wh.string(new)})" for k, old, new in kinds)
    # the input hash is computed once per row when both versions compute it alike
    new_hash, extra = ("h.old_input", "") if new_input == old_input else ("h.new_input", f", {new_input} AS new_input")
    return wh.temp_table("_llmt_rekey", f"""
        WITH h AS (SELECT {keys}, {old_input} AS old_input{extra} FROM {table} i),
        k AS (SELECT h.*, v.kind, v.new_template, {wh.request_key_sql('v.old_template', 'h.old_input')} AS old_key,
                     {wh.request_key_sql('v.new_template', new_hash)} AS new_key
              FROM h CROSS JOIN (VALUES {values}) AS v(kind, old_template, new_template))
        SELECT k.*, a.provider FROM k JOIN {answers} a ON a.request_key = k.old_key
        WHERE a.provider IS NULL OR a.provider = k.kind""")


def unknown_answers(wh: Warehouse, rekey: TempTable, table: str, unique_key: Sequence[str],
                    columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """(older key, answer, the values of ``columns``) of one staged row per older key whose answer's provider
    is not known."""
    cols = "".join(f", i.{wh.quote(c)}" for c in columns)
    same = " AND ".join(f"i.{wh.quote(k)} = r.{wh.quote(k)}" for k in unique_key)
    order = ", ".join(f"r.{wh.quote(k)}" for k in unique_key)
    return wh.fetchall(f"""
        SELECT r.old_key, a.answer{cols}
        FROM (SELECT r.*, row_number() OVER (PARTITION BY r.old_key ORDER BY {order}) AS n
              FROM {rekey.name} r WHERE r.provider IS NULL) r
        JOIN {table} i ON {same}
        JOIN {wh.state_table('answers')} a ON a.request_key = r.old_key
        WHERE r.n = 1""")


def record_provenance(wh: Warehouse, rekey: TempTable, decided: Sequence[tuple[str, str]]) -> None:
    """Record the kind of provider decided for answers of unknown provenance (older key, kind): in ``rekey``,
    on the answers, and on the attempts of the shards whose answers were all decided alike."""
    if not decided:
        return
    answers, attempts = wh.state_table("answers"), wh.state_table("attempts")
    table = wh.temp_rows("_llmt_decided", {"old_key": [k for k, _ in decided], "kind": [v for _, v in decided]},
                         {"old_key": "VARCHAR", "kind": "VARCHAR"})
    wh.execute(f"UPDATE {rekey.name} SET provider = d.kind FROM {table.name} d "
               f"WHERE {rekey.name}.old_key = d.old_key AND {rekey.name}.provider IS NULL")
    wh.execute(f"UPDATE {answers} SET provider = d.kind FROM {table.name} d "
               f"WHERE {answers}.request_key = d.old_key AND {answers}.provider IS NULL")
    wh.execute(f"""UPDATE {attempts} SET provider = d.kind FROM (
            SELECT a.shard_id, min(d.kind) AS kind FROM {table.name} d JOIN {answers} a ON a.request_key = d.old_key
            GROUP BY a.shard_id HAVING count(DISTINCT d.kind) = 1) d
        WHERE {attempts}.shard_id = d.shard_id AND {attempts}.provider IS NULL""")
    wh.drop_temp(table)


def copy_answers(wh: Warehouse, rekey: TempTable) -> int:
    """Copy each answer whose provider gave it for the kind its row was keyed for, under the row's current key
    (when that key has none yet); returns how many were copied."""
    answers = wh.state_table("answers")
    before = int(wh.scalar(f"SELECT count(*) FROM {answers}") or 0)
    wh.insert_new(f"""INSERT INTO {answers}
        SELECT r.new_key, a.answer, a.model, a.node, a.shard_id, a.answered_at, a.prompt_tokens,
               a.completion_tokens, a.cached_tokens, r.kind
        FROM (SELECT DISTINCT new_key, old_key, kind FROM {rekey.name} WHERE provider = kind) r
        JOIN {answers} a ON a.request_key = r.old_key
        WHERE NOT EXISTS (SELECT 1 FROM {answers} b WHERE b.request_key = r.new_key)""")
    return int(wh.scalar(f"SELECT count(*) FROM {answers}") or 0) - before
