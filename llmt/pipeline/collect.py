"""Collect a finished batch: classify every result line into an outcome, reconcile every
submitted id, and store attempts and answers in one transaction.

Outcomes: ok, refused, truncated, content_filter, invalid_json, schema_violation,
http_error (status and code), expired, cancelled, batch_failed, missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from llmt.validate import AnswerValidator
from llmt.warehouse.base import Warehouse
from llmt.warehouse.collecting import (
    ATTEMPT_TYPES,
    Finished,
    Source,
    collect_result_files,
    store_attempts,
)


@dataclass
class Attempt:
    request_key: str
    outcome: str
    answer: str | None = None
    status_code: int | None = None
    error_code: str | None = None
    detail: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0


def classify(line: dict[str, Any], validator: AnswerValidator) -> Attempt:
    """One batch output/error line -> an Attempt (the realtime path). `collect_files` does the same to whole files
    in SQL: tests/test_collect_sql.py checks that the two agree. A field of another type than the Batch API's
    reads as missing, as there."""
    key = str(line.get("custom_id"))
    response = line.get("response")
    status = response.get("status_code") if isinstance(response, dict) else None
    if status != 200 or not isinstance(status, int):
        a = failed(line, key)
        if a is not None:  # (always: failed() reads the same status)
            return a
    body = response.get("body") if isinstance(response, dict) else None
    if not isinstance(body, dict):
        body = {}
    usage = body.get("usage")
    if isinstance(usage, dict):
        details = usage.get("prompt_tokens_details")
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    else:
        prompt = completion = cached = 0
    tokens = {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": cached}
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return Attempt(key, "invalid_json", None, 200, None, "the response has no choices", **tokens)
    choice = choices[0]
    if not isinstance(choice, dict):
        choice = {}
    message = choice.get("message")
    if not isinstance(message, dict):
        message = {}
    finish = choice.get("finish_reason")
    refusal = message.get("refusal")
    if refusal:
        return Attempt(key, "refused", None, 200, None, str(refusal)[:500], **tokens)
    if finish == "length":
        return Attempt(key, "truncated", None, 200, None, "finish_reason=length: raise max_output_tokens", **tokens)
    if finish == "content_filter":
        return Attempt(key, "content_filter", None, 200, None, "finish_reason=content_filter", **tokens)
    content = message.get("content")
    if not isinstance(content, str):
        return Attempt(key, "invalid_json", None, 200, None, "the message has no content", **tokens)
    outcome, reason = validator.check(content)
    if outcome == "ok":
        return Attempt(key, "ok", content, 200, None, None, **tokens)
    return Attempt(key, outcome, None, 200, None, reason[:500], **tokens)


def failed(line: dict[str, Any], key: str) -> Attempt | None:
    """The attempt of a result line (for ``key``) that got no answer (an `error`) or an HTTP error; None when its
    response is a 200, whatever the endpoint."""
    error = _object(line.get("error"))
    response = _object(line.get("response"))
    if error and not response:
        code = str(error.get("code") or "")
        outcome = {"batch_expired": "expired", "batch_cancelled": "cancelled"}.get(code, "http_error")
        return Attempt(key, outcome, error_code=code, detail=str(error.get("message") or "")[:500])
    status = response.get("status_code")
    status = status if isinstance(status, int) else 0
    if status != 200:
        err = _object(_object(response.get("body")).get("error"))
        return Attempt(
            key, "http_error", status_code=status, error_code=str(err.get("code") or err.get("type") or ""),
            detail=str(err.get("message") or "")[:500],
        )
    return None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def collect_files(wh: Warehouse, *, finished: list[Finished], validator: AnswerValidator, source: Source,
                  cost: tuple[str, list[float]], replace: bool = False) -> dict[str, int]:
    """Classify, validate, reconcile, price and store the result files of ended batches of one model (in the
    caller's transaction); returns outcome counts. DuckDB reads and classifies the files in SQL
    (tests/test_collect_sql.py checks that this agrees with `classify`). On Spark they are reconciled in the
    state store, which knows the shards' requests, and appended to Spark's logs."""
    life = wh.lifecycle
    return collect_result_files(life, finished=finished, invalid=partial(_invalid_answers, validator),
                                source=source, cost=cost, replace=replace, into=None if life is wh else wh)


def store(wh: Warehouse, attempts: list[Attempt], shard_id: str, source: Source, replace: bool = False) -> None:
    """Insert attempts and new answers (idempotent on shard and key). Caller holds the transaction."""
    store_attempts(wh, {
        "shard_id": [shard_id] * len(attempts),
        **{name: [getattr(a, name) for a in attempts] for name in ATTEMPT_TYPES if name != "shard_id"},
    }, source, replace)


def _invalid_answers(validator: AnswerValidator, answers: list[str]) -> list[list[str]]:
    """The answers that fail ``validator``, their outcomes and reasons (three lists)."""
    invalid: list[list[str]] = [[], [], []]
    for content in answers:
        outcome, reason = validator.check(content)
        if outcome != "ok":
            for column, value in zip(invalid, (content, outcome, reason[:500]), strict=True):
                column.append(value)
    return invalid
