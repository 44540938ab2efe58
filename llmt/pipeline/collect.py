"""Collect a finished batch: classify every result line into an outcome, reconcile every
submitted id, and store attempts and answers in one transaction.

Outcomes: ok, refused, truncated, content_filter, invalid_json, schema_violation,
http_error (status and code), expired, cancelled, batch_failed, missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from llmt.compile import quote
from llmt.pipeline.crash import crash_point
from llmt.schema import AnswerValidator

# a batch that ended this way leaves its unanswered ids with this outcome
UNANSWERED = {"completed": "missing", "expired": "expired", "cancelled": "cancelled", "failed": "batch_failed"}
OUTCOMES = (
    "ok", "refused", "truncated", "content_filter", "invalid_json", "schema_violation",
    "http_error", "expired", "cancelled", "batch_failed", "missing",
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
    """One batch output/error line -> an Attempt. Never trusts line order."""
    key = str(line.get("custom_id"))
    error = line.get("error")
    response = line.get("response") or {}
    if error and not response:
        code = str(error.get("code") or "")
        outcome = {"batch_expired": "expired", "batch_cancelled": "cancelled"}.get(code, "http_error")
        return Attempt(key, outcome, error_code=code, detail=str(error.get("message") or "")[:500])
    status = int(response.get("status_code") or 0)
    body = response.get("body") or {}
    if status != 200:
        err = body.get("error") or {}
        return Attempt(
            key, "http_error", status_code=status, error_code=str(err.get("code") or err.get("type") or ""),
            detail=str(err.get("message") or "")[:500],
        )
    usage = body.get("usage") or {}
    att = Attempt(
        key, "ok", status_code=status,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
    )
    choices = body.get("choices") or []
    if not choices:
        att.outcome, att.detail = "invalid_json", "the response has no choices"
        return att
    choice = choices[0]
    message = choice.get("message") or {}
    finish = choice.get("finish_reason")
    if message.get("refusal"):
        att.outcome, att.detail = "refused", str(message["refusal"])[:500]
    elif finish == "length":
        att.outcome, att.detail = "truncated", "finish_reason=length: raise max_output_tokens"
    elif finish == "content_filter":
        att.outcome, att.detail = "content_filter", "finish_reason=content_filter"
    else:
        content = message.get("content")
        if not isinstance(content, str):
            att.outcome, att.detail = "invalid_json", "the message has no content"
        else:
            outcome, reason = validator.check(content)
            att.outcome = outcome
            if outcome == "ok":
                att.answer = content
            else:
                att.detail = reason[:500]
    return att


def read_results(paths: Iterable[Path], validator: AnswerValidator) -> dict[str, Attempt]:
    """Classify every line of the output and error files, keyed by custom_id."""
    seen: dict[str, Attempt] = {}
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            for raw in handle:
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except json.JSONDecodeError:
                    continue  # an unreadable result line: its id stays unanswered and is reconciled
                attempt = classify(line, validator)
                previous = seen.get(attempt.request_key)
                if previous is None or (previous.outcome != "ok" and attempt.outcome == "ok"):
                    seen[attempt.request_key] = attempt
    return seen


def reconcile(
    submitted: list[str], seen: dict[str, Attempt], batch_status: str, batch_error: str | None
) -> list[Attempt]:
    """Exactly one attempt per submitted id; ids nobody asked for are ignored."""
    outcome = UNANSWERED.get(batch_status, "missing")
    out = []
    for key in submitted:
        attempt = seen.get(key)
        if attempt is None:
            attempt = Attempt(key, outcome, error_code=batch_error if outcome == "batch_failed" else None,
                              detail=f"no result line (batch {batch_status})")
        out.append(attempt)
    return out


def store(
    conn: duckdb.DuckDBPyConnection,
    state: str,
    *,
    attempts: list[Attempt],
    shard_id: str,
    run_id: str,
    node: str,
    model: str,
    batch: bool,
    replace: bool = False,
) -> None:
    """Insert attempts and new answers (idempotent on shard and key). Caller holds the transaction."""
    s = quote(state)
    cols: dict[str, list[Any]] = {
        "request_key": [a.request_key for a in attempts],
        "outcome": [a.outcome for a in attempts],
        "answer": [a.answer for a in attempts],
        "status_code": [a.status_code for a in attempts],
        "error_code": [a.error_code for a in attempts],
        "detail": [a.detail for a in attempts],
        "prompt_tokens": [a.prompt_tokens for a in attempts],
        "completion_tokens": [a.completion_tokens for a in attempts],
        "cached_tokens": [a.cached_tokens for a in attempts],
        "cost_usd": [a.cost_usd for a in attempts],
    }
    if not attempts:
        return
    unnest = ", ".join(f"unnest(?::{_type(name)}[]) AS {name}" for name in cols)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _llmt_collected AS SELECT {unnest}", list(cols.values()))
    conn.execute(
        f"""INSERT INTO {s}.attempts
        SELECT ?, c.request_key, ?, ?, ?, c.outcome, c.status_code, c.error_code, c.detail,
               c.prompt_tokens, c.completion_tokens, c.cached_tokens, now(), c.cost_usd, ?
        FROM _llmt_collected c
        WHERE NOT EXISTS (SELECT 1 FROM {s}.attempts a WHERE a.shard_id = ? AND a.request_key = c.request_key)""",
        [shard_id, run_id, node, model, batch, shard_id],
    )
    crash_point("mid_store")
    conn.execute(
        f"""INSERT INTO {s}.answers
        SELECT c.request_key, c.answer, ?, ?, ?, now(), c.prompt_tokens, c.completion_tokens, c.cached_tokens
        FROM _llmt_collected c WHERE c.outcome = 'ok'
        ON CONFLICT DO {"UPDATE SET answer = excluded.answer, model = excluded.model, node = excluded.node, "
                        "shard_id = excluded.shard_id, answered_at = excluded.answered_at, "
                        "prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens, "
                        "cached_tokens = excluded.cached_tokens" if replace else "NOTHING"}""",
        [model, node, shard_id],
    )
    conn.execute("DROP TABLE _llmt_collected")


def _type(name: str) -> str:
    if name.endswith("tokens"):
        return "BIGINT"
    if name == "cost_usd":
        return "DOUBLE"
    return "INTEGER" if name == "status_code" else "VARCHAR"
