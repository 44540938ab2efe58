"""Descriptions written to the database as COMMENTs on a model's table or view and on its columns (dbt's
`persist_docs`), so that BI tools show them. On by default; `persist_docs: {relation: false, columns: false}`
in a model's config turns either off, and llmt then leaves those comments alone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmt.compile import quote, relation, sql_string

if TYPE_CHECKING:
    import duckdb

    from llmt.project import Node


@dataclass(frozen=True)
class Docs:
    """What to write: the relation's comment ("" for none) and each described column's; None leaves them alone."""

    relation: str | None = None
    columns: Mapping[str, str] | None = None


def node_docs(node: Node, columns: Mapping[str, str] | None = None) -> Docs:
    """A model's Docs: its description and its columns' from models/*.yml (which win over ``columns``, e.g. the
    descriptions of an output schema's properties), as its `persist_docs` config allows."""
    persist = node.config.get("persist_docs") or {}
    described = {name: text.strip() for name, text in
                 {**(columns or {}), **{c.name: c.description for c in node.columns if c.description}}.items()}
    return Docs(node.description.strip() if persist.get("relation", True) else None,  # (YAML's `>` ends with \n)
                described if persist.get("columns", True) else None)


def persist_docs(conn: duckdb.DuckDBPyConnection, schema: str, name: str, docs: Docs,
                 defaults: Mapping[str, str] | None = None) -> None:
    """Make the comments of ``schema.name`` (a table or a view) what ``docs`` says (a column it does not
    describe gets its text in ``defaults``, else none), writing only those that differ: a run that changed
    nothing writes nothing."""
    if docs.relation is None and docs.columns is None:
        return
    found = conn.execute(
        "SELECT 'TABLE', comment FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = ? "
        "AND table_name = ? UNION ALL SELECT 'VIEW', comment FROM duckdb_views() WHERE database_name = "
        "current_database() AND schema_name = ? AND view_name = ?", [schema, name, schema, name]).fetchone()
    if found is None:
        return
    kind, comment = found
    target = relation(schema, name)
    if docs.relation is not None and (comment or "") != docs.relation:
        conn.execute(f"COMMENT ON {kind} {target} IS {_comment(docs.relation)}")
    if docs.columns is None:
        return
    for column, current in conn.execute(
        "SELECT column_name, comment FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = ? AND table_name = ? ORDER BY column_index", [schema, name]).fetchall():
        wanted = docs.columns.get(str(column)) or (defaults or {}).get(str(column), "")
        if (current or "") != wanted:
            conn.execute(f"COMMENT ON COLUMN {target}.{quote(str(column))} IS {_comment(wanted)}")


def _comment(text: str) -> str:
    return sql_string(text) if text else "NULL"
