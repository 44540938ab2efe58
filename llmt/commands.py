"""What each CLI command does, between loading the project and printing (via the Console)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmt.errors import ConfigError, NodeError, UsageError, did_you_mean

if TYPE_CHECKING:  # the run pipeline and DuckDB are imported by the commands that use them
    from llmt.console import Console
    from llmt.pipeline.llm import LlmOptions
    from llmt.pipeline.plan import ModelPlan
    from llmt.project import Project
    from llmt.runner import RunReport
    from llmt.warehouse.base import Warehouse


def compile_project(project: Project, select: list[str], exclude: list[str], console: Console,
                    full_refresh: bool = False) -> None:
    """Each model's SQL as the next run builds it (an incremental model's incremental branch when its table
    exists, unless ``full_refresh``), written to target/compiled/, and one sample request per LLM model."""
    from llmt.artifacts import write_compiled, write_manifest
    from llmt.pipeline.preview import next_build, sample_request, warehouse_reader
    from llmt.runner import llm_specs

    names = project.graph.select(select, exclude)
    specs = llm_specs(project, names)
    write_manifest(project, specs)
    with warehouse_reader(project, console) as wh:
        builds = {name: next_build(wh, project, project.nodes[name], full_refresh) for name in names}
        write_compiled(project, names, {name: sql for name, (sql, _) in builds.items()})
        for name in names:
            node = project.nodes[name]
            sql, which = builds[name]
            console.text(f"-- {name} ({node.materialized}) {node.rel_path}" + (f": {which}" if which else ""))
            console.text(sql.strip() + "\n")
            if name in specs:
                line, why = sample_request(wh, project, node, specs[name])
                console.text(f"-- request template hash {specs[name].template_hash[:16]}")
                console.text(json.dumps(line, indent=2, ensure_ascii=False) if line else f"-- {why}")
                console.text("")
    console.info(f"Compiled {len(names)} model(s) into {project.target_dir / 'compiled'}")


def list_nodes(project: Project, select: list[str], exclude: list[str], console: Console) -> None:
    names = project.graph.select(select, exclude)
    rows = [project.nodes[n] for n in names]
    if console.json_output:
        console.json([
            {"name": n.name, "materialized": n.materialized, "path": n.rel_path, "tags": n.tags,
             "depends_on": sorted(set(n.refs)), "relation": n.relation}
            for n in rows
        ])
        return
    console.table("", ["name", "materialized", "path", "tags", "depends_on"],
                  [[n.name, n.materialized, n.rel_path, ",".join(n.tags), ",".join(sorted(set(n.refs)))]
                   for n in rows])


def confirm_reask(reask: bool, yes: bool, console: Console) -> Callable[[str], bool] | None:
    """Who says yes before --reask pays again: nobody needs to with --yes; the user on a terminal; without
    one, --reask is refused before anything runs."""
    if not reask or yes:
        return None
    if not console.interactive:
        raise UsageError("--reask pays again for answers already stored, and there is no terminal to ask "
                         "whether to", hint="Confirm it in a script with --yes: `llmt run --reask --yes`.")
    return console.confirm


def run_project(
    project: Project, select: list[str], exclude: list[str], console: Console, options: LlmOptions
) -> RunReport:
    from llmt.runner import run

    names = project.graph.select(select, exclude)
    console.info(f"Running {len(names)} model(s) on target `{project.target_name}`")
    report = run(project, names, console, options)
    llm = [r.llm for r in report.results if r.llm is not None]
    # the fake provider's costs are what its answers would have cost: nobody paid them
    simulated = project.target.provider.type == "fake"
    spent = sum(r.cost_usd for r in llm)
    if console.json_output:
        console.json({"run_id": report.run_id, "elapsed": round(report.seconds, 3),
                      "statuses": _statuses(report), "cost_usd": round(spent, 6), "cost_simulated": simulated,
                      "results": [r.as_dict() for r in report.results]})
        return report
    if llm:
        reasked = any(r.reasked for r in llm)
        console.table(
            "LLM models", ["model", "rows", "new requests", *(["re-asked"] if reasked else []), "answered", "retried",
                           "failed", "pending", "cached", "deduplicated",
                           "simulated cost $" if simulated else "cost $"],
            [[r.name, r.llm.rows, r.llm.requests - r.llm.reasked, *([r.llm.reasked] if reasked else []),
              r.llm.answered, r.llm.retried, r.llm.status.get("failed", 0), r.llm.status.get("pending", 0),
              r.llm.cached, r.llm.deduplicated, f"{r.llm.cost_usd:.4f}"]
             for r in report.results if r.llm is not None],
        )
        dedup = sum(r.saved_dedup_usd for r in llm)
        cache = sum(r.saved_cache_usd for r in llm)
        console.info((f"Simulated spend (fake provider, nothing was paid): ${spent:.4f}" if simulated else
                      f"Spent ${spent:.4f}") + f"; saved about ${dedup:.4f} by asking identical requests once and "
                     f"${cache:.4f} through prompt caching.")
        still_open = {r.name: r.llm.open_batches for r in report.results if r.llm is not None and r.llm.open_batches}
        if still_open:
            console.info(f"{sum(still_open.values())} batch(es) still open ({', '.join(still_open)}): "
                         "`llmt status` shows them; the next `llmt run` collects them.")
    counts = _statuses(report)
    unchanged = sum(r.unchanged for r in report.results)
    console.info(f"Done in {report.seconds:.1f}s: {counts['success']} ok"
                 + (f" ({unchanged} unchanged, not built again)" if unchanged else "") + f", {counts['warn']} warn, "
                 f"{counts['error']} error(s), {counts['skipped']} skipped.")
    for r in report.results:
        if r.status in ("warn", "error") and r.message:
            console.info(f"{'ERROR' if r.status == 'error' else 'WARN'} {r.name}: "
                         + r.message.replace("\n", "\n  "))
    return report


def _statuses(report: RunReport) -> dict[str, int]:
    """How many models ended in each of dbt's statuses."""
    return {s: sum(r.status == s for r in report.results) for s in ("success", "warn", "error", "skipped")}


def show_model(project: Project, model: str, limit: int, console: Console) -> None:
    """Show a model's table, or an LLM model's `<model>__errors` table."""
    from llmt.runner import open_warehouse

    base = model.removesuffix("__errors")
    if base not in project.nodes or (base != model and not project.nodes[base].sends):
        names = [*project.nodes, *(f"{n}__errors" for n, node in project.nodes.items() if node.sends)]
        raise ConfigError(f"no model named `{model}`.{did_you_mean(model, names)}",
                          hint="`llmt ls` lists the models.")
    wh = open_warehouse(project, console)
    try:
        schema = project.nodes[base].schema
        if wh.relation_kind(schema, model) is None:
            raise ConfigError(f"`{model}` has not been built yet", hint=f"Run `llmt run -s {base}` first.")
        columns, rows = wh.query(f"SELECT * FROM {wh.relation(schema, model)} LIMIT {int(limit)}")
    finally:
        wh.close()
    if console.json_output:
        console.json([dict(zip(columns, r, strict=True)) for r in rows])
    else:
        console.table(f"{model} (first {limit} rows)", columns, rows)


def batch_status(project: Project, console: Console) -> dict[str, Any]:
    """Every open batch of the target with its status, counts, age and expiry, spend per model, and how many
    batches other targets have open; collects nothing."""
    from llmt.notify import ended_notice, ended_runs, notify_config, send
    from llmt.pipeline.batches import Batches
    from llmt.runner import make_context, new_run_id, open_warehouse

    wh = open_warehouse(project, console)
    context = make_context(project, wh, console, new_run_id())
    notify = notify_config(project)
    try:
        batches = Batches(context)
        rows = batches.describe(batches.open_shards())
        spend = context.store.ledger()
        elsewhere = _open_elsewhere(project, wh)
        ended = ended_runs(rows, context.store) if notify is not None else []
    finally:
        context.providers.close()
        wh.close()
    for run_id, entries in ended:  # the batches an earlier run left open have all ended: `llmt run` collects them
        assert notify is not None
        send(project, notify, ended_notice(project, run_id, entries), console)
    entries = [{"model": r[0], "llm_model": r[1], "provider": r[2], "today_usd": r[3] or 0.0, "month_usd": r[4] or 0.0,
                "total_usd": r[5] or 0.0, "prompt_tokens": r[6], "completion_tokens": r[7]} for r in spend]
    # what the fake provider's answers would have cost is simulated: never part of the real spend
    ledger = [e for e in entries if e["provider"] != "fake"]
    simulated = [e for e in entries if e["provider"] == "fake"]
    out = {"target": project.target_name, "open_batches": rows, "spend": ledger,
           "simulated_spend": simulated, "other_targets": elsewhere}
    if console.json_output:
        console.json(out)
        return out
    if not rows:
        console.info(f"No open batches on target `{project.target_name}`.")
    else:
        console.table(f"Open batches (target `{project.target_name}`)",
                      ["model", "batch", "status", "done", "failed", "requests", "age", "expires in"],
                      [[r["node"], r["batch_id"] or f"({r['shard_id']})", r["status"], r["completed"], r["failed"],
                        r["requests"], _duration(r["age_s"]), _duration(r["expires_in_s"])] for r in rows])
    for other in elsewhere:
        if other["error"]:
            console.info(f"Target `{other['target']}` ({other['warehouse']}): could not read its open batches "
                         f"({other['error']}).")
        elif other["open_batches"]:
            models = ", ".join(f"{node}: {n}" for node, n in other["models"].items())
            console.info(f"Target `{other['target']}` has {other['open_batches']} open batch(es) ({models}): "
                         f"`llmt status --target {other['target']}` shows them.")
    for title, group in (("Spend (USD, from the usage of every answer, failed ones included)", ledger),
                         ("Simulated spend (USD: what the fake provider's answers would have cost; nothing was paid)",
                          simulated)):
        if group:
            console.table(title, ["model", "llm", "provider", "today", "this month", "all time"],
                          [[e["model"], e["llm_model"], e["provider"], f"{e['today_usd']:.4f}", f"{e['month_usd']:.4f}",
                            f"{e['total_usd']:.4f}"] for e in group])
    return out


def _open_elsewhere(project: Project, wh: Warehouse) -> list[dict[str, Any]]:
    """Per other target whose warehouse file exists: its open batches per model, read from its state (its
    provider is not asked: its credentials may not be at hand). A target sharing this target's file and
    provider has its batches listed with this target's."""
    from llmt.errors import ConfigError, LlmtError
    from llmt.warehouse import open_warehouse
    from llmt.warehouse.store import StateStore

    out = []
    here = project.target.warehouse
    for name, target in project.config.targets.items():
        place = target.warehouse.location(project.dir)
        same = place == here.location(project.dir) and target.warehouse.state_schema == here.state_schema
        if name == project.target_name or place is None or not target.warehouse.exists(project.dir) or (
                same and target.provider.type == project.target.provider.type):
            continue
        entry: dict[str, Any] = {"target": name, "warehouse": target.warehouse.label, "open_batches": 0, "models": {},
                                 "error": None}
        # (this process holds this target's file when they share it: another connection to it could not read it)
        quick = {"lock_timeout": 0, **({"connect_timeout": 3} if target.warehouse.type == "postgres" else {})}
        other = wh if same else open_warehouse(target.warehouse.model_copy(update=quick), project.dir,
                                               read_only=True, target=name)
        try:
            entry["models"] = StateStore(other).open_counts(target.provider.type)
        except ConfigError:  # a server that cannot be reached now (not this target's): not listed
            continue
        except LlmtError as exc:  # e.g. a running llmt holds it
            entry["error"] = exc.message.splitlines()[0]
        finally:
            if other is not wh:
                other.close()
        entry["open_batches"] = sum(entry["models"].values())
        out.append(entry)
    return out


def cancel_batches(
    project: Project, select: list[str], console: Console, timeout: float | None
) -> dict[str, int]:
    """Cancel open batches (of the selected LLM models, or all) and collect their partial output."""
    from llmt.pipeline.batches import Batches
    from llmt.pipeline.llm import LlmOptions, model_place, rebuild_output
    from llmt.pipeline.spec import build_spec
    from llmt.runner import make_context, new_run_id, open_warehouse, pipeline_options

    names = set(project.graph.select(select, [])) if select else set(project.nodes)
    wh = open_warehouse(project, console)
    context = make_context(project, wh, console, new_run_id())
    options = pipeline_options(project, LlmOptions())
    try:
        batches = Batches(context)
        rows = [r for r in batches.open_shards() if r.node in names]
        if not rows:
            console.info("No open batches to cancel.")
            return {}
        console.info(f"Cancelling {len(rows)} batch(es)...")
        counts = batches.cancel(rows, timeout, options.poll_interval, lambda node: context.batches_dir / node)
        for node in sorted({r.node for r in rows} & set(project.nodes)):
            rebuild_output(context, model_place(project, node, context.batches_dir),
                           build_spec(project, project.nodes[node]))
    finally:
        context.providers.close()
        wh.close()
    console.info("Collected: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing")
                 + ". Rows not answered are sent again by the next `llmt run`.")
    return counts


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return ""
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{sign}{hours}h{rest // 60:02d}m" if hours else f"{sign}{rest // 60}m{rest % 60:02d}s"


def plan_project(
    project: Project, select: list[str], exclude: list[str], console: Console, sample: int | None,
    mode: str | None = None,
) -> list[ModelPlan]:
    """Per LLM (and embedding) model: rows, new rows, requests, exact input tokens, output bounds, cost, escalation
    bound; totals.
    Read from the warehouse, read-only; on a project nobody has run yet, from its LLM models' inputs built in
    memory (nothing is written)."""
    from llmt.pipeline.embed import embedding_specs
    from llmt.pipeline.llm import model_place
    from llmt.pipeline.plan import build_inputs, plan_embedding, plan_node
    from llmt.runner import batches_dir, llm_specs, not_on_spark, prices
    from llmt.warehouse import open_warehouse
    from llmt.warehouse.store import StateStore

    names = project.graph.select(select, exclude)
    specs = llm_specs(project, names)
    config = project.target.warehouse
    table = prices(project)
    embeddings = embedding_specs(project, names, table)
    if embeddings:
        not_on_spark(project, f"embedding models ({', '.join(sorted(embeddings))})")
    plans = []
    blocked: list[str] = []
    fresh = not config.exists(project.dir)
    wh = open_warehouse(config, project.dir, console, read_only=not fresh, memory=fresh, target=project.target_name)
    try:
        if fresh:
            blocked = build_inputs(wh, project, [*specs, *embeddings])
            console.info(f"Nothing has been built on target `{project.target_name}` yet: planning from the LLM "
                         "models' inputs built in memory (nothing is written).")
            for name in blocked:
                console.warn(f"{name}: not planned: it reads an LLM model's answers, which do not exist yet "
                             f"(`llmt run -s +{name} --exclude {name}` first)")
        for name in project.graph.order():
            if (name not in specs and name not in embeddings) or (fresh and name in blocked):
                continue
            place = model_place(project, name, batches_dir(project))
            try:
                plans.append(plan_node(wh, StateStore(wh), place, specs[name], table, sample, mode) if name in specs
                             else plan_embedding(wh, StateStore(wh), place, embeddings[name], table, sample, mode))
            except NodeError as exc:
                raise NodeError(exc.message, where=exc.where,
                                hint=f"Build its inputs first: `llmt run -s +{name} --exclude {name}`.") from None
    finally:
        wh.close()
    totals = {key: sum(getattr(p, key) for p in plans) for key in PLAN_TOTALS}
    if console.json_output:
        console.json({"prices_taken": table.taken, "models": [p.as_dict() for p in plans], "totals": totals})
        return plans
    _plan_table(console, table.taken, table.batch_discount, plans, totals)
    for p in plans:
        if p.output_tokens_max:
            console.info(f"{p.model}: expected output from {p.expected_from}")
        if p.too_long:
            console.warn(f"{p.model}: {p.too_long} request(s) longer than {p.llm_model}'s context window allows: "
                         f"`llmt run` sends none of them and lists them in {p.model}__errors (too_long)")
    if totals["escalation_usd_max"]:
        console.info(f"At most ${totals['usd_max']:.4f} in all, escalations included (each escalation: at most its "
                     "max_share of the rows, each as long as the largest request that may escalate, with "
                     "max_output_tokens).")
    return plans


def _plan_table(console: Console, taken: str, discount: float, plans: list[ModelPlan],
                totals: dict[str, float]) -> None:
    def money(expected: float | None, most: float) -> str:
        return f"{'-' if expected is None else f'{expected:.4f}'} / {most:.4f}"

    rows: list[list[object]] = []
    for p in plans:
        rows.append([p.model, p.llm_model, p.mode, p.rows, p.answered_rows, p.new_rows, p.requests, p.too_long,
                     p.input_tokens, f"{p.output_tokens_expected} / {p.output_tokens_max}",
                     money(p.batch_usd_expected, p.batch_usd_max), money(p.live_usd_expected, p.live_usd_max),
                     f"{p.open_batches} ({p.open_usd_max:.4f})"])
        if p.escalation_model:
            batch = p.escalation_mode == "batch"
            rows.append([f"{p.model} (escalate)", p.escalation_model, p.escalation_mode, "", "", "",
                         f"<= {p.escalation_requests_max}", "", f"<= {p.escalation_input_tokens_max}",
                         f"- / {p.escalation_output_tokens_max}", money(None, p.escalation_usd_max) if batch else "",
                         "" if batch else money(None, p.escalation_usd_max), ""])
    rows.append(["total", "", "", totals["rows"], totals["answered_rows"], totals["new_rows"], totals["requests"],
                 totals["too_long"], totals["input_tokens"],
                 f"{totals['output_tokens_expected']} / {totals['output_tokens_max']}",
                 money(totals["batch_usd_expected"], totals["batch_usd_max"]),
                 money(totals["live_usd_expected"], totals["live_usd_max"]),
                 f"{totals['open_batches']} ({totals['open_usd_max']:.4f})"])
    console.table(
        f"Plan (prices of {taken}; batch = {1 - discount:.0%} of live)",
        ["model", "llm", "mode", "rows", "answered", "new rows", "requests", "too long", "input tokens",
         "output tokens (exp / max)", "batch $ (exp / max)", "live $ (exp / max)", "open batches ($ max)"], rows)


PLAN_TOTALS = (
    "rows", "answered_rows", "new_rows", "requests", "too_long", "input_tokens", "output_tokens_max",
    "output_tokens_expected", "batch_usd_expected", "batch_usd_max", "live_usd_expected", "live_usd_max",
    "open_batches", "open_usd_max", "escalation_requests_max", "escalation_input_tokens_max",
    "escalation_output_tokens_max", "escalation_usd_max", "usd_expected", "usd_max",
)
