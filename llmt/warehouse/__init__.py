"""Warehouses behind one interface (base.py): DuckDB (duckdb.py), PostgreSQL (postgres.py), Spark (spark.py);
llmt's state tables (state.py, store.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmt.console import Reporter
    from llmt.project.config import WarehouseConfig
    from llmt.warehouse.base import Warehouse


# each engine's SQL dialect, by sqlglot's name (known before connecting)
DIALECTS = {"duckdb": "duckdb", "postgres": "postgres", "spark": "spark"}
EXTRAS = {"postgres": ("PostgreSQL", "the PostgreSQL driver"), "spark": ("Spark", "pyspark")}


def dialect(engine: str) -> str:
    return DIALECTS[engine]


def engine_class(engine: str, target: str = "") -> type[Warehouse]:
    """The Warehouse class of an engine (of ``target``), for its SQL hooks that need no connection."""
    if engine in EXTRAS:
        try:
            if engine == "postgres":
                from llmt.warehouse.postgres import PostgresWarehouse

                return PostgresWarehouse
            from llmt.warehouse.spark import SparkWarehouse

            return SparkWarehouse
        except ImportError:
            from llmt.errors import ConfigError

            name, package = EXTRAS[engine]
            raise ConfigError(f"target `{target}` has a {name} warehouse, and {package} is not installed",
                              hint=f"Install it: pip install 'llmt[{engine}]'.") from None
    from llmt.warehouse.duckdb import DuckDBWarehouse

    return DuckDBWarehouse


def open_warehouse(config: WarehouseConfig, project_dir: Path, reporter: Reporter | None = None, *,
                   read_only: bool = False, memory: bool = False, target: str = "", application: str = "llmt"
                   ) -> Warehouse:
    """The warehouse a target's `warehouse:` names (connected on first use). ``read_only``: nothing it does is
    kept (`llmt plan`); ``memory``: a throwaway warehouse of the same engine (DuckDB: in memory; PostgreSQL:
    schemas of its own in a transaction that is rolled back; Spark: a schema of its own, dropped at the end), with
    the target's schemas' roles.
    ``application``: how the server names the connection (PostgreSQL shows it to whoever waits for it)."""
    if config.type == "postgres":
        engine_class("postgres", target)  # a clear error when the driver is not installed
        from llmt.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse(config, target, reporter, read_only=read_only, scratch=memory,
                                 application=application)
    if config.type == "spark":
        engine_class("spark", target)
        from llmt.warehouse.spark import SparkWarehouse

        return SparkWarehouse(config, project_dir, reporter, read_only=read_only, memory=memory, target=target)
    from llmt.warehouse.duckdb import DuckDBWarehouse

    path = ":memory:" if memory else config.path
    return DuckDBWarehouse(path, project_dir, config.schema_, config.state_schema, config.settings,
                           config.lock_timeout, reporter, read_only=read_only)
