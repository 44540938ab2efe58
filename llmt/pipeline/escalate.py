"""Cascades: rows the primary model failed in a chosen way, or answered with a field that says it
is unsure, are asked again with a stronger model. The escalated request has its own key (the model
is part of it); the output table prefers an escalated answer and records which model answered."""

from __future__ import annotations

import re

from llmt.compile import quote, sql_string
from llmt.errors import ConfigError
from llmt.pipeline.spec import LlmSpec
from llmt.pipeline.stage import attempts_summary_sql

CONDITION = re.compile(r"^\s*(<=|>=|!=|<|>|=)\s*(.+?)\s*$")


def field_condition(field: str, condition: str, where: str) -> str:
    """SQL for a `when_field` entry such as `confidence: "< 0.6"` over the answer JSON `a.answer`."""
    match = CONDITION.match(condition)
    if not match:
        raise ConfigError(
            f"escalate.when_field `{field}`: cannot read the condition {condition!r}", where=where,
            hint='Write an operator and a value, e.g. {confidence: "< 0.6"} or {label: "= unsure"}.',
        )
    op, value = match.groups()
    path = sql_string("$." + field)
    try:
        number = float(value)
    except ValueError:
        return f"json_extract_string(a.answer, {path}) {op} {sql_string(value.strip(chr(34) + chr(39)))}"
    return f"TRY_CAST(json_extract_string(a.answer, {path}) AS DOUBLE) {op} {number!r}"


def eligible_sql(state: str, stage: str, spec: LlmSpec, escalated: LlmSpec, where: str) -> str:
    """Staged rows to escalate, with their escalated request key as `_llmt_request_key`."""
    esc = spec.execution.escalate
    assert esc is not None
    outcomes = ", ".join(sql_string(o) for o in esc.when) or "NULL"
    conditions = [
        f"(a.request_key IS NULL AND att.outcome IN ({outcomes}) "
        f"AND (att.terminal OR att.failures >= {spec.max_attempts}))"
    ]
    conditions += [f"(a.request_key IS NOT NULL AND {field_condition(f, c, where)})"
                   for f, c in esc.when_field.items()]
    return f"""(
        SELECT i.* EXCLUDE (_llmt_request_key), {escalated.request_key_sql("i")} AS _llmt_request_key
        FROM {stage} i
        LEFT JOIN {quote(state)}.answers a ON a.request_key = i._llmt_request_key
        LEFT JOIN ({attempts_summary_sql(state, None)}) att ON att.request_key = i._llmt_request_key
        WHERE {" OR ".join(conditions)})"""
