"""What `llmt compile` shows of the next run: each model's SQL as the run will build it (the incremental
branch or the full build) and one rendered sample request per LLM model. Reads, never writes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from llmt.console import Reporter
from llmt.pipeline.spec import ENDPOINT, LlmSpec
from llmt.project import Node, Project
from llmt.prompts import PromptRenderer
from llmt.warehouse import open_warehouse
from llmt.warehouse.base import DatabaseError, Warehouse


@contextmanager
def warehouse_reader(project: Project, reporter: Reporter) -> Iterator[Warehouse | None]:
    """The target's warehouse, read-only (waiting for a writer's lock), or None when it holds nothing yet (a
    DuckDB file not made yet, or in memory)."""
    config = project.target.warehouse
    if not config.exists(project.dir):
        yield None
        return
    wh = open_warehouse(config, project.dir, reporter, read_only=True, target=project.target_name)
    try:
        yield wh
    finally:
        wh.close()


def next_build(wh: Warehouse | None, project: Project, node: Node, full_refresh: bool) -> tuple[str, str]:
    """(SQL, which build it is) of what the next `llmt run` builds for ``node``: an incremental model's
    incremental branch when its table exists and ``full_refresh`` is not asked for, else the full build."""
    if node.materialized != "incremental":
        return node.compiled_sql, ""
    if full_refresh:
        return node.compiled_sql, "the full build (--full-refresh)"
    if wh is None or wh.relation_kind(node.schema, node.name) != "table":
        return node.compiled_sql, "the full build: the table does not exist yet"
    return project.render(node, True), "the incremental branch: the table exists (--full-refresh shows the full build)"


def sample_request(wh: Warehouse | None, project: Project, node: Node,
                   spec: LlmSpec) -> tuple[dict[str, Any] | None, str]:
    """(request line, "") for the first input row when the warehouse has the upstream tables;
    otherwise (None, why not)."""
    if wh is None:
        return None, "no sample: the warehouse has no data yet (run `llmt run` first)"
    try:
        select = project.render(node, False).strip().rstrip(";")
        cols = ", ".join(wh.quote(c) for c in spec.columns) or "1"
        row = wh.fetchone(f"SELECT {cols} FROM ({select}) AS s LIMIT 1")
    except DatabaseError as exc:
        return None, f"no sample: {exc.detail.strip().splitlines()[0]}"
    if row is None:
        return None, "no sample: the select returns no rows"
    values = dict(zip(spec.columns, row, strict=False)) if spec.columns else {}
    body = {**spec.body_base(), "messages": PromptRenderer(spec.prompt).messages(values)}
    line = {"custom_id": "<request key>", "method": "POST", "url": ENDPOINT, "body": body}
    return line, ""
