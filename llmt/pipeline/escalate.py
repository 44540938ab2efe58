"""Cascades: rows the primary model failed in a chosen way, or answered with a field that says it
is unsure, are asked again with a stronger model. The escalated request has its own key (the model
is part of it); the output table prefers an escalated answer and records which model answered."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmt.cost import PriceTable
from llmt.errors import ConfigError
from llmt.pipeline.spec import LlmSpec, escalation_spec, send_mode
from llmt.warehouse.base import Column, Warehouse
from llmt.warehouse.staging import escalation_sql, pending_keys, request_key_sql

CONDITION = re.compile(r"^\s*(<=|>=|!=|<|>|=)\s*(.+?)\s*$")


def field_condition(wh: Warehouse, field: str, condition: str, where: str) -> str:
    """SQL for a `when_field` entry such as `confidence: "< 0.6"` over the answer JSON `a.answer`."""
    match = CONDITION.match(condition)
    if not match:
        raise ConfigError(
            f"escalate.when_field `{field}`: cannot read the condition {condition!r}", where=where,
            hint='Write an operator and a value, e.g. {confidence: "< 0.6"} or {label: "= unsure"}.',
        )
    op, value = match.groups()
    text = wh.json_text_sql("a.answer", field)
    try:
        number = float(value)
    except ValueError:
        return f"{text} {op} {wh.string(value.strip(chr(34) + chr(39)))}"
    return f"{wh.try_double_sql(text)} {op} {number!r}"


def eligible_sql(wh: Warehouse, source: str, columns: Sequence[Column], spec: LlmSpec, escalated: LlmSpec,
                 where: str) -> str:
    """The rows of ``source`` (staged, or keyed like staged rows; ``columns``: the select's) to escalate, with
    their escalated request key as `_llmt_request_key`."""
    esc = spec.execution.escalate
    assert esc is not None
    conditions = [f"(a.request_key IS NOT NULL AND {field_condition(wh, f, c, where)})"
                  for f, c in esc.when_field.items()]
    return escalation_sql(wh, source, columns, request_key_sql(
        wh, escalated.template_hash, [c for c in columns if c.name in set(spec.columns)], "i"),
        list(esc.when), spec.max_attempts, conditions)


@dataclass(frozen=True)
class EscalationBound:
    """The most a model's escalation may send and cost in one run."""

    model: str
    mode: str
    requests: int
    input_tokens: int
    output_tokens: int
    usd: float


def escalation_bound(prices: PriceTable, spec: LlmSpec, escalated: LlmSpec, rows: int, candidates: int,
                     largest: int, override: str | None = None) -> EscalationBound:
    """The rule: at most `max_share` of the model's ``rows`` are escalated (the cap `llmt run` applies, retries
    included), and no more than the ``candidates`` (the rows that may escalate: those without an answer, which
    may fail, and those that qualify already); each with as many input tokens as the largest of them
    (``largest``) and `max_output_tokens`; at the escalation model's price in its mode (``override``: --mode)."""
    esc = spec.execution.escalate
    assert esc is not None
    n = max(min(int(esc.max_share * rows), candidates), 0)
    mode = send_mode(escalated, n, override)
    out = n * int(escalated.params["max_output_tokens"])
    return EscalationBound(escalated.model, mode, n, n * largest, out,
                           prices.estimate(escalated.model, requests=n, prompt=n * largest, completion=out,
                                           batch=mode == "batch"))


def escalation_reserve(
    wh: Warehouse, source: str, columns: Sequence[Column], prices: PriceTable, spec: LlmSpec, rows: int,
    pending: int, too_long: list[tuple[str, int]], override: str | None, where: str,
) -> Callable[[int], EscalationBound] | None:
    """`escalation_bound` of a model with an escalation (else None) over the rows of ``source`` (staged, or keyed
    like staged rows; ``columns``: the select's), as a function of its largest pending request: its ``pending``
    requests may fail,
    rows may qualify already, and requests too long for it (``too_long``) may go on, with `when: [too_long]`,
    when the escalation model takes them. ``where``: the model's file (for errors in `when_field`)."""
    escalated = escalation_spec(spec)
    esc = spec.execution.escalate
    if escalated is None or esc is None:
        return None
    qualified, billed = _qualified_now(wh, source, columns, spec, escalated, where)
    limit = prices.price(escalated.model).limits(int(escalated.params["max_output_tokens"])).limit
    movable = [n for _, n in too_long if "too_long" in esc.when and (limit is None or n <= limit)]
    return lambda largest: escalation_bound(prices, spec, escalated, rows, pending + len(movable) + qualified,
                                            max(largest, billed, *movable), override)


def _qualified_now(wh: Warehouse, source: str, columns: Sequence[Column], spec: LlmSpec, escalated: LlmSpec,
                   where: str) -> tuple[int, int]:
    """(requests that qualify for escalation now and are not escalated yet, the most input tokens the model
    was billed for a request of this node: what each of them may carry)."""
    keys = pending_keys(wh, f"({eligible_sql(wh, source, columns, spec, escalated, where)})", escalated.max_attempts,
                        None)
    wh.drop_temp(keys)
    largest = wh.scalar(f"SELECT coalesce(max(prompt_tokens), 0) FROM {wh.state_table('attempts')} "
                        "WHERE node = ? AND model = ?", [spec.node, spec.model])
    return keys.rows, int(largest or 0)
