"""`llmt seed`: the seeds (project/seeds.py) loaded into their tables in bulk, through DuckDB's CSV reader
(Warehouse.load_files), each again only when its file or its config changed since it was loaded (or with
--full-refresh), as file sources are (file_sources.py); then their descriptions as comments. `llmt build`
loads the seeds its models read first."""

from __future__ import annotations

import time

from llmt.artifacts import run_args, write_run_results
from llmt.console import Console, Reporter
from llmt.errors import LlmtError
from llmt.file_sources import FileTable, load_files
from llmt.graph import Graph, GraphNode
from llmt.persist_docs import node_docs, persist_docs
from llmt.project import Project
from llmt.project.seeds import Seed
from llmt.runner import RunReport, new_run_id, node_line, open_warehouse
from llmt.scheduler import NodeResult
from llmt.warehouse.base import Warehouse
from llmt.warehouse.store import StateStore


def seed_names(project: Project, select: list[str], exclude: list[str]) -> list[str]:
    """The seeds ``select`` and ``exclude`` choose, by name (or glob), `tag:` or `path:`; every seed when nothing
    is selected."""
    graph = Graph((GraphNode(s.name, s.rel_path, tuple(s.tags), (), "seed") for s in project.seeds.values()),
                  noun="seed")
    return graph.select(select, exclude)


def load_seeds(wh: Warehouse, project: Project, names: list[str], reporter: Reporter,
               full_refresh: bool = False) -> list[NodeResult]:
    """Load the seeds ``names`` whose files changed (all of them with ``full_refresh``), each in its own
    transaction; a file that cannot be read fails its seed (and not the others)."""
    store = StateStore(wh)
    results = []
    for name in names:
        seed = project.seeds[name]
        started = time.monotonic()
        result = NodeResult(name, "seed", "success", resource_type="seed")
        try:
            with wh.transaction():
                loaded = load_files(wh, store, project.dir, _files(seed), force=full_refresh)
                persist_docs(wh, seed.schema, name, node_docs(seed))
                result.rows = int(wh.scalar(f"SELECT count(*) FROM {wh.relation(seed.schema, name)}") or 0)
        except LlmtError as exc:
            if exc.exit_code == 2:
                raise
            result.status, result.message = "error", exc.render()
        else:
            result.unchanged = not loaded
            result.message = "" if loaded else "unchanged since it was loaded: not loaded again"
        result.seconds = time.monotonic() - started
        results.append(result)
        reporter.info(node_line(result))
    return results


def _files(seed: Seed) -> FileTable:
    return FileTable("seed", seed.name, seed.schema, seed.name, (seed.path,), "read_csv", seed.reader_options(),
                     f"seed `{seed.name}` ({seed.rel_path})", seed.where,
                     "Fix the file, or its seed config (`delimiter`, `column_types`) under `seeds:` in project.yml or "
                     "in a properties file.")


def seed_project(project: Project, select: list[str], exclude: list[str], console: Console,
                 full_refresh: bool = False) -> RunReport:
    """`llmt seed`: load the selected seeds, record the run, write run_results.json and print the outcome."""
    started = time.monotonic()
    names = seed_names(project, select, exclude)
    report = RunReport(new_run_id())
    console.info(f"Loading {len(names)} seed(s) on target `{project.target_name}`")
    wh = open_warehouse(project, console)
    store = StateStore(wh)
    store.start_run(report.run_id, project.name, "seed")
    try:
        report.results = load_seeds(wh, project, names, console, full_refresh)
    finally:
        report.seconds = time.monotonic() - started
        store.finish_run(report.run_id, "error" if report.failed else "success")
        wh.close()
        write_run_results(project, report.run_id, [r.as_dict() for r in report.results], report.seconds, "seed",
                          run_args(project, full_refresh=full_refresh))
    if console.json_output:
        console.json({"run_id": report.run_id, "elapsed": round(report.seconds, 3),
                      "results": [r.as_dict() for r in report.results]})
        return report
    loaded = sum(r.status == "success" and not r.unchanged for r in report.results)
    unchanged = sum(r.unchanged for r in report.results)
    console.info(f"Done in {report.seconds:.1f}s: {loaded} loaded, {unchanged} unchanged, "
                 f"{sum(r.status == 'error' for r in report.results)} error(s).")
    for r in report.results:
        if r.status == "error":
            console.info(f"ERROR {r.name}: " + r.message.replace("\n", "\n  "))
    return report
