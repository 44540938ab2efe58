"""What each CLI command does, between loading the project and printing (via the Console)."""

from __future__ import annotations

import json

from llmt.artifacts import write_compiled, write_manifest
from llmt.compile import relation
from llmt.console import Console
from llmt.errors import ConfigError, did_you_mean
from llmt.pipeline.llm import LlmOptions
from llmt.project import Project
from llmt.runner import RunReport, llm_specs, open_warehouse, run
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


