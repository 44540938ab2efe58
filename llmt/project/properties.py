"""Properties files (`models/*.yml`): sources, model descriptions, columns, config, tests."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Props(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ColumnProps(Props):
    name: str
    description: str = ""
    data_type: str | None = None
    tests: list[Any] = Field(default_factory=list)
    data_tests: list[Any] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)


class TableProps(Props):
    """What models and source tables share: a description, columns and tests."""

    name: str
    description: str = ""
    columns: list[ColumnProps] = Field(default_factory=list)
    tests: list[Any] = Field(default_factory=list)
    data_tests: list[Any] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)


class ModelProps(TableProps):
    config: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)  # shorthand for config: {tags: [...]}
    evals: dict[str, Any] = Field(default_factory=dict)  # field -> thresholds, checked by llmt.testing.evals


class SeedProps(TableProps):
    config: dict[str, Any] = Field(default_factory=dict)


class SourceTableProps(TableProps):
    identifier: str | None = None
    file: str | None = None  # a path or a glob, relative to the project directory
    options: dict[str, Any] = Field(default_factory=dict)  # handed to DuckDB's reader of the file
    loaded_at_field: str | None = None  # dbt's: a column every load sets (model_state.py signs the table by it)


class SourceProps(Props):
    name: str
    description: str = ""
    schema_: str | None = Field(None, alias="schema")
    loaded_at_field: str | None = None  # the default of its tables
    tables: list[SourceTableProps] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)


class PropertiesFile(Props):
    version: int | None = None
    sources: list[SourceProps] = Field(default_factory=list)
    models: list[ModelProps] = Field(default_factory=list)
    seeds: list[SeedProps] = Field(default_factory=list)
    unit_tests: list[Any] = Field(default_factory=list)
