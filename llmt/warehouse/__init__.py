"""Warehouses behind one interface (base.py): DuckDB (duckdb.py); llmt's state tables (state.py, store.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmt.console import Reporter
    from llmt.project.config import WarehouseConfig
    from llmt.warehouse.base import Warehouse


DIALECTS = {"duckdb": "duckdb"}  # each engine's SQL dialect, by sqlglot's name (known before connecting)


def dialect(engine: str) -> str:
    return DIALECTS[engine]


def engine_class(engine: str) -> type[Warehouse]:
    """The Warehouse class of an engine, for its SQL hooks that need no connection."""
    from llmt.warehouse.duckdb import DuckDBWarehouse

    return {"duckdb": DuckDBWarehouse}[engine]


def open_warehouse(config: WarehouseConfig, project_dir: Path, reporter: Reporter | None = None, *,
                   read_only: bool = False, memory: bool = False) -> Warehouse:
    """The warehouse a target's `warehouse:` names (connected on first use). ``read_only``: nothing can be
    written to it (`llmt plan`); ``memory``: a throwaway in-memory database of the same engine, with the
    target's schemas."""
    from llmt.warehouse.duckdb import DuckDBWarehouse

    path = ":memory:" if memory else config.path
    return DuckDBWarehouse(path, project_dir, config.schema_, config.state_schema, config.settings,
                           config.lock_timeout, reporter, read_only=read_only)
