"""SQL materializations: view, table, incremental (dbt's strategies: append, delete+insert or merge on
unique_key); then the model's descriptions as comments (persist_docs)."""

from __future__ import annotations

from llmt.errors import NodeError
from llmt.file_sources import columns_hint
from llmt.persist_docs import node_docs, persist_docs
from llmt.project import Node, Project
from llmt.warehouse.base import Warehouse


def materialize_sql(wh: Warehouse, project: Project, node: Node, full_refresh: bool, kind: str | None,
                    docs: bool = True) -> int | None:
    """Build one SQL model (``kind``: what its relation is now, 'table', 'view' or None) and, with ``docs``,
    write its descriptions as comments (caller holds the transaction). Returns rows written for tables."""
    read = columns_hint(wh, project, node.sources)  # asked before: an error ends the transaction
    try:
        rows = _build(wh, project, node, full_refresh, kind)
    except NodeError as exc:
        if not read:
            raise
        raise NodeError(exc.message, where=exc.where, hint=f"{exc.hint} {read}" if exc.hint else read) from None
    if docs:
        persist_docs(wh, node.schema, node.name, node_docs(node))
    return rows


def _build(wh: Warehouse, project: Project, node: Node, full_refresh: bool, kind: str | None) -> int | None:
    schema, where = node.schema, node.rel_path
    if kind is None:
        wh.create_schema(schema)
    table = wh.relation(schema, node.name)
    mat = node.materialized
    if mat == "view":
        wh.replace_view(table, _select(project.render(node, False)), kind, where=where)
        return None
    if kind == "view":
        wh.execute(f"DROP VIEW {table}")
        kind = None
    if mat == "incremental" and kind == "table" and not full_refresh:
        increment = wh.temp_table("_llmt_increment", _select(project.render(node, True)), where=where)
        strategy = node.config.get("incremental_strategy") or ("delete+insert" if node.unique_key else "append")
        if strategy != "append" and not node.unique_key:
            raise NodeError(f"incremental_strategy `{strategy}` needs a unique_key", where=where,
                            hint="Set unique_key in the model's config, or use incremental_strategy='append'.")
        try:
            # an empty increment runs no statement (its version stays: model_state.py)
            if increment.rows and strategy == "merge":
                wh.merge(table, increment.name, node.unique_key, where=where)
            elif increment.rows and strategy == "delete+insert":
                wh.delete_insert(table, increment.name, node.unique_key, where=where)
            elif increment.rows:
                wh.insert_by_name(table, increment.name, where=where)
        finally:
            wh.drop_temp(increment)
        return increment.rows
    wh.replace_table(table, _select(project.render(node, False)), kind, where=where)
    return int(wh.scalar(f"SELECT count(*) FROM {table}") or 0)


def _select(sql: str) -> str:
    return sql.strip().rstrip(";")
