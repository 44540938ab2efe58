"""A run of the selected nodes (the scheduler is in scheduler.py), and what its stages are given."""

from __future__ import annotations

import os
import secrets
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from llmt import logs
from llmt.artifacts import run_args, write_compiled, write_manifest, write_run_results
from llmt.console import Reporter
from llmt.cost import Budget, PriceTable, price_table
from llmt.errors import ConfigError, LlmtError
from llmt.model_state import ModelState
from llmt.notify import notify_config, run_notice, send
from llmt.pipeline.batches import Batches
from llmt.pipeline.context import Limits, Providers, RunContext
from llmt.pipeline.embed import EmbeddingRun, embedding_specs
from llmt.pipeline.llm import Budgets, LlmOptions, NodeRun, model_place
from llmt.pipeline.rekey import fake_answers
from llmt.pipeline.spec import LlmSpec, build_spec, escalation_spec
from llmt.project import Project
from llmt.providers import make_provider, make_realtime_provider
from llmt.providers.base import MAX_REQUESTS_PER_BATCH, RealtimeProvider
from llmt.scheduler import Callbacks, NodeHooks, NodeResult, Scheduler
from llmt.warehouse import open_warehouse as open_target_warehouse
from llmt.warehouse.base import Warehouse
from llmt.warehouse.store import StateStore


@dataclass
class RunReport:
    run_id: str
    results: list[NodeResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return any(r.status == "error" for r in self.results)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def pipeline_options(project: Project, options: LlmOptions) -> LlmOptions:
    """Apply the target's `threads` and its `max_requests_per_batch` and `poll_interval` provider options."""
    provider = project.target.provider.options()
    where = str(project.dir / "project.yml")
    limit = provider.get("max_requests_per_batch", options.max_requests_per_batch)
    if not isinstance(limit, int) or not 0 < limit <= MAX_REQUESTS_PER_BATCH:
        raise ConfigError(f"`max_requests_per_batch` must be a whole number from 1 to {MAX_REQUESTS_PER_BATCH}, "
                          f"got {limit!r}", where=where)
    poll = provider.get("poll_interval", options.poll_interval)
    if not isinstance(poll, int | float) or poll <= 0:
        raise ConfigError(f"`poll_interval` must be a positive number of seconds, got {poll!r}", where=where)
    threads = options.threads if options.threads is not None else project.target.threads
    return replace(options, max_requests_per_batch=limit, poll_interval=float(poll), threads=threads)


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


def budgets(project: Project, node: str, options: LlmOptions, held: dict[str, float] | None = None) -> Budgets:
    """A model's budgets; ``held``: what the models of the run hold back for their escalations (shared)."""
    run = [Budget(options.max_cost, "--max-cost")] if options.max_cost is not None else []
    if project.config.llm.budget_usd is not None:
        run.append(Budget(project.config.llm.budget_usd, "budget_usd under `llm:` in project.yml"))
    own = project.nodes[node].config.get("budget_usd")
    return Budgets(run, [Budget(float(own), f"budget_usd of model `{node}`")] if own is not None else [],
                   {} if held is None else held)


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


def not_on_spark(project: Project, what: str) -> None:
    """Refuse ``what`` (embedding models, `llmt eval`, fine-tuning) on a Spark target, where it does not run yet,
    before anything runs."""
    if project.target.warehouse.type == "spark":
        raise ConfigError(f"{what} cannot run on target `{project.target_name}` yet: it has a Spark warehouse",
                          where=str(project.dir / "project.yml"),
                          hint="Use a DuckDB or PostgreSQL target for it (--target), or leave it out (--exclude).")


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
    """Run the selected nodes (``names``, in DAG order) by readiness: see scheduler.py."""
    started = time.monotonic()
    specs = llm_specs(project, names)  # every compile error before anything runs
    embeddings = embedding_specs(project, names, prices(project))
    if embeddings:
        not_on_spark(project, f"embedding models ({', '.join(sorted(embeddings))})")
    args = run_args(project, options)  # (as given: the target's settings are read again by a retry)
    options = pipeline_options(project, options)
    write_compiled(project, names)
    write_manifest(project, specs)
    report = RunReport(new_run_id())
    logs.bind_run(report.run_id)
    wh = warehouse or open_warehouse(project, reporter)
    if wh.lasting:
        reporter.warn("the warehouse is `:memory:`: tables and stored answers are lost when this command ends")
    # the provider is configured before anything runs, so that its configuration errors come first
    context = make_context(project, wh, reporter, report.run_id) if specs or embeddings else None
    store = StateStore(wh)
    state = ModelState(wh, store, project, report.run_id, options.full_refresh)  # what can be skipped
    store.start_run(report.run_id, project.name, command)
    deadline = None if options.timeout is None else started + options.timeout  # --timeout bounds the whole run
    held: dict[str, float] = {}  # what each model holds back for its escalation, seen by the others' budgets

    def llm_run(name: str) -> NodeRun | EmbeddingRun:
        assert context is not None and scheduler.batches is not None
        place = replace(model_place(project, name, context.batches_dir), reads=state.staging(project.nodes[name]))
        limits = budgets(project, name, options, held)
        if name in embeddings:
            return EmbeddingRun(context, scheduler.batches, place, embeddings[name], options, limits,
                                deadline=deadline)
        return NodeRun(context, scheduler.batches, place, specs[name], options, limits, lambda: fake_answers(project),
                       deadline=deadline)

    def finished(result: NodeResult) -> None:
        report.results.append(result)
        reporter.info(node_line(result))

    calls = Callbacks(llm_run, lambda result: judge_llm(result, *failed_share_limit(project, result.name, options)),
                      finished, hooks)
    scheduler = Scheduler(project, names, state, context, options, calls, reporter)
    status, exit_code, ended = "error", 1, False
    try:
        scheduler.run()
        ended = True
        status = "error" if report.failed else "success"
        exit_code = 1 if report.failed or scheduler.vetoed else 0
    except KeyboardInterrupt:
        status, exit_code = "interrupted", 130
        raise
    except LlmtError as exc:
        exit_code = exc.exit_code
        raise
    finally:
        scheduler.close()
        still_open = _open_by_model(scheduler.batches)
        if still_open is not None and not (ended and scheduler.stopped_by is None):
            what = ("interrupted" if status == "interrupted" else "stopped by --fail-fast" if ended
                    else "stopped by the error")
            _say_what_is_open(still_open, reporter, what)
        order = {n: i for i, n in enumerate(names)}
        report.results.sort(key=lambda r: order[r.name])
        report.seconds = time.monotonic() - started
        store.finish_run(report.run_id, status)
        notify = notify_config(project)
        notice = run_notice(project, report.run_id, command, _NOTICE_STATUS.get(exit_code, "error"), exit_code,
                            report.seconds, report.results, still_open or {},
                            scheduler.batches.collected_runs if scheduler.batches else ()) if notify else None
        if context is not None:
            context.providers.close()
        if warehouse is None:
            wh.close()
        write_run_results(project, report.run_id, [r.as_dict() for r in report.results], report.seconds, command,
                          args)
        if notify is not None and notice is not None:
            send(project, notify, notice, reporter)
    return report


_NOTICE_STATUS = {0: "success", 130: "interrupted"}


def _open_by_model(batches: Batches | None) -> dict[str, int] | None:
    """The batches still open per model (None: the run has no LLM model)."""
    if batches is None:
        return None
    by_node: dict[str, int] = {}
    for row in batches.open_shards():
        by_node[row.node] = by_node.get(row.node, 0) + 1
    return by_node


def _say_what_is_open(by_node: dict[str, int], reporter: Reporter, what: str) -> None:
    """When a run ends early (Ctrl-C, --fail-fast, an error): the batches still open, per model, and that the
    next run collects them."""
    if by_node:
        reporter.warn(f"{what}: {sum(by_node.values())} batch(es) still open ("
                      + ", ".join(f"{node}: {n}" for node, n in by_node.items())
                      + "); they go on at the provider, and the next `llmt run` collects them before it sends "
                      "anything (`llmt status` shows them, `llmt cancel` stops them)")
    else:
        reporter.warn(f"{what}: no batch is open; the next `llmt run` sends what is still pending")


def node_line(r: NodeResult) -> str:
    """A node's line in the output of `llmt run` (and `llmt seed`)."""
    if r.unchanged:
        return f"skip  {r.name} [{r.materialized}] (unchanged)"
    if r.status == "skipped":
        return f"skip  {r.name} ({r.message.removeprefix('skipped: ').replace('`', '')})"
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
