"""How llmt opens a DuckDB file: under the name DuckDB gives it, with small row groups."""

from __future__ import annotations

from pathlib import Path

import duckdb

from llmt.warehouse.duckdb import DuckDBWarehouse as Warehouse
from llmt.warehouse.duckdb_files import ROW_GROUP_ROWS


def _row_groups(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    row = conn.execute(f"SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('{table}')").fetchone()
    return int(row[0]) if row else 0


def test_tables_are_written_in_small_row_groups_under_the_files_own_name(tmp_path: Path) -> None:
    wh = Warehouse("shop.v1.duckdb", tmp_path)
    with wh.transaction():
        assert wh.fetchone("SELECT current_database()") == ("shop",)  # as `duckdb shop.v1.duckdb`
        wh.execute(f"CREATE TABLE main.t AS SELECT range AS i FROM range({ROW_GROUP_ROWS + 1})")
    wh.close()
    with duckdb.connect(str(tmp_path / "shop.v1.duckdb")) as plain:
        assert plain.execute("SELECT count(*) FROM shop.main.t").fetchone() == (ROW_GROUP_ROWS + 1,)
        assert _row_groups(plain, "t") == 2  # DuckDB's default size would make it one


def test_a_file_named_like_the_in_memory_catalog_opens_directly(tmp_path: Path) -> None:
    wh = Warehouse("memory.duckdb", tmp_path)
    with wh.transaction():
        wh.execute("CREATE TABLE main.t AS SELECT 1 AS x")
    wh.close()
    with duckdb.connect(str(tmp_path / "memory.duckdb")) as plain:
        assert plain.execute("SELECT x FROM main.t").fetchall() == [(1,)]
