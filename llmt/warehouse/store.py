"""The state store: llmt's state tables (state.py) behind named operations, so that the pipeline records and
reads its runs, shards, attempts, answers and fingerprints without writing SQL.

Every write that must be durable before a remote side effect (a shard before its upload, a file id before its
batch is created, ...) is one of these operations, committed when it returns unless the caller holds a
transaction (then with it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from llmt.warehouse.base import Warehouse

OPEN = ("written", "uploaded", "submitted")  # shard statuses of work not collected yet
MOVE_ROWS = 50_000  # rows moved from the state store to another engine at a time (memory stays flat)
# outcomes that asking again will not change (the request itself must change)
TERMINAL_SQL = (
    "(outcome IN ('refused', 'truncated', 'content_filter', 'too_long') "
    "OR (outcome = 'http_error' AND status_code < 500 AND status_code <> 429))"
)
# Which attempts use up one of a request's max_attempts: only outcomes that are the request's own. Provider
# misfortune (expired, cancelled, missing, HTTP 429 and 5xx, no answer at all, a batch that failed for want
# of capacity or by the provider's fault) does not: such rows stay pending and are sent again.
OWN_OUTCOMES = ("refused", "truncated", "content_filter", "invalid_json", "schema_violation", "too_long")
# batch-level error codes that say nothing about the requests (a batch that failed with any other code, e.g.
# invalid_json_line, invalid_url, duplicate_custom_id or model_mismatch, was refused for its requests' format)
UNLUCKY_BATCH_CODES = ("token_limit_exceeded", "request_limit_exceeded", "rate_limit_exceeded", "server_error")
USES_ATTEMPT_SQL = (
    "(outcome IN ({own}) "
    "OR (outcome = 'http_error' AND coalesce(status_code, 0) BETWEEN 400 AND 499 AND status_code <> 429) "
    "OR (outcome = 'batch_failed' AND coalesce(error_code, '') NOT IN ({unlucky})))"
).format(own=", ".join(f"'{o}'" for o in OWN_OUTCOMES), unlucky=", ".join(f"'{c}'" for c in UNLUCKY_BATCH_CODES))

SHARD_COLUMNS = ("shard_id, run_id, node, model, path, n_requests, response_schema, status, file_id, batch_id, "
                 "batch_status, created_at, endpoint")  # the fields of ShardRow


@dataclass
class ShardRow:
    """A recorded shard: a batch input file and where it is in its lifecycle."""

    shard_id: str
    run_id: str
    node: str
    model: str
    path: str
    n_requests: int
    response_schema: str
    status: str
    file_id: str | None
    batch_id: str | None
    batch_status: str | None
    created_at: Any = None
    endpoint: str | None = None  # where its requests go (None: /v1/chat/completions)


@dataclass(frozen=True)
class NewShard:
    """A shard file just written, to record before anything is uploaded."""

    shard_id: str
    path: Path
    keys_path: Path  # its request keys, one per line
    n_requests: int
    input_tokens: int
    exact: bool  # whether input_tokens is a count (or an upper bound)


@dataclass(frozen=True)
class Usage:
    """What a model's attempts in one run used and cost."""

    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    model: str | None = None  # the LLM model of one of them
    unlucky: int = 0  # attempts that came back unanswered through no fault of their own (USES_ATTEMPT_SQL)


@contextmanager
def shard_requests(wh: Warehouse, where: str) -> Iterator[str]:
    """The requests (shard_id, request_key) of the shards that ``where`` (SQL over the shards table `sh`, values
    as literals) selects, as a relation of ``wh``: a subquery of its state tables or, when its run lifecycle lives
    in a state store of its own (Spark), a temporary table loaded from there (open shards' requests are the rows
    in flight: few, or a run's worth)."""
    life = wh.lifecycle
    sql = (f"SELECT r.shard_id, r.request_key FROM {life.state_table('shard_requests')} r "
           f"JOIN {life.state_table('shards')} sh ON sh.shard_id = r.shard_id WHERE {where}")
    if life is wh:
        yield f"({sql})"
        return
    types = {"shard_id": "VARCHAR", "request_key": "VARCHAR"}
    table = wh.temp_rows("_llmt_shard_requests", {"shard_id": [], "request_key": []}, types)
    rows = life.stream(sql)
    while chunk := list(islice(rows, MOVE_ROWS)):
        wh.load_rows(table.name, dict(zip(types, zip(*chunk, strict=True), strict=True)), types)
    try:
        yield table.name
    finally:
        wh.drop_temp(table)


class StateStore:
    def __init__(self, warehouse: Warehouse) -> None:
        self.wh = warehouse.lifecycle  # the warehouse itself, or the state store of an engine without transactions
        self.lake = warehouse  # where answers and attempts are kept (beside the inputs they are joined with)
        self.open_list = ", ".join(warehouse.string(s) for s in OPEN)

    def table(self, name: str) -> str:
        """A table of the run lifecycle (runs, shards, shard_requests, fingerprints, ...)."""
        return self.wh.state_table(name)

    def lake_table(self, name: str) -> str:
        """`answers` or `attempts`, kept where the inputs are."""
        return self.lake.state_table(name)

    # -- runs ----------------------------------------------------------------------------------------
    def start_run(self, run_id: str, project: str, command: str) -> None:
        """Record a command that changes state; a run still marked running was killed (a live one, waiting with
        the database released, sets its own status again when it ends)."""
        runs = self.table("runs")
        with self.wh.transaction():
            self.wh.execute(f"UPDATE {runs} SET status = 'interrupted' WHERE status = 'running'")
            self.wh.execute(f"INSERT INTO {runs} (run_id, project, command, started_at, status) "
                            "VALUES (?, ?, ?, now(), 'running')", [run_id, project, command])

    def finish_run(self, run_id: str, status: str) -> None:
        self.wh.execute(f"UPDATE {self.table('runs')} SET finished_at = now(), status = ? WHERE run_id = ?",
                        [status, run_id])

    # -- shards ---------------------------------------------------------------------------------------
    def shards(self, shard_ids: Sequence[str]) -> list[ShardRow]:
        rows = self.wh.fetchall(f"SELECT {SHARD_COLUMNS} FROM {self.table('shards')} WHERE shard_id IN "
                                f"(SELECT unnest(?::VARCHAR[])) ORDER BY shard_id", [list(shard_ids)])
        return [ShardRow(*r) for r in rows]

    def open_shards(self, provider: str | None = None, node: str | None = None) -> list[ShardRow]:
        """Shards not collected yet (of one provider, or of one model)."""
        rows = self.wh.fetchall(
            f"SELECT {SHARD_COLUMNS} FROM {self.table('shards')} WHERE status IN ({self.open_list}) "
            "AND (CAST(? AS VARCHAR) IS NULL OR provider = ?) AND (CAST(? AS VARCHAR) IS NULL OR node = ?) "
            "ORDER BY shard_id",
            [provider, provider, node, node])
        return [ShardRow(*r) for r in rows]

    def open_files(self) -> list[tuple[str, str, str]]:
        """(shard id, model, provider) of every open shard, whatever its provider (their files are needed)."""
        return [(str(s), str(n), str(p)) for s, n, p in self.wh.fetchall(
            f"SELECT shard_id, node, provider FROM {self.table('shards')} WHERE status IN ({self.open_list}) "
            "ORDER BY shard_id")]

    def open_shards_sharing(self, source: str, node: str, provider: str) -> list[ShardRow]:
        """Open shards of ``provider`` of models other than ``node`` that carry a request of ``source`` (a
        relation of the warehouse with `_llmt_request_key`)."""
        shards = self.table("shards")
        if not self.scalar_int(f"SELECT count(*) FROM {shards} WHERE status IN ({self.open_list}) AND node <> ? "
                               "AND provider = ?", [node, provider]):
            return []  # the usual case, without looking at the requests
        others = (f"sh.status IN ({self.open_list}) AND sh.node <> {self.wh.string(node)} "
                  f"AND sh.provider = {self.wh.string(provider)}")
        with shard_requests(self.lake, others) as requests:
            ids = [str(r[0]) for r in self.lake.fetchall(
                f"SELECT DISTINCT r.shard_id FROM {requests} r JOIN {source} i ON i._llmt_request_key = r.request_key")]
        return self.shards(ids) if ids else []

    def open_counts(self, provider: str) -> dict[str, int]:
        """Open shards of one provider per model."""
        return {str(node): int(n) for node, n in self.wh.fetchall(
            f"SELECT node, count(*) FROM {self.table('shards')} WHERE status IN ({self.open_list}) AND provider = ? "
            "GROUP BY node ORDER BY node", [provider])}

    def open_by_provider(self, node: str) -> list[tuple[str, int]]:
        """(provider, open shards) of one model."""
        return [(str(p), int(n)) for p, n in self.wh.fetchall(
            f"SELECT provider, count(*) FROM {self.table('shards')} WHERE node = ? AND status IN ({self.open_list}) "
            "GROUP BY provider ORDER BY provider", [node])]

    def shard_keys(self, shard_id: str) -> list[str]:
        """The request keys a shard carries (in no particular order)."""
        return [str(r[0]) for r in self.wh.fetchall(
            f"SELECT request_key FROM {self.table('shard_requests')} WHERE shard_id = ?", [shard_id])]

    def shard_ids(self) -> set[str]:
        return {str(r[0]) for r in self.wh.fetchall(f"SELECT shard_id FROM {self.table('shards')}")}

    def record_shards(self, shards: Sequence[NewShard], run_id: str, node: str, model: str, provider: str,
                      schema: dict[str, Any], max_output_tokens: int, endpoint: str | None = None) -> None:
        """Record written shard files, their request keys and input tokens, in one transaction (``endpoint``:
        where their requests go, when not to chat completions)."""
        with self.wh.transaction():
            for shard in shards:
                self.wh.execute(
                    f"INSERT INTO {self.table('shards')} (shard_id, run_id, node, model, provider, path, n_requests, "
                    "response_schema, status, created_at, updated_at, input_tokens, input_tokens_exact, "
                    "max_output_tokens, endpoint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'written', now(), now(), ?, ?, ?, ?)",
                    [shard.shard_id, run_id, node, model, provider, str(shard.path), shard.n_requests,
                     json.dumps(schema), shard.input_tokens, shard.exact, max_output_tokens, endpoint])
                self.wh.load_lines(self.table("shard_requests"), {"shard_id": shard.shard_id}, "request_key",
                                   shard.keys_path)

    def update_shard(self, shard_id: str, **values: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        self.wh.execute(f"UPDATE {self.table('shards')} SET {sets}, updated_at = now() WHERE shard_id = ?",
                        [*values.values(), shard_id])

    def record_statuses(self, changed: Sequence[tuple[str, str]]) -> None:
        """(shard id, batch status) pairs, in one write."""
        if changed:
            self.wh.execute(
                f"UPDATE {self.table('shards')} SET batch_status = c.status, updated_at = now() FROM (SELECT "
                "unnest(?::VARCHAR[]) AS shard_id, unnest(?::VARCHAR[]) AS status) c "
                f"WHERE {self.table('shards')}.shard_id = c.shard_id",
                [[s for s, _ in changed], [b for _, b in changed]])

    def mark_collected(self, collected: Sequence[tuple[str, str, str | None]]) -> None:
        """(shard id, batch status, error) of shards whose results are stored (in the caller's transaction)."""
        for shard_id, status, error in collected:
            self.update_shard(shard_id, status="collected", batch_status=status, error=error)

    def cancelled_by_user(self, shard_ids: Sequence[str], run_id: str) -> bool:
        """Whether `llmt cancel` cancelled one of these batches while run ``run_id`` was under way."""
        shards, runs = self.table("shards"), self.table("runs")
        return bool(self.scalar_int(
            f"SELECT count(*) FROM {shards} WHERE shard_id IN (SELECT unnest(?::VARCHAR[])) "
            f"AND batch_status = 'cancelled' AND cancel_requested_at >= (SELECT started_at FROM {runs} "
            "WHERE run_id = ?)", [list(shard_ids), run_id]))

    def request_cancel(self, shard_ids: Sequence[str]) -> None:
        self.wh.execute(f"UPDATE {self.table('shards')} SET cancel_requested_at = now() "
                        "WHERE shard_id IN (SELECT unnest(?::VARCHAR[]))", [list(shard_ids)])

    def close_realtime(self, provider: str, node: str) -> None:
        """Open shards of ``provider`` for one model belong to a process that was killed: closed, so that their
        unanswered rows are pending again."""
        self.wh.execute(f"UPDATE {self.table('shards')} SET status = 'interrupted', updated_at = now() "
                        f"WHERE provider = ? AND node = ? AND status IN ({self.open_list})", [provider, node])

    def inexact_open_shards(self) -> list[tuple[str, str]]:
        """(shard id, path) of open shards whose input tokens are an upper bound."""
        return [(str(a), str(b)) for a, b in self.wh.fetchall(
            f"SELECT shard_id, path FROM {self.table('shards')} WHERE status IN ({self.open_list}) "
            "AND NOT input_tokens_exact ORDER BY shard_id")]

    def open_work(self, node: str | None = None) -> list[tuple[str, int, int, int, bool, str]]:
        """(model, requests, input tokens, max output tokens of all, exact, path) of each open shard."""
        return [(str(m), int(n or 0), int(i or 0), int(o or 0), bool(e), str(p)) for m, n, i, o, e, p in
                self.wh.fetchall(
                    f"SELECT model, n_requests, input_tokens, n_requests * max_output_tokens, input_tokens_exact, "
                    f"path FROM {self.table('shards')} WHERE status IN ({self.open_list}) "
                    "AND (CAST(? AS VARCHAR) IS NULL OR node = ?)",
                    [node, node])]

    # -- attempts and answers -------------------------------------------------------------------------
    def run_usage(self, run_id: str, node: str | None = None) -> Usage:
        """What this run's stored attempts used and cost (all models, or one)."""
        row = self.lake.fetchone(
            "SELECT coalesce(sum(cost_usd), 0), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
            f"coalesce(sum(cached_tokens), 0), max(model), count(CASE WHEN outcome <> 'ok' AND NOT {USES_ATTEMPT_SQL} "
            f"THEN 1 END) FROM {self.lake_table('attempts')} WHERE run_id = ? AND node = coalesce(?, node)",
            [run_id, node])
        assert row is not None
        return Usage(float(row[0]), int(row[1]), int(row[2]), int(row[3]), row[4], int(row[5]))

    def stored_of_shards(self, shard_ids: Sequence[str]) -> int:
        """How many requests of the given shards have a stored answer (that --reask replaces)."""
        with shard_requests(self.lake, f"sh.shard_id IN ({self._strings(shard_ids)})") as requests:
            return int(self.lake.scalar(
                f"SELECT count(*) FROM {requests} r WHERE EXISTS (SELECT 1 FROM {self.lake_table('answers')} a "
                "WHERE a.request_key = r.request_key)") or 0)

    def answered_usage(self, source: str) -> tuple[int, int, int]:
        """(stored answers of the requests of ``source`` (a relation with `_llmt_request_key`), their prompt
        tokens, their completion tokens)."""
        row = self.lake.fetchone(
            "SELECT count(*), coalesce(sum(a.prompt_tokens), 0), coalesce(sum(a.completion_tokens), 0) "
            f"FROM {self.lake_table('answers')} a WHERE EXISTS (SELECT 1 FROM {source} i "
            "WHERE i._llmt_request_key = a.request_key)")
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)

    def answered_outside_run(self, source: str, run_id: str) -> int:
        """The rows of ``source`` whose stored answer no shard of run ``run_id`` asked for again (--reask)."""
        with shard_requests(self.lake, f"sh.run_id = {self.wh.string(run_id)}") as requests:
            return int(self.lake.scalar(
                f"SELECT count(*) FROM {source} i WHERE EXISTS (SELECT 1 FROM {self.lake_table('answers')} a "
                f"WHERE a.request_key = i._llmt_request_key) AND NOT EXISTS (SELECT 1 FROM {requests} r "
                "WHERE r.request_key = i._llmt_request_key)") or 0)

    def last_run_cost(self, node: str) -> float:
        """What the model's most recent run with attempts spent (billed failures included)."""
        attempts = self.lake_table("attempts")
        return float(self.lake.scalar(
            f"SELECT coalesce(sum(cost_usd), 0) FROM {attempts} WHERE node = ? AND run_id = (SELECT run_id FROM "
            f"{attempts} WHERE node = ? ORDER BY created_at DESC LIMIT 1)", [node, node]) or 0.0)

    def average_completion(self, node: str) -> tuple[float, int]:
        """The average output tokens of the model's stored answers, and how many there are."""
        row = self.lake.fetchone(f"SELECT avg(completion_tokens), count(*) FROM {self.lake_table('answers')} "
                               "WHERE node = ?", [node])
        return (float(row[0] or 0), int(row[1])) if row else (0.0, 0)

    def ledger(self) -> list[tuple[Any, ...]]:
        """Per model, LLM model and provider kind: spend today, this month and in all, and tokens."""
        return self.lake.fetchall(
            "SELECT node, model, coalesce(provider, 'unknown'), "
            "sum(CASE WHEN created_at >= current_date THEN cost_usd END), "
            "sum(CASE WHEN created_at >= date_trunc('month', current_date) THEN cost_usd END), sum(cost_usd), "
            f"sum(prompt_tokens), sum(completion_tokens) FROM {self.lake_table('attempts')} "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")

    def model_spend(self, node: str) -> dict[str, float]:
        """What the model's attempts cost to date, per provider kind (the fake provider's is simulated)."""
        return {str(p): float(c or 0) for p, c in self.lake.fetchall(
            f"SELECT coalesce(provider, 'unknown'), sum(cost_usd) FROM {self.lake_table('attempts')} WHERE node = ? "
            "GROUP BY coalesce(provider, 'unknown') ORDER BY 1", [node])}

    def last_run(self, node: str) -> dict[str, Any] | None:
        """The latest run that sent requests of the model: its id, command, start, end, status and requests."""
        shards, runs = self.table("shards"), self.table("runs")
        row = self.wh.fetchone(
            f"SELECT r.run_id, r.command, r.started_at, r.finished_at, r.status, (SELECT sum(n_requests) FROM "
            f"{shards} s WHERE s.run_id = r.run_id AND s.node = ?) FROM {runs} r WHERE r.run_id IN (SELECT run_id "
            f"FROM {shards} WHERE node = ?) ORDER BY r.started_at DESC LIMIT 1", [node, node])
        if row is None:
            return None
        return dict(zip(("run_id", "command", "started_at", "finished_at", "status", "requests"), row, strict=True))

    # -- fingerprints ---------------------------------------------------------------------------------
    def fingerprint(self, kind: str, name: str) -> dict[str, Any] | None:
        """What llmt recorded of a thing it built (``kind``: `stage` of a model's inputs, `source` of a loaded
        file source, `model` of a built view or table: model_state.py), or None."""
        value = self.wh.scalar(f"SELECT value FROM {self.table('fingerprints')} WHERE kind = ? AND name = ?",
                               [kind, name])
        return _fingerprint(value)

    def fingerprints(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every fingerprint of ``kind``, by name (in one query)."""
        rows = self.wh.fetchall(f"SELECT name, value FROM {self.table('fingerprints')} WHERE kind = ?", [kind])
        return {str(name): loaded for name, value in rows if (loaded := _fingerprint(value)) is not None}

    def set_fingerprint(self, kind: str, name: str, value: dict[str, Any]) -> None:
        table = self.table("fingerprints")
        with self.wh.transaction():
            self.wh.execute(f"DELETE FROM {table} WHERE kind = ? AND name = ?", [kind, name])
            self.wh.execute(f"INSERT INTO {table} VALUES (?, ?, ?, now())",
                            [kind, name, json.dumps(value, sort_keys=True)])

    def forget_fingerprint(self, kind: str, name: str) -> None:
        self.wh.execute(f"DELETE FROM {self.table('fingerprints')} WHERE kind = ? AND name = ?", [kind, name])

    # -- helpers --------------------------------------------------------------------------------------
    def _strings(self, values: Sequence[str]) -> str:
        return ", ".join(self.wh.string(v) for v in values) or "NULL"

    def scalar_int(self, sql: str, params: Sequence[Any] | None = None) -> int:
        return int(self.wh.scalar(sql, params) or 0)


def _fingerprint(value: str | None) -> dict[str, Any] | None:
    """A stored fingerprint's JSON as a mapping (None when absent or damaged)."""
    try:
        loaded = json.loads(value) if value is not None else None
    except ValueError:
        return None
    return loaded if isinstance(loaded, dict) else None
