"""Run one LLM model: resume open shards, stage inputs, send only the rows without an answer
(retrying retryable outcomes up to max_attempts), then rebuild the output and errors tables."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from llmt.compile import quote
from llmt.console import Reporter
from llmt.cost import Budget, BudgetExceeded, check_budget
from llmt.pipeline.batches import ShardDriver
from llmt.pipeline.crash import crash_point
from llmt.pipeline.output import build_output
from llmt.pipeline.render import MAX_REQUESTS_PER_BATCH, iter_rows, render_lines, write_shards
from llmt.pipeline.spec import LlmSpec
from llmt.pipeline.stage import input_counts, pending_sql, stage_inputs, stage_table
from llmt.project import Node, Project
from llmt.warehouse.duckdb import Warehouse, relation_kind

MAX_QUEUE_WAITS = 8


@dataclass
class LlmOptions:
    full_refresh: bool = False
    wait: bool = True
    retry_failed: bool = False
    timeout: float | None = None
    poll_interval: float = 2.0
    max_requests_per_batch: int = MAX_REQUESTS_PER_BATCH
    max_cost: float | None = None  # --max-cost: the run's budget in USD
    sample: int | None = None  # --sample N: send at most N requests per model (no retries)


@dataclass
class LlmResult:
    rows: int = 0
    cached: int = 0  # rows answered from stored answers (no request)
    deduplicated: int = 0  # rows needing an answer that share their request with another row
    requests: int = 0  # requests sent in this run (after de-duplication)
    answered: int = 0  # requests answered ok in this run
    retried: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)  # output rows by _llmt_status
    cost_usd: float = 0.0  # actual spend of this run's attempts (billed failures included)
    estimate_usd: float = 0.0  # upper bound of what this run submitted
    saved_dedup_usd: float = 0.0
    saved_cache_usd: float = 0.0
    usage: dict[str, int] = field(default_factory=dict)  # prompt, completion, cached tokens
    open_batches: int = 0  # still running when the node finished (--no-wait, --timeout)

    def as_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows, "cached": self.cached, "deduplicated": self.deduplicated,
            "requests": self.requests, "answered": self.answered, "retried": self.retried,
            "failed": self.status.get("failed", 0), "pending": self.status.get("pending", 0),
            "stale": self.status.get("stale", 0), "outcomes": self.outcomes,
            "cost_usd": round(self.cost_usd, 6), "estimate_usd": round(self.estimate_usd, 6),
            "saved_dedup_usd": round(self.saved_dedup_usd, 6), "saved_cache_usd": round(self.saved_cache_usd, 6),
            "usage": self.usage, "open_batches": self.open_batches,
        }


def _ids(run_id: str, node: str) -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"{run_id}-{node}-{n:04d}"


def run_llm_node(
    project: Project,
    node: Node,
    spec: LlmSpec,
    warehouse: Warehouse,
    driver: ShardDriver,
    reporter: Reporter,
    options: LlmOptions,
    budgets: Budgets,
) -> LlmResult:
    state = warehouse.state_schema
    result = LlmResult()
    max_out = int(spec.params["max_output_tokens"])
    work_dir = batch_dir(project, node.name)
    # 1. finish what an earlier run left in flight (e.g. --no-wait) before sending anything new
    driver.remove_unrecorded_files(work_dir)
    leftover = driver.open_shards(node.name)
    if leftover:
        reporter.info(f"  {node.name}: resuming {len(leftover)} open batch(es)")
        _add(result.outcomes, driver.drive(leftover, wait=options.wait, timeout=options.timeout,
                                           poll=options.poll_interval, work_dir=work_dir))
        _add_spend(result, warehouse, driver, node.name)
    # 2. stage inputs with request keys (duplicate keys roll everything back)
    with warehouse.transaction() as conn:
        columns = stage_inputs(conn, state, node, spec, project.render(node, False))
        result.rows, result.cached, result.deduplicated = input_counts(conn, state, stage_table(state, node.name))
    since = driver.run_id if options.retry_failed else None
    # 3. send what has no answer; retry retryable outcomes in later rounds. Each round uses up an
    # attempt of every request it sends (so the loop ends), except rounds whose batches failed because
    # the enqueued-token limit was full: those wait and resubmit, a bounded number of times.
    deadline = None if options.timeout is None else time.monotonic() + options.timeout
    round_no, queue_waits = 0, 0
    while True:
        pending = pending_sql(state, stage_table(state, node.name), spec.columns, spec.max_attempts, since)
        with warehouse.connect() as conn:
            total_row = conn.execute(f"SELECT count(*) FROM ({pending})").fetchone()
            total = int(total_row[0]) if total_row else 0
            if total == 0:
                break
            cursor = conn.execute(pending)
            budget_left = None if options.sample is None else options.sample - result.requests
            with reporter.progress(f"{node.name}: rendering", total) as bar:
                shards = write_shards(
                    islice(render_lines(iter_rows(cursor), spec.columns, spec), budget_left), work_dir,
                    _ids(f"{driver.run_id}r{round_no}", node.name),
                    max_requests=options.max_requests_per_batch, advance=bar.advance,
                )
        sent = sum(len(sh.keys) for sh in shards)
        estimate = sum(driver.prices.cost(spec.model, prompt=sh.input_tokens, completion=len(sh.keys) * max_out,
                                          batch=True) for sh in shards)
        crash_point("after_write")
        try:
            check_budget(node.name, estimate, driver.committed_usd() + run_spend(warehouse, driver.run_id),
                         budgets.run)
            check_budget(node.name, estimate, driver.committed_usd(node.name) + result.cost_usd, budgets.model)
        except BudgetExceeded:
            for sh in shards:
                sh.path.unlink()
            raise
        if round_no == 0:
            result.requests = sent
        else:
            result.retried += sent
        result.estimate_usd += estimate
        round_no += 1
        driver.record(shards, node.name, spec.model, spec.strict_schema, max_out)
        crash_point("after_record")
        full_before = driver.queue_full
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        _add(result.outcomes, driver.drive(driver.open_shards(node.name), wait=options.wait, timeout=remaining,
                                           poll=options.poll_interval, work_dir=work_dir))
        _add_spend(result, warehouse, driver, node.name)
        if not options.wait or options.sample is not None or (deadline is not None and time.monotonic() >= deadline):
            break
        if driver.queue_full > full_before:
            if queue_waits >= MAX_QUEUE_WAITS:
                reporter.warn(f"{node.name}: the batch queue's token limit is still full; "
                              "the rest stays pending: run `llmt run` again later")
                break
            reporter.info(f"  {node.name}: the batch queue is full (token_limit_exceeded); resubmitting shortly")
            time.sleep(min(options.poll_interval * 2 ** (queue_waits + 3), 300.0))
            queue_waits += 1
    result.answered = result.outcomes.get("ok", 0)
    result.open_batches = len(driver.open_shards(node.name))
    # 4. the output table follows the input; answers come from the store
    result.status = rebuild_output(project, node, spec, warehouse, columns, since, options.full_refresh)
    return result


@dataclass
class Budgets:
    run: list[Budget] = field(default_factory=list)  # --max-cost, project budget_usd: all models of a run
    model: list[Budget] = field(default_factory=list)  # the model's own budget_usd


def run_spend(warehouse: Warehouse, run_id: str, node: str | None = None) -> float:
    """What this run's collected attempts cost (all models, or one)."""
    with warehouse.connect() as conn:
        row = conn.execute(
            f"SELECT coalesce(sum(cost_usd), 0) FROM {quote(warehouse.state_schema)}.attempts "
            "WHERE run_id = ? AND (? IS NULL OR node = ?)", [run_id, node, node],
        ).fetchone()
    return float(row[0]) if row else 0.0


def _add_spend(result: LlmResult, warehouse: Warehouse, driver: ShardDriver, node: str) -> None:
    """The node's actual spend and usage in this run, and what de-duplication and caching saved."""
    with warehouse.connect() as conn:
        row = conn.execute(
            f"SELECT coalesce(sum(cost_usd), 0), coalesce(sum(prompt_tokens), 0), "
            f"coalesce(sum(completion_tokens), 0), coalesce(sum(cached_tokens), 0), any_value(model) "
            f"FROM {quote(warehouse.state_schema)}.attempts WHERE run_id = ? AND node = ?",
            [driver.run_id, node],
        ).fetchone()
    assert row is not None
    result.cost_usd = float(row[0])
    result.usage = {"prompt_tokens": int(row[1]), "completion_tokens": int(row[2]), "cached_tokens": int(row[3])}
    if row[4] is not None:
        result.saved_cache_usd = driver.prices.cache_savings(str(row[4]), int(row[3]), batch=True)
    sent = result.requests + result.retried
    result.saved_dedup_usd = result.deduplicated * result.cost_usd / sent if sent else 0.0


def batch_dir(project: Project, node: str) -> Path:
    return project.target_dir / "batches" / node


def rebuild_output(
    project: Project, node: Node, spec: LlmSpec, warehouse: Warehouse, columns: list[str] | None = None,
    since: str | None = None, full_refresh: bool = False,
) -> dict[str, int]:
    """Rebuild the output and errors tables from the staged inputs and stored answers."""
    with warehouse.transaction() as conn:
        if columns is None:
            described = conn.execute(f"DESCRIBE {stage_table(warehouse.state_schema, node.name)}").fetchall()
            columns = [str(r[0]) for r in described if not str(r[0]).startswith("_llmt_")]
        if full_refresh and relation_kind(conn, project.schema, node.name) == "table":
            conn.execute(f"DROP TABLE {node.relation}")  # rebuilt from stored answers: costs nothing
        return build_output(conn, warehouse.state_schema, project.schema, spec, columns, since)


def _add(into: dict[str, int], counts: dict[str, int]) -> None:
    for key, n in counts.items():
        into[key] = into.get(key, 0) + n
