"""Run selected nodes in DAG order; a failed node skips everything downstream of it."""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmt.artifacts import write_compiled, write_manifest, write_run_results
from llmt.console import Reporter
from llmt.cost import Budget, PriceTable, price_table
from llmt.errors import ConfigError, LlmtError
from llmt.file_sources import load_file_sources
from llmt.materialize import materialize_sql
from llmt.pipeline.batches import Batches
from llmt.pipeline.context import Providers, RunContext
from llmt.pipeline.embed import EmbeddingRun, embedding_specs
from llmt.pipeline.llm import Budgets, LlmOptions, LlmResult, NodeRun, model_place
from llmt.pipeline.realtime import Limits
from llmt.pipeline.rekey import fake_answers
from llmt.pipeline.render import MAX_REQUESTS_PER_BATCH
from llmt.pipeline.spec import LlmSpec, build_spec, escalation_spec
from llmt.project import Project
from llmt.providers import make_provider, make_realtime_provider
from llmt.providers.base import RealtimeProvider
from llmt.warehouse import open_warehouse as open_target_warehouse
from llmt.warehouse.base import Warehouse
from llmt.warehouse.store import StateStore


@dataclass
class NodeResult:
    name: str
    materialized: str
    status: str  # dbt's: success | warn (an LLM model with failed rows, or stopped) | error | skipped
    seconds: float = 0.0
    message: str = ""
    rows: int | None = None
    llm: LlmResult | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "unique_id": f"model.{self.name}", "name": self.name, "materialized": self.materialized,
            "status": self.status, "execution_time": round(self.seconds, 3), "message": self.message,
            "rows": self.rows,
        }
        if self.llm is not None:
            out["llm"] = self.llm.as_dict()
        return out


@dataclass
class RunReport:
    run_id: str
    results: list[NodeResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return any(r.status == "error" for r in self.results)


@dataclass
class NodeHooks:
    """Run around each node by `llmt build` (its tests). A message returned by `before` skips the node;
    one returned by `after` (e.g. "failed test `x`") skips the node's descendants and says why."""

    before: Callable[[str], str | None]
    after: Callable[[str, NodeResult], str | None]


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def pipeline_options(project: Project, options: LlmOptions) -> LlmOptions:
    """Apply the target's `max_requests_per_batch` and `poll_interval` provider options."""
    provider = project.target.provider.options()
    where = str(project.dir / "project.yml")
    limit = provider.get("max_requests_per_batch", options.max_requests_per_batch)
    if not isinstance(limit, int) or not 0 < limit <= MAX_REQUESTS_PER_BATCH:
        raise ConfigError(f"`max_requests_per_batch` must be a whole number from 1 to {MAX_REQUESTS_PER_BATCH}, "
                          f"got {limit!r}", where=where)
    poll = provider.get("poll_interval", options.poll_interval)
    if not isinstance(poll, int | float) or poll <= 0:
        raise ConfigError(f"`poll_interval` must be a positive number of seconds, got {poll!r}", where=where)
    return replace(options, max_requests_per_batch=limit, poll_interval=float(poll))


def make_providers(project: Project) -> Providers:
    """The target's provider (configured now, so that its configuration errors come first)."""
    kind, options = project.target.provider.type, project.target.provider.options()
    provider = make_provider(kind, options, project_dir=project.dir, target_dir=project.target_dir)

    def realtime() -> RealtimeProvider:
        return make_realtime_provider(kind, options, project_dir=project.dir, target_dir=project.target_dir,
                                      batch=provider)

    return Providers(provider, realtime, realtime_limits(project))


def make_context(project: Project, wh: Warehouse, reporter: Reporter, run_id: str,
                 providers: Providers | None = None) -> RunContext:
    """What the pipeline's stages of one run of ``project`` are given."""
    return RunContext(run_id, project.name, wh, StateStore(wh), providers or make_providers(project),
                      prices(project), reporter, project.target_dir, batches_dir(project))


def batches_dir(project: Project) -> Path:
    """Where the target's batch files go (a folder per model): targets never share one."""
    return project.target_dir / "batches" / project.target_name


def realtime_limits(project: Project) -> Limits:
    """`concurrency`, `requests_per_minute`, `tokens_per_minute` from the target's provider options."""
    options = project.target.provider.options()
    values = {k: options[k] for k in ("concurrency", "requests_per_minute", "tokens_per_minute") if k in options}
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"`{key}` must be a whole number of at least 1, got {value!r}",
                              where=str(project.dir / "project.yml"))
    return Limits(**values)


def prices(project: Project) -> PriceTable:
    return price_table(project.config.llm.prices)


def budgets(project: Project, node: str, options: LlmOptions) -> Budgets:
    run = [Budget(options.max_cost, "--max-cost")] if options.max_cost is not None else []
    if project.config.llm.budget_usd is not None:
        run.append(Budget(project.config.llm.budget_usd, "budget_usd under `llm:` in project.yml"))
    own = project.nodes[node].config.get("budget_usd")
    return Budgets(run, [Budget(float(own), f"budget_usd of model `{node}`")] if own is not None else [])


def failed_share_limit(project: Project, node: str, options: LlmOptions) -> tuple[float, str]:
    """A model's max_failed_share and where it was set: --max-failed-share, the model's config, `llm:` in
    project.yml, or the default."""
    if options.max_failed_share is not None:
        return options.max_failed_share, "--max-failed-share"
    own = project.nodes[node].config.get("max_failed_share")
    if own is not None:
        return float(own), f"max_failed_share of model `{node}`"
    llm = project.config.llm
    if "max_failed_share" in llm.model_fields_set:
        return llm.max_failed_share, "max_failed_share under `llm:` in project.yml"
    return llm.max_failed_share, "the default max_failed_share"


def judge_llm(result: NodeResult, limit: float, where: str) -> None:
    """An LLM model with failed rows is `warn`, and `error` when their share of its rows is above ``limit``
    (its table is built all the same); a model stopped with rows pending is `warn` and says why."""
    llm = result.llm
    assert llm is not None
    failed, pending = llm.status.get("failed", 0), llm.status.get("pending", 0)
    notes = []
    if failed:
        share = failed / llm.rows
        reasons = ", ".join(f"{reason} {n}" for reason, n in llm.failed_reasons.items())
        above = share > limit
        notes.append(f"{failed} of {llm.rows} rows failed ({share:.1%}; {reasons}), "
                     f"{'above' if above else 'within'} {where} ({limit:g}): see `llmt show {result.name}__errors`")
        result.status = "error" if above else "warn"
    if llm.stopped is not None and pending:
        notes.append(f"{llm.stopped}; {pending} rows pending; the next `llmt run` sends them")
        if result.status == "success":
            result.status = "warn"
    result.message = "\n".join(notes)


def open_warehouse(project: Project, reporter: Reporter | None = None) -> Warehouse:
    """The target's warehouse; ``reporter`` hears when opening it waits for another program's lock."""
    return open_target_warehouse(project.target.warehouse, project.dir, reporter, target=project.target_name,
                                 application=application_name(project))


def application_name(project: Project) -> str:
    """How a server names llmt's connection (PostgreSQL shows it to whoever waits for the state's lock)."""
    return f"llmt {' '.join(sys.argv[1:2]) or 'library'} ({project.name}/{project.target_name}, pid {os.getpid()})"


def llm_specs(project: Project, names: list[str]) -> dict[str, LlmSpec]:
    """Compile-time checks of every selected LLM model (prompt, schema, columns, a known price for its model
    and its escalation's, output within the model's limit)."""
    specs = {n: build_spec(project, project.nodes[n]) for n in names if project.nodes[n].is_llm}
    table = prices(project)
    for name, spec in specs.items():
        for asked in (spec, escalation_spec(spec)):
            if asked is not None:
                table.check(asked.model, int(asked.params["max_output_tokens"]), project.nodes[name].rel_path)
    return specs


def run(
    project: Project,
    names: list[str],
    reporter: Reporter,
    options: LlmOptions,
    warehouse: Warehouse | None = None,
    command: str = "run",
    hooks: NodeHooks | None = None,
) -> RunReport:
    started = time.monotonic()
    specs = llm_specs(project, names)  # every compile error before anything runs
    embeddings = embedding_specs(project, names, prices(project))
    options = pipeline_options(project, options)
    write_compiled(project, names)
    write_manifest(project, specs)
    report = RunReport(new_run_id())
    wh = warehouse or open_warehouse(project, reporter)
    if wh.lasting:
        reporter.warn("the warehouse is `:memory:`: tables and stored answers are lost when this command ends")
    # the provider is configured before anything runs, so that its configuration errors come first
    context = make_context(project, wh, reporter, report.run_id) if specs or embeddings else None
    store = StateStore(wh)
    store.start_run(report.run_id, project.name, command)
    batches = Batches(context) if context is not None else None
    failed_upstream: dict[str, str] = {}  # node -> why its descendants are skipped ("failed", ...)
    interrupted = False
    try:
        for name in names:
            node = project.nodes[name]
            blocked = [p for p in project.graph.ancestors(name) if p in failed_upstream]
            why = None
            if blocked:
                failed_upstream[name] = failed_upstream[blocked[0]]
                why = f"upstream `{blocked[0]}` {failed_upstream[name]}"
            elif hooks is not None and (why := hooks.before(name)):
                failed_upstream[name] = "was skipped"
            if why:
                report.results.append(NodeResult(name, node.materialized, "skipped", message=f"skipped: {why}"))
                reporter.info(f"skip  {name} ({why.replace('`', '')})")
                continue
            t0 = time.monotonic()
            result = NodeResult(name, node.materialized, "success")
            try:
                load_file_sources(wh, store, project, node.sources)  # when their files changed
                if node.sends:
                    assert context is not None and batches is not None
                    place, limits = model_place(project, name, context.batches_dir), budgets(project, name, options)
                    result.llm = (NodeRun(context, batches, place, specs[name], options, limits,
                                          lambda: fake_answers(project)) if node.is_llm else
                                  EmbeddingRun(context, batches, place, embeddings[name], options, limits)).run()
                    result.rows = result.llm.rows
                    judge_llm(result, *failed_share_limit(project, name, options))
                    if result.status == "error":
                        failed_upstream[name] = "failed"
                else:
                    with wh.transaction():
                        result.rows = materialize_sql(wh, project, node, options.full_refresh)
            except LlmtError as exc:
                if exc.exit_code == 2:  # a usage or config error: stop, exit code 2
                    raise
                result.status, result.message = "error", exc.render()
                failed_upstream[name] = "failed"
            result.seconds = time.monotonic() - t0
            report.results.append(result)
            reporter.info(_line(result))
            if hooks is not None and result.status in ("success", "warn") and (veto := hooks.after(name, result)):
                failed_upstream[name] = veto
    except KeyboardInterrupt:
        interrupted = True
        if batches is not None:
            _say_what_is_open(batches, reporter)
        raise
    finally:
        report.seconds = time.monotonic() - started
        status = "interrupted" if interrupted else "error" if report.failed else "success"
        store.finish_run(report.run_id, status)
        if context is not None:
            context.providers.close()
        if warehouse is None:
            wh.close()
        write_run_results(project, report.run_id, [r.as_dict() for r in report.results], report.seconds, command)
    return report


def _say_what_is_open(batches: Batches, reporter: Reporter) -> None:
    """On Ctrl-C: the batches still open, per model, and that the next run collects them."""
    by_node: dict[str, int] = {}
    for row in batches.open_shards():
        by_node[row.node] = by_node.get(row.node, 0) + 1
    if by_node:
        reporter.warn(f"interrupted: {sum(by_node.values())} batch(es) still open ("
                      + ", ".join(f"{node}: {n}" for node, n in by_node.items())
                      + "); they go on at the provider, and the next `llmt run` collects them before it sends "
                      "anything (`llmt status` shows them, `llmt cancel` stops them)")
    else:
        reporter.warn("interrupted: no batch is open; the next `llmt run` sends what is still pending")


def _line(r: NodeResult) -> str:
    mark = {"success": "ok   ", "warn": "WARN ", "error": "ERROR", "skipped": "skip "}[r.status]
    extra = ""
    if r.llm is not None:
        new = r.llm.requests - r.llm.reasked
        extra = f" {r.llm.rows} rows, {new} new requests" + (f", {r.llm.reasked} re-asked" if r.llm.reasked else "")
        extra += f", {r.llm.answered} answered"
        failed = r.llm.status.get("failed", 0)
        if failed:
            extra += f", {failed} failed ({failed / r.llm.rows:.1%})"
    elif r.rows is not None:
        extra = f" {r.rows} rows"
    text = f"{mark} {r.name} [{r.materialized}]{extra} in {r.seconds:.2f}s"
    return text + "".join(f"\n      {line}" for line in r.message.splitlines())
