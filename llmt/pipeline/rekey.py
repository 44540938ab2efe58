"""Upgrades of the request key: the answers a model's rows had under an older version of the key are copied
under their current keys, once per model, just before its table staged with the older version is staged
again (in the same transaction).

Each staged row's request is keyed as the older version keyed it, from the row's staged input columns and the
model's current spec (for each provider kind, when that version had the kind in its key). An answer stored
under that key is the answer to exactly that request (keys address content), and it is copied — text, usage,
shard and time — under the row's current key for the kind of provider that gave it. Both kinds are done, not
only the target's: before version 2 the targets of a project shared their answers (and usually their
database), and the other target must find its own answers too.

Version 1 did not record which provider gave an answer sent in realtime (`_llmt.answers.provider` is NULL).
Such an answer is the fake provider's when it is the synthetic answer that provider gives for that request
(it depends on the request body only: providers/synth.py), or an answer pinned by the fixtures of one of the
project's fake targets; otherwise a real provider's. The realtime shards whose answers are all decided one way
get that kind on all their attempts too, so that `llmt status` can tell simulated spend from real.

Attempts are not carried: a re-keyed row that has an answer needs none, and a row that failed under the older
key (no answer) is pending again and asked once more."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import duckdb

from llmt.compile import quote, sql_string
from llmt.errors import NodeError
from llmt.pipeline.spec import KEY_VERSION, KEY_VERSIONS, PROVIDER_KINDS, KeyVersion, LlmSpec, key_sql
from llmt.pipeline.stage import OPEN_STATUSES, stage_fingerprint, stage_table, staged_key_version
from llmt.project import Node, Project
from llmt.prompts import PromptRenderer
from llmt.providers.synth import request_seed, synth_answer

REKEY = "_llmt_rekey"  # temp table: staged rows whose older key has an answer, with their current keys


def upgrade_keys(conn: duckdb.DuckDBPyConnection, state: str, model: Node, specs: Sequence[LlmSpec | None],
                 pinned: Callable[[], list[Any]]) -> int:
    """Copy the answers of ``model``'s staged rows under their current keys, when it was staged with an
    older version of the key, for each of ``specs`` (the model's, and its escalation's); ``pinned`` gives the
    answers pinned by the project's fake targets. Returns how many answers were copied. Raises NodeError when
    batches sent with the older keys are still open (their answers would come back under those keys after the
    re-key). Caller holds the transaction."""
    node = model.name
    staged = stage_fingerprint(conn, state, node)
    versions = {v.name: v for v in KEY_VERSIONS}
    if staged is None or staged_key_version(staged) == KEY_VERSION or staged_key_version(staged) not in versions:
        return 0
    old = versions[staged_key_version(staged)]
    s = quote(state)
    open_shards = conn.execute(f"SELECT provider, count(*) FROM {s}.shards WHERE node = ? AND status IN "
                               f"{OPEN_STATUSES} GROUP BY ALL ORDER BY 1", [node]).fetchall()
    if open_shards:
        held = ", ".join(f"{n} of provider {p}" for p, n in open_shards)
        raise NodeError(
            f"`{node}` still has batches sent by an earlier llmt ({held}): their answers come back under the "
            f"earlier request keys, so they are collected before this llmt re-keys the model's stored answers",
            where=model.rel_path,
            hint=f"Run `llmt run -s {node}` with the target that sent them (and without --no-wait), or "
            f"`llmt cancel -s {node}` with that target; then run again.",
        )
    table = stage_table(state, node)
    staged_columns = {str(r[0]) for r in conn.execute(f"DESCRIBE {table}").fetchall()}
    copied = 0
    for spec in specs:
        if spec is not None and set(spec.columns) <= staged_columns:  # else no staged row is one of its requests
            copied += _rekey(conn, s, table, spec, old, pinned)
    return copied


def fake_answers(project: Project) -> list[Any]:
    """The answers pinned by the fixtures of the project's fake targets (those whose file is there)."""
    from llmt.providers.fake import load_pins

    answers: list[Any] = []
    for target in project.config.targets.values():
        fixtures = target.provider.options().get("fixtures") if target.provider.type == "fake" else None
        if fixtures and (project.dir / str(fixtures)).is_file():
            answers += [pin.answer for pin in load_pins(project.dir / str(fixtures))]
    return answers


def _rekey(conn: duckdb.DuckDBPyConnection, s: str, table: str, spec: LlmSpec, old: KeyVersion,
           pinned: Callable[[], list[Any]]) -> int:
    """Copy the answers of ``table``'s rows under key version ``old`` of ``spec`` to their current keys."""
    new = KEY_VERSIONS[-1]
    old_hash, new_hash = old.input_hash_sql(spec, "i"), new.input_hash_sql(spec, "i")
    kinds = ", ".join(f"({sql_string(k)}, '{old.template_hash(spec, k)}', '{new.template_hash(spec, k)}')"
                      for k in PROVIDER_KINDS)
    # the input hash is computed once per row when both versions compute it alike
    new_input = "old_input" if new_hash == old_hash else "new_input"
    extra = "" if new_hash == old_hash else f", {new_hash} AS new_input"
    conn.execute(f"""CREATE OR REPLACE TEMP TABLE {REKEY} AS
        WITH h AS (SELECT i.rowid AS row_id, {old_hash} AS old_input{extra} FROM {table} i),
        k AS (SELECT h.*, v.kind, v.new_template, {key_sql('v.old_template', 'h.old_input')} AS old_key
              FROM h CROSS JOIN (VALUES {kinds}) v(kind, old_template, new_template))
        SELECT k.row_id, k.kind, k.old_key, {key_sql('k.new_template', 'k.' + new_input)} AS new_key,
               a.provider
        FROM k JOIN {s}.answers a ON a.request_key = k.old_key
        WHERE a.provider IS NULL OR a.provider = k.kind""")
    try:
        _decide_unknown(conn, s, table, spec, pinned)
        inserted = conn.execute(f"""INSERT INTO {s}.answers
            SELECT r.new_key, a.answer, a.model, a.node, a.shard_id, a.answered_at, a.prompt_tokens,
                   a.completion_tokens, a.cached_tokens, r.kind
            FROM (SELECT DISTINCT new_key, old_key, kind FROM {REKEY} WHERE provider = kind) r
            JOIN {s}.answers a ON a.request_key = r.old_key
            WHERE NOT EXISTS (SELECT 1 FROM {s}.answers b WHERE b.request_key = r.new_key)""").fetchone()
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {REKEY}")
    return int(inserted[0]) if inserted else 0


def _decide_unknown(conn: duckdb.DuckDBPyConnection, s: str, table: str, spec: LlmSpec,
                    pinned: Callable[[], list[Any]]) -> None:
    """Decide the kind of provider of the answers in REKEY whose provider is not known (fake: the synthetic
    answer of its request, or a pinned one), and record it with the answers, in REKEY, and on the attempts of
    the shards whose answers were all decided alike."""
    columns = ", ".join(f"i.{quote(c)}" for c in spec.columns)
    rows = conn.execute(f"""
        SELECT u.old_key, a.answer{', ' + columns if columns else ''}
        FROM (SELECT old_key, min(row_id) AS row_id FROM {REKEY} WHERE provider IS NULL GROUP BY old_key) u
        JOIN {table} i ON i.rowid = u.row_id JOIN {s}.answers a ON a.request_key = u.old_key""").fetchall()
    if not rows:
        return
    renderer, pins = PromptRenderer(spec.prompt), pinned()
    kinds: list[str] = []
    for _key, answer, *values in rows:
        body = {**spec.body_base(), "messages": renderer.messages(dict(zip(spec.columns, values, strict=True)))}
        try:
            given = json.loads(answer)
        except ValueError:
            given = None
        fake = given == synth_answer(spec.strict_schema, request_seed(body)) or given in pins
        kinds.append("fake" if fake else "openai")
    conn.execute("CREATE OR REPLACE TEMP TABLE _llmt_decided AS SELECT unnest(?::VARCHAR[]) AS old_key, "
                 "unnest(?::VARCHAR[]) AS kind", [[r[0] for r in rows], kinds])
    conn.execute(f"UPDATE {REKEY} SET provider = d.kind FROM _llmt_decided d "
                 f"WHERE {REKEY}.old_key = d.old_key AND {REKEY}.provider IS NULL")
    conn.execute(f"UPDATE {s}.answers SET provider = d.kind FROM _llmt_decided d "
                 "WHERE answers.request_key = d.old_key AND answers.provider IS NULL")
    conn.execute(f"""UPDATE {s}.attempts SET provider = d.kind FROM (
            SELECT a.shard_id, min(d.kind) AS kind FROM _llmt_decided d JOIN {s}.answers a ON a.request_key = d.old_key
            GROUP BY a.shard_id HAVING count(DISTINCT d.kind) = 1) d
        WHERE attempts.shard_id = d.shard_id AND attempts.provider IS NULL""")
    conn.execute("DROP TABLE _llmt_decided")
