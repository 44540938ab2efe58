"""target/catalog.json in dbt's shape (nodes and sources, each with its relation's metadata, columns with their
types and comments, and stats), read from the target's warehouse through the Warehouse interface; with, for
LLM models, what the state store knows (rows per status, spend, last run). Relations not built yet are left out,
as dbt leaves them out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from llmt import __version__
from llmt.project import Project
from llmt.warehouse.base import Warehouse
from llmt.warehouse.catalog import row_count, status_counts
from llmt.warehouse.store import StateStore

DBT_CATALOG_SCHEMA = "https://schemas.getdbt.com/dbt/catalog/v1.json"


@dataclass
class Relation:
    """A built relation as the warehouse describes it."""

    schema: str
    name: str
    kind: str  # TABLE | VIEW
    comment: str | None
    columns: list[tuple[str, str, str | None]]  # name, type, comment
    rows: int | None = None  # tables only (counting a view's rows would run it)


@dataclass
class LlmState:
    """What the output table and the state store say of an LLM model."""

    statuses: dict[str, int] = field(default_factory=dict)  # rows per _llmt_status
    spend: dict[str, float] = field(default_factory=dict)  # USD per provider kind
    last_run: dict[str, Any] | None = None

    @property
    def rows(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed_share(self) -> float | None:
        return self.statuses.get("failed", 0) / self.rows if self.rows else None


@dataclass
class Catalog:
    target: str
    nodes: dict[str, Relation] = field(default_factory=dict)  # by unique id: model.<name>, seed.<name>
    sources: dict[str, Relation] = field(default_factory=dict)  # source.<source>.<table>
    llm: dict[str, LlmState] = field(default_factory=dict)  # by model name

    def as_dict(self, invocation_id: str | None) -> dict[str, Any]:
        def entry(uid: str, rel: Relation) -> dict[str, Any]:
            stats: dict[str, Any] = {"has_stats": _stat("has_stats", "Has Stats?", rel.rows is not None,
                                                        "Whether there are statistics for this relation")}
            if rel.rows is not None:
                stats["row_count"] = _stat("row_count", "Row Count", rel.rows, "Rows in the table")
            state = self.llm.get(uid.removeprefix("model."))
            if state is not None:
                for status, n in sorted(state.statuses.items()):
                    stats[f"llmt_{status}_rows"] = _stat(f"llmt_{status}_rows", f"Rows {status}", n,
                                                         f"Rows whose _llmt_status is {status}")
                for provider, usd in state.spend.items():
                    stats[f"llmt_cost_usd_{provider}"] = _stat(
                        f"llmt_cost_usd_{provider}", f"Cost to date ({provider})", round(usd, 6),
                        "USD of every attempt" + (" (simulated: nothing was paid)" if provider == "fake" else ""))
            return {
                "metadata": {"type": rel.kind, "schema": rel.schema, "name": rel.name, "database": None,
                             "comment": rel.comment, "owner": None},
                "columns": {name: {"type": kind, "index": i, "name": name, "comment": comment}
                            for i, (name, kind, comment) in enumerate(rel.columns, start=1)},
                "stats": stats,
                "unique_id": uid,
            }

        return {
            "metadata": {"dbt_schema_version": DBT_CATALOG_SCHEMA, "llmt_version": __version__,
                         "generated_at": datetime.now(UTC).isoformat(), "invocation_id": invocation_id,
                         "target": self.target},
            "nodes": {uid: entry(uid, rel) for uid, rel in self.nodes.items()},
            "sources": {uid: entry(uid, rel) for uid, rel in self.sources.items()},
            "errors": None,
        }


def _stat(key: str, label: str, value: Any, description: str) -> dict[str, Any]:
    return {"id": key, "label": label, "value": value, "include": key != "has_stats", "description": description}


def read_catalog(project: Project, wh: Warehouse | None) -> Catalog:
    """The relations of the project's models and sources that exist in ``wh`` (None: nothing is built)."""
    catalog = Catalog(project.target_name)
    if wh is None:
        return catalog
    store = StateStore(wh)
    for name, node in project.nodes.items():
        schema = node.schema or project.schema
        relation = _describe(wh, schema, name)
        if relation is None:
            continue
        catalog.nodes[f"model.{name}"] = relation
        if node.is_llm:
            catalog.llm[name] = LlmState(status_counts(wh, schema, name), store.model_spend(name),
                                         store.last_run(name))
    for name, seed in project.seeds.items():
        relation = _describe(wh, seed.schema, name)
        if relation is not None:
            catalog.nodes[f"seed.{name}"] = relation
    for (source, table), src in project.sources.items():
        schema, name = src.loaded_table if src.file is not None else (src.schema or project.schema,
                                                                        src.identifier or table)
        relation = _describe(wh, schema, name)
        if relation is not None:
            catalog.sources[f"source.{source}.{table}"] = relation
    return catalog


def _describe(wh: Warehouse, schema: str, name: str) -> Relation | None:
    found = wh.comments(schema, name)
    if found is None:
        return None
    kind, comment, column_comments = found
    columns = wh.describe(f"SELECT * FROM {wh.relation(schema, name)}")
    return Relation(schema, name, "BASE TABLE" if kind == "TABLE" else kind, comment,
                    [(c.name, c.type.name, column_comments.get(c.name)) for c in columns],
                    row_count(wh, schema, name) if kind == "TABLE" else None)
