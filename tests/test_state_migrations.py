"""The state schema's numbered migrations bring an older state up to date without losing rows."""

from __future__ import annotations

from pathlib import Path

import duckdb

from llmt.warehouse.state import LATEST, MIGRATIONS, migrate


def test_version_5_keeps_the_stored_answers_and_drops_their_primary_key(tmp_path: Path) -> None:
    conn = duckdb.connect(str(tmp_path / "state.duckdb"))
    conn.execute('CREATE SCHEMA "_llmt"')
    conn.execute('CREATE TABLE "_llmt".schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)')
    for version, sql in MIGRATIONS[:4]:
        conn.execute(sql.format(s='"_llmt"'))
        conn.execute('INSERT INTO "_llmt".schema_version VALUES (?, now())', [version])
    conn.execute("INSERT INTO _llmt.answers (request_key, answer, model) VALUES ('k1', '{}', 'gpt-4o-mini')")
    assert conn.execute("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'answers'").fetchone() == (2,)

    assert migrate(conn, "_llmt") == LATEST == 5
    assert conn.execute("SELECT request_key, answer, model FROM _llmt.answers").fetchall() == [
        ("k1", "{}", "gpt-4o-mini")]
    # the primary key (and the NOT NULL it implied) is gone; the columns are the same
    assert conn.execute("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'answers'").fetchone() == (0,)
    assert [r[0] for r in conn.execute("DESCRIBE _llmt.answers").fetchall()] == [
        "request_key", "answer", "model", "node", "shard_id", "answered_at", "prompt_tokens", "completion_tokens",
        "cached_tokens"]
    ddl = conn.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'answers'").fetchone()
    assert ddl is not None and "answer VARCHAR USING COMPRESSION ZSTD," in ddl[0]  # a new file's storage has it
    assert migrate(conn, "_llmt") == 5  # applied once
