"""The state schema's numbered migrations bring an older state up to date without losing rows."""

from __future__ import annotations

from pathlib import Path

import duckdb

from llmt.warehouse.state import LATEST, MIGRATIONS, migrate, migration_sql


def state_at(path: Path, version: int) -> duckdb.DuckDBPyConnection:
    """A database whose state schema is at ``version``."""
    conn = duckdb.connect(str(path))
    conn.execute('CREATE SCHEMA "_llmt"')
    conn.execute('CREATE TABLE "_llmt".schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)')
    for number, sql in MIGRATIONS[:version]:
        conn.execute(migration_sql(conn, sql, '"_llmt"'))
        conn.execute('INSERT INTO "_llmt".schema_version VALUES (?, now())', [number])
    return conn


def test_version_5_keeps_the_stored_answers_and_drops_their_primary_key(tmp_path: Path) -> None:
    conn = state_at(tmp_path / "state.duckdb", 4)
    conn.execute("INSERT INTO _llmt.answers (request_key, answer, model) VALUES ('k1', '{}', 'gpt-4o-mini')")
    assert conn.execute("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'answers'").fetchone() == (2,)

    assert migrate(conn, "_llmt") == LATEST
    assert conn.execute("SELECT request_key, answer, model FROM _llmt.answers").fetchall() == [
        ("k1", "{}", "gpt-4o-mini")]
    # the primary key (and the NOT NULL it implied) is gone; the columns are the same
    assert conn.execute("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'answers'").fetchone() == (0,)
    assert [r[0] for r in conn.execute("DESCRIBE _llmt.answers").fetchall()] == [
        "request_key", "answer", "model", "node", "shard_id", "answered_at", "prompt_tokens", "completion_tokens",
        "cached_tokens"]
    ddl = conn.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'answers'").fetchone()
    assert ddl is not None and "answer VARCHAR USING COMPRESSION ZSTD," in ddl[0]  # a new file's storage has it
    assert migrate(conn, "_llmt") == LATEST  # applied once


def test_version_6_keeps_every_row_and_stores_request_keys_uncompressed(tmp_path: Path) -> None:
    conn = state_at(tmp_path / "state.duckdb", 5)
    conn.execute("INSERT INTO _llmt.answers VALUES ('k1', '{}', 'gpt-4o-mini', 'insights', 's1', "
                 "'2026-01-02 03:04:05', 10, 2, 0)")
    conn.execute("INSERT INTO _llmt.attempts VALUES ('s1', 'k1', 'r1', 'insights', 'gpt-4o-mini', 'ok', 200, NULL, "
                 "NULL, 10, 2, 0, '2026-01-02 03:04:05', 0.0001, true)")
    conn.execute("INSERT INTO _llmt.shard_requests VALUES ('s1', 'k1'), ('s1', 'k2')")
    tables = ("answers", "attempts", "shard_requests")
    before = {t: (conn.execute(f"DESCRIBE _llmt.{t}").fetchall(), conn.execute(f"SELECT * FROM _llmt.{t}").fetchall())
              for t in tables}

    assert migrate(conn, "_llmt") == LATEST
    for table in tables:
        assert (conn.execute(f"DESCRIBE _llmt.{table}").fetchall(),
                conn.execute(f"SELECT * FROM _llmt.{table}").fetchall()) == before[table]
        ddl = conn.execute("SELECT sql FROM duckdb_tables() WHERE table_name = ?", [table]).fetchone()
        assert ddl is not None and "request_key VARCHAR USING COMPRESSION Uncompressed" in ddl[0]
