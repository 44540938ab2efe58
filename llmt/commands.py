"""What each CLI command does, between loading the project and printing (via the Console)."""

from __future__ import annotations

import json
from typing import Any

from llmt.artifacts import write_compiled, write_manifest
from llmt.compile import relation
from llmt.console import Console
from llmt.errors import ConfigError, did_you_mean
from llmt.pipeline.llm import LlmOptions, batch_dir, rebuild_output
from llmt.pipeline.spec import build_spec
from llmt.project import Project
from llmt.runner import RunReport, llm_specs, make_driver, new_run_id, open_warehouse, pipeline_options, run
from llmt.warehouse.duckdb import relation_kind


def compile_project(project: Project, select: list[str], exclude: list[str], console: Console) -> None:
    from llmt.pipeline.preview import sample_request

    names = project.graph.select(select, exclude)
    specs = llm_specs(project, names)
    write_compiled(project, names)
    write_manifest(project, specs)
    for name in names:
        node = project.nodes[name]
        console.text(f"-- {name} ({node.materialized}) {node.rel_path}")
        console.text(node.compiled_sql.strip() + "\n")
        if name in specs:
            line, why = sample_request(project, node, specs[name])
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


def run_project(
    project: Project, select: list[str], exclude: list[str], console: Console, options: LlmOptions
) -> RunReport:
    names = project.graph.select(select, exclude)
    console.info(f"Running {len(names)} model(s) on target `{project.target_name}`")
    report = run(project, names, console, options)
    if console.json_output:
        console.json({"run_id": report.run_id, "elapsed": round(report.seconds, 3),
                      "results": [r.as_dict() for r in report.results]})
        return report
    llm = [r for r in report.results if r.llm is not None]
    if llm:
        console.table(
            "LLM models", ["model", "rows", "new requests", "answered", "failed", "pending", "cached", "deduplicated"],
            [[r.name, r.llm.rows, r.llm.requests, r.llm.answered, r.llm.status.get("failed", 0),
              r.llm.status.get("pending", 0), r.llm.cached, r.llm.deduplicated]
             for r in llm if r.llm is not None],
        )
    errors = sum(r.status == "error" for r in report.results)
    skipped = sum(r.status == "skipped" for r in report.results)
    console.info(
        f"Done in {report.seconds:.1f}s: {len(report.results) - errors - skipped} ok, {errors} error(s), "
        f"{skipped} skipped."
    )
    return report


def show_model(project: Project, model: str, limit: int, console: Console) -> None:
    """Show a model's table, or an LLM model's `<model>__errors` table."""
    base = model.removesuffix("__errors")
    if base not in project.nodes or (base != model and not project.nodes[base].is_llm):
        names = [*project.nodes, *(f"{n}__errors" for n, node in project.nodes.items() if node.is_llm)]
        raise ConfigError(f"no model named `{model}`.{did_you_mean(model, names)}",
                          hint="`llmt ls` lists the models.")
    wh = open_warehouse(project)
    with wh.connect() as conn:
        if relation_kind(conn, project.schema, model) is None:
            raise ConfigError(f"`{model}` has not been built yet", hint=f"Run `llmt run -s {base}` first.")
        cursor = conn.execute(f"SELECT * FROM {relation(project.schema, model)} LIMIT {int(limit)}")
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    wh.close()
    if console.json_output:
        console.json([dict(zip(columns, r, strict=True)) for r in rows])
    else:
        console.table(f"{model} (first {limit} rows)", columns, rows)




def batch_status(project: Project, console: Console) -> list[dict[str, Any]]:
    """Every open batch with its status, counts, age and expiry; collects nothing."""
    wh = open_warehouse(project)
    driver = make_driver(project, wh, console, new_run_id())
    try:
        rows = driver.describe(driver.open_shards())
    finally:
        driver.provider.close()
        wh.close()
    if console.json_output:
        console.json({"open_batches": rows})
    elif not rows:
        console.info("No open batches.")
    else:
        console.table("Open batches", ["model", "batch", "status", "done", "failed", "requests", "age", "expires in"],
                      [[r["node"], r["batch_id"] or f"({r['shard_id']})", r["status"], r["completed"], r["failed"],
                        r["requests"], _duration(r["age_s"]), _duration(r["expires_in_s"])] for r in rows])
    return rows


def cancel_batches(
    project: Project, select: list[str], console: Console, timeout: float | None
) -> dict[str, int]:
    """Cancel open batches (of the selected LLM models, or all) and collect their partial output."""
    names = set(project.graph.select(select, [])) if select else set(project.nodes)
    wh = open_warehouse(project)
    driver = make_driver(project, wh, console, new_run_id())
    options = pipeline_options(project, LlmOptions())
    try:
        rows = [r for r in driver.open_shards() if r.node in names]
        if not rows:
            console.info("No open batches to cancel.")
            return {}
        console.info(f"Cancelling {len(rows)} batch(es)...")
        counts = driver.cancel(rows, timeout, options.poll_interval, lambda node: batch_dir(project, node))
        for node in sorted({r.node for r in rows} & set(project.nodes)):
            rebuild_output(project, project.nodes[node], build_spec(project, project.nodes[node]), wh)
    finally:
        driver.provider.close()
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
