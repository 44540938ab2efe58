"""SQL materializations: view, table, incremental (delete+insert on unique_key, or append); then the model's
descriptions as comments (persist_docs)."""

from __future__ import annotations

import duckdb

from llmt.compile import quote
from llmt.errors import NodeError
from llmt.file_sources import columns_hint
from llmt.persist_docs import node_docs, persist_docs
from llmt.project import Node, Project
from llmt.warehouse.duckdb import execute, relation_kind


def materialize_sql(conn: duckdb.DuckDBPyConnection, project: Project, node: Node, full_refresh: bool) -> int | None:
    """Build one SQL model and write its descriptions as comments (caller holds the transaction). Returns rows
    written for tables."""
    read = columns_hint(conn, project, node.sources)  # asked before: an error ends the transaction
    try:
        rows = _build(conn, project, node, full_refresh)
    except NodeError as exc:
        if not read:
            raise
        raise NodeError(exc.message, where=exc.where, hint=f"{exc.hint} {read}" if exc.hint else read) from None
    persist_docs(conn, project.schema, node.name, node_docs(node))
    return rows


def _build(conn: duckdb.DuckDBPyConnection, project: Project, node: Node, full_refresh: bool) -> int | None:
    schema, where = project.schema, node.rel_path
    kind = relation_kind(conn, schema, node.name)
    mat = node.materialized
    if mat == "view":
        if kind == "table":
            conn.execute(f"DROP TABLE {node.relation}")
        execute(conn, f"CREATE OR REPLACE VIEW {node.relation} AS {_select(project.render(node, False))}", where)
        return None
    if kind == "view":
        conn.execute(f"DROP VIEW {node.relation}")
        kind = None
    if mat == "incremental" and kind == "table" and not full_refresh:
        sql = _select(project.render(node, True))
        execute(conn, f"CREATE OR REPLACE TEMP TABLE _llmt_increment AS {sql}", where)
        if node.unique_key:
            keys = ", ".join(quote(k) for k in node.unique_key)
            execute(
                conn,
                f"DELETE FROM {node.relation} WHERE ({keys}) IN (SELECT ({keys}) FROM _llmt_increment)",
                where,
            )
        execute(conn, f"INSERT INTO {node.relation} BY NAME SELECT * FROM _llmt_increment", where)
        row = conn.execute("SELECT count(*) FROM _llmt_increment").fetchone()
        conn.execute("DROP TABLE _llmt_increment")
        return int(row[0]) if row else 0
    execute(conn, f"CREATE OR REPLACE TABLE {node.relation} AS {_select(project.render(node, False))}", where)
    row = conn.execute(f"SELECT count(*) FROM {node.relation}").fetchone()
    return int(row[0]) if row else 0


def _select(sql: str) -> str:
    return sql.strip().rstrip(";")
