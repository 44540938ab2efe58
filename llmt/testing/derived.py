"""Tests derived from an LLM model's output schema, on by default: enum -> accepted_values,
minimum/maximum -> accepted_range, a field that cannot be null -> not_null. They look only at
answered rows (`_llmt_status` ok or stale): pending and failed rows have no answer yet.
Switch them off with the model config `schema_tests: false` (or `+schema_tests: false` in
project.yml for a folder or the whole project)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from llmt.pipeline.spec import build_spec
from llmt.project import Node, Project
from llmt.testing.collect import DataTest, TestConfig, rel_path
from llmt.warehouse.base import quoted

ANSWERED = "_llmt_status IN ('ok', 'stale')"


def derived_tests(project: Project) -> list[DataTest]:
    tests: list[DataTest] = []
    for node in project.nodes.values():
        if node.is_llm and node.config.get("schema_tests", True) is not False:
            spec = build_spec(project, node)
            files = sorted((project.dir / "schemas").glob(f"{spec.schema_name}.*"))
            source = rel_path(project, files[0]) if files else f"schemas/{spec.schema_name}"
            for name, prop in spec.strict_schema["properties"].items():
                tests.extend(_field_tests(node, name, prop, f"{source} ($.properties.{name})"))
    return tests


def _field_tests(node: Node, name: str, prop: dict[str, Any], where: str) -> Iterator[DataTest]:
    nullable, prop = unwrap_field(prop)
    config = TestConfig(where=ANSWERED)

    def test(kind: str, args: dict[str, Any] | None = None, suffix: str = "") -> DataTest:
        return DataTest(f"schema_{kind}_{node.name}_{name}{suffix}", kind, "schema", node.name, where,
                        node.relation, quoted(name), args or {}, config, (node.name,))

    values = [v for v in prop.get("enum", []) if v is not None]
    if values:
        yield test("accepted_values", {"values": values})
    for inclusive, low, high, suffix in ((True, "minimum", "maximum", ""),
                                         (False, "exclusiveMinimum", "exclusiveMaximum", "_exclusive")):
        bounds = {arg: prop[key] for arg, key in (("min_value", low), ("max_value", high)) if key in prop}
        if bounds:
            yield test("accepted_range", {**bounds, "inclusive": inclusive}, suffix)
    if not nullable:
        yield test("not_null")


def unwrap_field(prop: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(whether a strict-schema field accepts null, the schema of its non-null values)."""
    if "anyOf" in prop:
        branches = [b for b in prop["anyOf"] if b.get("type") != "null"]
        nullable = len(branches) < len(prop["anyOf"])
        return nullable, branches[0] if len(branches) == 1 else {}
    types = prop.get("type", [])
    nullable = "null" in (types if isinstance(types, list) else [types]) or None in prop.get("enum", [0])
    return nullable, prop
