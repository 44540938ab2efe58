"""Stage an LLM model's inputs: check the select's columns against the prompt and the schema, then stage its
rows with their request keys (the SQL: warehouse/staging.py)."""

from __future__ import annotations

from llmt.pipeline.context import ModelPlace
from llmt.pipeline.spec import KEY_VERSION, LlmSpec, check_columns
from llmt.warehouse.base import Column, Warehouse
from llmt.warehouse.staging import Inputs, stage
from llmt.warehouse.store import StateStore


def inputs_of(spec: LlmSpec, place: ModelPlace) -> Inputs:
    """What is staged for ``spec``'s requests over the model's select."""
    return Inputs(place.name, place.select.strip().rstrip(";"), spec.columns, spec.unique_key, spec.template_hash,
                  KEY_VERSION, place.where, place.reads)


def stage_inputs(wh: Warehouse, store: StateStore, place: ModelPlace, spec: LlmSpec) -> list[Column]:
    """(Re)stage the select's rows with their request keys; returns the select's columns. Raises NodeError (and
    the caller's transaction rolls back) on duplicate or NULL keys."""
    inputs = inputs_of(spec, place)
    described = wh.describe(inputs.select, where=place.where)
    check_columns(place.name, place.where, spec.prompt, set(spec.columns), spec.unique_key,
                  [c.name for c in described], spec.output_columns)
    stage(wh, store, inputs, described)
    return described
