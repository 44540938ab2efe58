"""Upgrades of the request key: the answers a model's rows had under an older version of the key are copied
under their current keys, once per model, just before its table staged with the older version is staged
again (in the same transaction). The SQL: warehouse/rekeying.py.

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

from llmt.errors import NodeError
from llmt.pipeline.context import ModelPlace
from llmt.pipeline.spec import KEY_VERSION, KEY_VERSIONS, PROVIDER_KINDS, KeyVersion, LlmSpec
from llmt.project import Project
from llmt.prompts import PromptRenderer
from llmt.warehouse.base import Column, TempTable, Warehouse
from llmt.warehouse.rekeying import copy_answers, record_provenance, rekey_rows, unknown_answers
from llmt.warehouse.staging import stage_table, staged_fingerprint
from llmt.warehouse.store import StateStore


def upgrade_keys(wh: Warehouse, store: StateStore, place: ModelPlace, specs: Sequence[LlmSpec | None],
                 pinned: Callable[[], list[Any]]) -> int:
    """Copy the answers of the model's staged rows under their current keys, when it was staged with an
    older version of the key, for each of ``specs`` (the model's, and its escalation's); ``pinned`` gives the
    answers pinned by the project's fake targets. Returns how many answers were copied. Raises NodeError when
    batches sent with the older keys are still open (their answers would come back under those keys after the
    re-key). Caller holds the transaction."""
    node = place.name
    staged = staged_fingerprint(wh, store, node)
    versions = {v.name: v for v in KEY_VERSIONS}
    version = str(staged.get("keys", KEY_VERSIONS[0].name)) if staged is not None else KEY_VERSION
    if version == KEY_VERSION or version not in versions:
        return 0
    held = store.open_by_provider(node)
    if held:
        raise NodeError(
            f"`{node}` still has batches sent by an earlier llmt "
            f"({', '.join(f'{n} of provider {p}' for p, n in held)}): "
            "their answers come back under the earlier request keys, so they are collected before this llmt "
            "re-keys the model's stored answers",
            where=place.where,
            hint=f"Run `llmt run -s {node}` with the target that sent them (and without --no-wait), or "
            f"`llmt cancel -s {node}` with that target; then run again.",
        )
    table = stage_table(wh, node)
    staged_columns = wh.describe(f"SELECT * FROM {table}")
    names = {c.name for c in staged_columns}
    return sum(_rekey(wh, table, spec, versions[version], staged_columns, pinned) for spec in specs
               if spec is not None and set(spec.columns) <= names)  # else no staged row is one of its requests


def fake_answers(project: Project) -> list[Any]:
    """The answers pinned by the fixtures of the project's fake targets (those whose file is there)."""
    from llmt.providers.fake import load_pins

    answers: list[Any] = []
    for target in project.config.targets.values():
        fixtures = target.provider.options().get("fixtures") if target.provider.type == "fake" else None
        if fixtures and (project.dir / str(fixtures)).is_file():
            answers += [pin.answer for pin in load_pins(project.dir / str(fixtures))]
    return answers


def _input_sql(wh: Warehouse, version: KeyVersion, columns: Sequence[Column], referenced: Sequence[str]) -> str:
    used = [c for c in columns if c.name in set(referenced)]
    if version.canonical:
        return wh.input_hash_sql(used, "i")
    return wh.legacy_input_hash_sql(sorted(c.name for c in used), "i")


def _rekey(wh: Warehouse, table: str, spec: LlmSpec, old: KeyVersion, columns: Sequence[Column],
           pinned: Callable[[], list[Any]]) -> int:
    """Copy the answers of ``table``'s rows under key version ``old`` of ``spec`` to their current keys."""
    new = KEY_VERSIONS[-1]
    kinds = [(k, old.template_hash(spec, k), new.template_hash(spec, k)) for k in PROVIDER_KINDS]
    rekey = rekey_rows(wh, table, spec.unique_key, _input_sql(wh, old, columns, spec.columns),
                       _input_sql(wh, new, columns, spec.columns), kinds)
    try:
        _decide_unknown(wh, rekey, table, spec, pinned)
        return copy_answers(wh, rekey)
    finally:
        wh.drop_temp(rekey)


def _decide_unknown(wh: Warehouse, rekey: TempTable, table: str, spec: LlmSpec,
                    pinned: Callable[[], list[Any]]) -> None:
    """Decide the kind of provider of the answers whose provider is not known (fake: the synthetic answer of its
    request, or a pinned one), and record it."""
    rows = unknown_answers(wh, rekey, table, spec.unique_key, spec.columns)
    if not rows:
        return
    from llmt.providers.synth import request_seed, synth_answer  # (here: answers of older llmt are rare)

    renderer, pins = PromptRenderer(spec.prompt), pinned()
    decided: list[tuple[str, str]] = []
    for key, answer, *values in rows:
        body = {**spec.body_base(), "messages": renderer.messages(dict(zip(spec.columns, values, strict=True)))}
        try:
            given = json.loads(answer)
        except ValueError:
            given = None
        fake = given == synth_answer(spec.strict_schema, request_seed(body)) or given in pins
        decided.append((str(key), "fake" if fake else "openai"))
    record_provenance(wh, rekey, decided)
