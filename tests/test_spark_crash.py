"""Crash safety on Spark: `llmt run` on a Spark target killed with SIGKILL at each crash point, then run again.
Spark has no transactions across statements: the run lifecycle is in the state store (a DuckDB file), answers
and attempts are appended to logs in Spark before the shard is marked collected there, and a row appended
twice (a collect killed after its append) is read once. What is checked is test_crash_safety.py's: every row
answered once, no batch created twice, no paid answer lost, nothing left pending.

The killed processes are Spark Connect clients of the tests' server (conftest.py `spark_connect`: a process
that starts a local Spark of its own takes tens of seconds), whose tables the tests' session reads; one kill
is of a process running Spark in local mode, with its catalog in the project."""

from __future__ import annotations

import re
import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest

from llmt.crash import POINTS
from tests.emulator import Emulator, fixtures
from tests.test_crash_safety import (
    AFTER_CREATE,
    IN_PROGRESS,
    REQUESTS,
    ROWS,
    batch_requests,
    crash,
    llmt_run,
    make_project,
)

emulator = fixtures.emulator
LOCAL = ("{type: spark, master: 'local[1]', schema: main, conf: {spark.driver.memory: 512m, spark.ui.enabled: false, "
         "spark.sql.shuffle.partitions: 1, spark.default.parallelism: 1}}")
LOCAL_TIMEOUT = 300  # (a process that starts its own Spark: tens of seconds, more on a busy machine)


def on_spark(root: Path, warehouse: str) -> None:
    yml = root / "project.yml"
    text = yml.read_text(encoding="utf-8")
    assert "openai:\n    warehouse: {path: demo.duckdb}" in text
    yml.write_text(text.replace("openai:\n    warehouse: {path: demo.duckdb}", f"openai:\n    warehouse: {warehouse}"),
                   encoding="utf-8")


def state(root: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(root / "llmt_state.duckdb"), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def killed_and_resumed(root: Path, emu: Emulator, point: str, timeout: float) -> dict[str, str]:
    """Kill a run at ``point``, run again; the batches made before the kill (shard id -> batch id)."""
    emu.step_per_poll = True
    if point == "waiting":
        emu.timing.in_progress = IN_PROGRESS
    crash(root, emu, point, timeout)
    before = {str(b["metadata"]["shard_id"]): str(b["id"]) for b in emu.seen.batches}
    assert bool(before) == (point in AFTER_CREATE)
    if point == "waiting":
        emu.advance(IN_PROGRESS)
        emu.timing.in_progress = 0
    again = llmt_run(root, emu, timeout=timeout)
    assert again.returncode == 0, f"the run after the kill at {point} failed:\n{again.stdout}\n{again.stderr}"
    return before


def check(root: Path, emu: Emulator, before: dict[str, str], query: Any, schema: str) -> None:
    output = f"{schema}.insights"
    assert query(f"SELECT _llmt_status, count(*), count(DISTINCT review_id) FROM {output} GROUP BY 1") == [
        ("ok", ROWS, ROWS)]
    assert query(f"SELECT count(*) FROM {output} WHERE sentiment IS NULL OR score IS NULL") == [(0,)]
    assert state(root, "SELECT count(*) FROM _llmt.shards WHERE status <> 'collected'") == [(0,)]
    keys = sorted(k for (k,) in query(f"SELECT DISTINCT _llmt_request_key FROM {output}"))
    assert len(keys) == REQUESTS
    # the logs: a key's rows appended twice (a collect killed after appending) are the same answer, read once
    logs = f"{schema}_llmt" if schema != "main" else "_llmt"
    answers = query(f"SELECT request_key, count(DISTINCT answer), count(DISTINCT shard_id) FROM {logs}.answers_log "
                    "GROUP BY 1")
    assert sorted(k for k, _, _ in answers) == keys and {(a, s) for _, a, s in answers} == {(1, 1)}
    assert sorted(k for (k,) in query(f"SELECT request_key FROM {logs}.answers")) == keys
    attempts = query(f"SELECT request_key, outcome FROM {logs}.attempts")
    assert sorted(k for k, _ in attempts) == keys and {o for _, o in attempts} == {"ok"}
    # no batch created twice; no request sent or answered twice; the batches made before the kill were found
    assert set(emu.seen.batches_per("shard_id").values()) == {1}
    assert Counter(c for ids in batch_requests(emu).values() for c in ids) == Counter(keys)
    assert emu.seen.answered == Counter(keys)
    after = {str(b["metadata"]["shard_id"]): str(b["id"]) for b in emu.seen.batches}
    assert {shard: after[shard] for shard in before} == before
    assert state(root, "SELECT status, count(*) FROM _llmt.runs GROUP BY 1 ORDER BY 1") == [
        ("interrupted", 1), ("success", 1)]


@pytest.mark.parametrize("point", POINTS)
def test_a_killed_run_on_spark_connect_is_resumed_without_losing_or_repeating_work(
        point: str, emulator: Emulator, tmp_path: Path, spark: Any, spark_connect: str) -> None:
    root = make_project(tmp_path / "demo")
    schema = f"t_{secrets.token_hex(4)}"
    on_spark(root, f"{{type: spark, remote: '{spark_connect}', schema: {schema}, state_schema: {schema}_llmt}}")
    before = killed_and_resumed(root, emulator, point, 60)
    spark.catalog.clearCache()
    check(root, emulator, before, lambda sql: [tuple(r) for r in spark.sql(sql).collect()], schema)


def test_a_killed_run_on_local_spark_is_resumed(emulator: Emulator, tmp_path: Path) -> None:
    """Killed after the answers were appended, before the shard was marked collected: the next process (a Spark of
    its own, its catalog in the project) appends them again, and reads them once. The tables are read from their
    parquet files."""
    root = make_project(tmp_path / "demo")
    on_spark(root, LOCAL)
    before = killed_and_resumed(root, emulator, "after_store", LOCAL_TIMEOUT)

    def parquet(schema: str, table: str) -> str:
        return f"read_parquet('{root / 'spark-warehouse' / (schema + '.db') / table}/*.parquet')"

    relations = {  # what check() reads, from the files (the views' one row per key as DISTINCT)
        "main.insights": parquet("main", "insights"), "_llmt.answers_log": parquet("_llmt", "answers_log"),
        "_llmt.answers": f"(SELECT DISTINCT request_key FROM {parquet('_llmt', 'answers_log')})",
        "_llmt.attempts": f"(SELECT DISTINCT shard_id, request_key, outcome FROM {parquet('_llmt', 'attempts_log')})"}

    def query(sql: str) -> list[tuple[Any, ...]]:
        for name, relation in relations.items():
            sql = re.sub(rf"\b{re.escape(name)}\b", relation, sql)
        return duckdb.sql(sql).fetchall()

    check(root, emulator, before, query, "main")
    assert query("SELECT count(*) FROM _llmt.answers_log") > [(REQUESTS,)]  # appended twice
