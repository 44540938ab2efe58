"""Descriptions written to the database as COMMENTs on a model's table or view and on its columns (dbt's
`persist_docs`), so that BI tools show them. On by default; `persist_docs: {relation: false, columns: false}`
in a model's config turns either off, and llmt then leaves those comments alone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from llmt.project.properties import ColumnProps
    from llmt.warehouse.base import Warehouse


class Described(Protocol):
    """A model or a seed: its config (`persist_docs`), description and described columns."""

    config: dict[str, Any]

    @property
    def description(self) -> str: ...

    @property
    def columns(self) -> list[ColumnProps]: ...


@dataclass(frozen=True)
class Docs:
    """What to write: the relation's comment ("" for none) and each described column's; None leaves them alone."""

    relation: str | None = None
    columns: Mapping[str, str] | None = None


def node_docs(node: Described, columns: Mapping[str, str] | None = None) -> Docs:
    """A model's Docs: its description and its columns' from models/*.yml (which win over ``columns``, e.g. the
    descriptions of an output schema's properties), as its `persist_docs` config allows."""
    persist = node.config.get("persist_docs") or {}
    described = {name: text.strip() for name, text in
                 {**(columns or {}), **{c.name: c.description for c in node.columns if c.description}}.items()}
    return Docs(node.description.strip() if persist.get("relation", True) else None,  # (YAML's `>` ends with \n)
                described if persist.get("columns", True) else None)


def persist_docs(wh: Warehouse, schema: str, name: str, docs: Docs, defaults: Mapping[str, str] | None = None) -> None:
    """Make the comments of ``schema.name`` (a table or a view) what ``docs`` says (a column it does not
    describe gets its text in ``defaults``, else none), writing only those that differ: a run that changed
    nothing writes nothing."""
    if docs.relation is None and docs.columns is None:
        return
    found = wh.comments(schema, name)
    if found is None:
        return
    kind, comment, columns = found
    target = wh.relation(schema, name)
    if docs.relation is not None and (comment or "") != docs.relation:
        wh.set_comment(kind, target, docs.relation or None)
    if docs.columns is None:
        return
    for column, current in columns.items():
        wanted = docs.columns.get(column) or (defaults or {}).get(column, "")
        if (current or "") != wanted:
            wh.set_comment(kind, target, wanted or None, column)
