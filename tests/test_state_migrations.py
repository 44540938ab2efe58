"""The state schema's numbered migrations bring an older state up to date without losing rows."""

from __future__ import annotations

from pathlib import Path

import duckdb

from llmt.warehouse.duckdb import DuckDBWarehouse
from llmt.warehouse.state import migrate


def state_at(path: Path, version: int) -> tuple[DuckDBWarehouse, duckdb.DuckDBPyConnection]:
    """A warehouse whose state schema is at ``version``, and its connection."""
    wh = DuckDBWarehouse(str(path), path.parent, state_version=version)
    return wh, wh.connection


def test_version_5_keeps_the_stored_answers_and_drops_their_primary_key(tmp_path: Path) -> None:
    wh, conn = state_at(tmp_path / "state.duckdb", 4)
    conn.execute("INSERT INTO _llmt.answers (request_key, answer, model) VALUES ('k1', '{}', 'gpt-4o-mini')")
    assert conn.execute("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'answers'").fetchone() == (2,)

    assert migrate(wh, "_llmt", upto=6) == 6
    assert conn.execute("SELECT request_key, answer, model FROM _llmt.answers").fetchall() == [
        ("k1", "{}", "gpt-4o-mini")]
    # the primary key (and the NOT NULL it implied) is gone; the columns are the same
    assert conn.execute("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'answers'").fetchone() == (0,)
    assert [r[0] for r in conn.execute("DESCRIBE _llmt.answers").fetchall()] == [
        "request_key", "answer", "model", "node", "shard_id", "answered_at", "prompt_tokens", "completion_tokens",
        "cached_tokens"]
    ddl = conn.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'answers'").fetchone()
    assert ddl is not None and "answer VARCHAR USING COMPRESSION ZSTD," in ddl[0]  # a new file's storage has it
    assert migrate(wh, "_llmt", upto=6) == 6  # applied once


def test_version_6_keeps_every_row_and_stores_request_keys_uncompressed(tmp_path: Path) -> None:
    wh, conn = state_at(tmp_path / "state.duckdb", 5)
    conn.execute("INSERT INTO _llmt.answers VALUES ('k1', '{}', 'gpt-4o-mini', 'insights', 's1', "
                 "'2026-01-02 03:04:05', 10, 2, 0)")
    conn.execute("INSERT INTO _llmt.attempts VALUES ('s1', 'k1', 'r1', 'insights', 'gpt-4o-mini', 'ok', 200, NULL, "
                 "NULL, 10, 2, 0, '2026-01-02 03:04:05', 0.0001, true)")
    conn.execute("INSERT INTO _llmt.shard_requests VALUES ('s1', 'k1'), ('s1', 'k2')")
    tables = ("answers", "attempts", "shard_requests")
    before = {t: (conn.execute(f"DESCRIBE _llmt.{t}").fetchall(), conn.execute(f"SELECT * FROM _llmt.{t}").fetchall())
              for t in tables}

    assert migrate(wh, "_llmt", upto=6) == 6
    for table in tables:
        assert (conn.execute(f"DESCRIBE _llmt.{table}").fetchall(),
                conn.execute(f"SELECT * FROM _llmt.{table}").fetchall()) == before[table]
        ddl = conn.execute("SELECT sql FROM duckdb_tables() WHERE table_name = ?", [table]).fetchone()
        assert ddl is not None and "request_key VARCHAR USING COMPRESSION Uncompressed" in ddl[0]


def test_version_7_records_the_provider_kind_and_makes_every_timestamp_an_instant(tmp_path: Path) -> None:
    wh, conn = state_at(tmp_path / "state.duckdb", 6)
    conn.execute("SET TimeZone = 'America/New_York'")  # the naive times were written in this zone
    at = "'2026-01-02 03:04:05'"
    conn.execute(f"INSERT INTO _llmt.shards (shard_id, provider, created_at, updated_at) VALUES ('sf', 'fake', {at}, "
                 f"{at}), ('so', 'openai', {at}, {at}), ('sr', 'realtime', {at}, {at})")
    for shard in ("sf", "so", "sr"):
        conn.execute(f"INSERT INTO _llmt.answers VALUES ('k{shard}', '{{}}', 'gpt-4o-mini', 'insights', '{shard}', "
                     f"{at}, 10, 2, 0)")
        conn.execute(f"INSERT INTO _llmt.attempts VALUES ('{shard}', 'k{shard}', 'r1', 'insights', 'gpt-4o-mini', "
                     f"'ok', 200, NULL, NULL, 10, 2, 0, {at}, 0.0001, true)")
    conn.execute(f"INSERT INTO _llmt.runs VALUES ('r1', 'demo', 'run', {at}, {at}, 'success')")
    conn.execute(f"INSERT INTO _llmt.eval_runs VALUES ('r1', 'insights', 'h', 'f', 'h', 1, 1, {at})")

    assert migrate(wh, "_llmt", upto=7) == 7
    # fake and openai shards say who answered; realtime shards did not record it (the re-key decides)
    for table in ("answers", "attempts"):
        assert dict(conn.execute(f"SELECT shard_id, provider FROM _llmt.{table}").fetchall()) == {
            "sf": "fake", "so": "openai", "sr": None}
    stamps = conn.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                          "WHERE table_schema = '_llmt' AND data_type LIKE 'TIMESTAMP%' ORDER BY ALL").fetchall()
    assert {(t, c) for t, c, _ in stamps} == {
        ("answers", "answered_at"), ("attempts", "created_at"), ("eval_runs", "created_at"), ("runs", "finished_at"),
        ("runs", "started_at"), ("schema_version", "applied_at"), ("shards", "created_at"), ("shards", "updated_at")}
    assert {d for *_, d in stamps} == {"TIMESTAMP WITH TIME ZONE"}
    utc = "strftime({} AT TIME ZONE 'UTC', '%H:%M:%S')"
    for table, column in (("answers", "answered_at"), ("attempts", "created_at"), ("shards", "updated_at"),
                          ("runs", "started_at"), ("eval_runs", "created_at")):
        assert conn.execute(f"SELECT DISTINCT {utc.format(column)} FROM _llmt.{table}").fetchall() == [("08:04:05",)]
    for table, ddl_part in (("answers", "answer VARCHAR USING COMPRESSION ZSTD"),
                            ("answers", "request_key VARCHAR USING COMPRESSION Uncompressed"),
                            ("attempts", "request_key VARCHAR USING COMPRESSION Uncompressed")):
        ddl = conn.execute("SELECT sql FROM duckdb_tables() WHERE table_name = ?", [table]).fetchone()
        assert ddl is not None and ddl_part in ddl[0]  # the storage chosen by versions 5 and 6 is kept


def test_plan_replays_every_migration_for_a_warehouse_without_state(tmp_path: Path) -> None:
    duckdb.connect(str(tmp_path / "w.duckdb")).close()
    wh = DuckDBWarehouse("w.duckdb", tmp_path, read_only=True)
    try:
        assert wh.fetchall('SELECT provider, answered_at FROM "_llmt".answers') == []
        assert wh.fetchall('SELECT max(version) FROM "_llmt".schema_version') == [(None,)]
        assert wh.fetchall('SELECT kind, name FROM "_llmt".fingerprints') == []
    finally:
        wh.close()


def test_version_9_moves_what_table_comments_recorded_into_the_fingerprints_table(tmp_path: Path) -> None:
    wh, conn = state_at(tmp_path / "state.duckdb", 8)
    conn.execute("CREATE TABLE _llmt.input__insights (x INTEGER)")
    conn.execute("COMMENT ON TABLE _llmt.input__insights IS "
                 ''''llmt-stage {"keys": "llmt-request-v2", "layout": "l"}' ''')
    conn.execute("CREATE TABLE _llmt.source__raw__reviews (x INTEGER)")
    conn.execute('''COMMENT ON TABLE _llmt.source__raw__reviews IS 'llmt-source {"version": 1}' ''')
    conn.execute("CREATE TABLE _llmt.other (x INTEGER)")
    conn.execute("COMMENT ON TABLE _llmt.other IS 'llmt-stage {}'")  # not a staged table: left alone

    assert migrate(wh, "_llmt", upto=9) == 9
    assert conn.execute("SELECT kind, name, value FROM _llmt.fingerprints ORDER BY 1").fetchall() == [
        ("source", "source__raw__reviews", '{"version": 1}'),
        ("stage", "insights", '{"keys": "llmt-request-v2", "layout": "l"}')]
