"""PostgreSQL as a warehouse, on a real server (tests/pg.py): the same project, state and guarantees as on
DuckDB. Each test has a database of its own."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from llmt.warehouse.postgres_connect import lock_key
from tests.conftest import Project, on_postgres
from tests.emulator import Emulator, fixtures
from tests.pg import PgDatabase
from tests.test_crash_safety import REQUESTS, ROWS, make_project

emulator = fixtures.emulator

TYPED_SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string"},
        "score": {"type": "integer"},
        "confidence": {"type": "number"},
        "flagged": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "counts": {"type": "array", "items": {"type": "integer"}},
        "detail": {"type": "object", "properties": {"who": {"type": "string"}}, "required": ["who"]},
        "seen_on": {"type": ["string", "null"], "format": "date"},
        "seen_at": {"type": ["string", "null"], "format": "date-time"},
    },
    "required": ["label", "score", "confidence", "flagged", "tags", "counts", "detail", "seen_on", "seen_at"],
}


def same(a: Any, b: Any) -> bool:
    """Values equal across engines: numbers by value (DuckDB's doubles, PostgreSQL's numerics), JSON texts
    parsed."""
    if isinstance(a, float | Decimal) or isinstance(b, float | Decimal):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-12)
    if isinstance(a, str) and isinstance(b, dict | list):
        return bool(json.loads(a) == b)
    return bool(a == b)


def test_the_example_gives_the_same_tables_and_request_keys_on_postgresql_as_on_duckdb(
        example: Project, pg: PgDatabase) -> None:
    assert example.llmt("build").code == 0
    on_duckdb_eval = evaluate(example)
    tables = ("stg_reviews", "review_insights", "product_sentiment")
    # (when each answer was stored differs; everything else is the same)
    select = "SELECT * EXCLUDE (_llmt_answered_at) FROM main.{} ORDER BY 1"
    on_duckdb = {t: example.query(select.format(t) if t == "review_insights" else f"SELECT * FROM main.{t} ORDER BY 1")
                 for t in tables}

    on_postgres(example, pg, schema="reviews")
    built = example.llmt("build")
    assert built.code == 0, built.err + built.out
    for table in tables:
        rows = [r[:-1] if table == "review_insights" else r  # (_llmt_answered_at is the last column)
                for r in example.query(f"SELECT * FROM reviews.{table} ORDER BY 1")]
        assert len(rows) == len(on_duckdb[table]) > 0, table
        for mine, theirs in zip(rows, on_duckdb[table], strict=True):
            assert all(same(a, b) for a, b in zip(mine, theirs, strict=True)), (table, mine, theirs)
    # the same requests: a request key is the same on every engine, and so is every answer
    keys = "SELECT _llmt_request_key FROM {}.review_insights ORDER BY 1"
    assert example.query(keys.format("reviews")) == [tuple(r) for r in
                                                    _duckdb(example, keys.format("main"))]
    # a second run sends nothing; show, test, status and plan work on the server
    again = example.run_json()
    assert example.llm_result(again, "review_insights")["requests"] == 0
    assert example.llmt("show", "product_sentiment").code == 0
    status = json.loads(example.llmt("status", "--output", "json").out)
    assert status["open_batches"] == []
    assert example.llmt("plan").code == 0
    assert evaluate(example) == on_duckdb_eval  # the same answers score the same
    # nothing of the unit tests' scratch schemas is left behind
    assert pg.query("SELECT count(*) FROM pg_namespace WHERE nspname LIKE '_llmt_scratch%'") == [(0,)]


def evaluate(project: Project) -> list[tuple[str, str, float, int]]:
    """`llmt eval`'s metrics of the example's LLM model."""
    data = json.loads(project.llmt("eval", "-s", "review_insights", "--output", "json").out)["evals"][0]
    return [(m["field"], m["metric"], round(m["value"], 9), m["n"]) for m in data["metrics"]]


def _duckdb(project: Project, sql: str) -> list[tuple[Any, ...]]:
    import duckdb

    with duckdb.connect(str(project.root / "reviews.duckdb"), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def test_answers_are_typed_columns_on_postgresql(project: Project, pg: PgDatabase) -> None:
    on_postgres(project, pg)
    project.write("schemas/analysis.json", json.dumps(TYPED_SCHEMA))
    assert project.llmt("run").code == 0
    types = dict(pg.query("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = "
                          "'analytics' AND table_name = 'insights'"))
    assert {c: types[c] for c in TYPED_SCHEMA["properties"]} == {
        "label": "text", "score": "bigint", "confidence": "double precision", "flagged": "boolean",
        "tags": "ARRAY", "counts": "ARRAY", "detail": "jsonb", "seen_on": "date",
        "seen_at": "timestamp with time zone"}
    row = project.query("SELECT label, score, confidence, flagged, tags, counts, detail, seen_on, _llmt_status "
                        "FROM analytics.insights ORDER BY review_id LIMIT 1")[0]
    assert isinstance(row[1], int) and isinstance(row[2], float) and isinstance(row[3], bool)
    assert isinstance(row[4], list) and all(isinstance(n, int) for n in row[5]) and isinstance(row[6], dict)
    assert row[8] == "ok"


def test_an_edited_row_is_asked_again_and_nothing_else(project: Project, pg: PgDatabase) -> None:
    on_postgres(project, pg)
    first = project.run_json()
    assert project.llm_result(first)["requests"] == 4
    project.write("data/reviews.csv", "review_id,product,review_text\n1,Phone,Great phone\n2,Phone,Battery died\n"
                  "3,Cable,Great phone\n4,Cable,Kabel ist heil\n")
    second = project.run_json()
    assert project.llm_result(second)["requests"] == 1
    assert project.query("SELECT review_text, _llmt_status FROM analytics.insights WHERE review_id = 4") == [
        ("Kabel ist heil", "ok")]
    assert project.query("SELECT count(*) FROM _llmt.answers") == [(5,)]


def test_sql_models_incremental_strategies_and_file_sources(project: Project, pg: PgDatabase) -> None:
    on_postgres(project, pg)
    project.write("data/events.csv", "id,kind,at,amount,ok\n1,a,2024-01-02 03:04:05,1.5,true\n2,b,,,\n")
    project.write("models/sources.yml", """
        sources:
          - name: raw
            tables:
              - name: reviews
                file: data/reviews.csv
              - name: events
                file: data/events.csv
        """)
    project.write("models/events_table.sql", "{{ config(materialized='table') }}\n"
                  "select id, kind, at, amount, ok from {{ source('raw', 'events') }}\n")
    project.write("models/events_merge.sql", """
        {{ config(materialized='incremental', unique_key='id', incremental_strategy='merge') }}
        select id, kind from {{ source('raw', 'events') }}
        {% if is_incremental() %} where id >= (select max(id) from {{ this }}) {% endif %}
        """)
    project.write("models/events_append.sql", """
        {{ config(materialized='incremental') }}
        select id, kind from {{ source('raw', 'events') }}
        {% if is_incremental() %} where id > (select max(id) from {{ this }}) {% endif %}
        """)
    assert project.llmt("run", "-s", "events_table", "events_merge", "events_append").code == 0
    columns = dict(pg.query("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = "
                            "'_llmt' AND table_name = 'source__raw__events'"))
    assert columns == {"id": "bigint", "kind": "text", "at": "timestamp without time zone",
                       "amount": "double precision", "ok": "boolean"}
    assert project.query("SELECT * FROM analytics.events_table ORDER BY id")[1] == (2, "b", None, None, None)
    loaded = pg.query("SELECT value FROM _llmt.fingerprints WHERE kind = 'source'")

    changed = project.write("data/events.csv", "id,kind,at,amount,ok\n1,a,2024-01-02 03:04:05,1.5,true\n2,c,,,\n"
                            "3,d,,,\n")
    os.utime(changed, (time.time() - 60, time.time() - 60))  # (a file changed just now is read again: racy)
    assert project.llmt("run", "-s", "events_merge", "events_append").code == 0
    assert project.query("SELECT id, kind FROM analytics.events_merge ORDER BY id") == [(1, "a"), (2, "c"), (3, "d")]
    assert project.query("SELECT id, kind FROM analytics.events_append ORDER BY id") == [(1, "a"), (2, "b"), (3, "d")]
    assert pg.query("SELECT value FROM _llmt.fingerprints WHERE kind = 'source'") != loaded  # reloaded: changed
    reloaded = pg.query("SELECT value FROM _llmt.fingerprints WHERE kind = 'source'")
    assert project.llmt("run", "-s", "events_table").code == 0
    assert pg.query("SELECT value FROM _llmt.fingerprints WHERE kind = 'source'") == reloaded  # unchanged: kept


def test_postgresql_syntax_errors_name_the_file_and_line(project: Project, pg: PgDatabase) -> None:
    on_postgres(project, pg)
    project.write("models/broken.sql", "select\n  review_id,\n  (review_text\nfrom {{ ref('stg_reviews') }}\n")
    result = project.llmt("run", "-s", "broken")
    assert result.code == 2
    assert "models/broken.sql:" in result.err
    # PostgreSQL's dialect is the one models are parsed in: its own syntax is fine
    project.write("models/broken.sql", "select review_id, review_text::text ~* 'phone' as about_phones "
                  "from {{ ref('stg_reviews') }}\n")
    assert project.llmt("run", "-s", "stg_reviews", "broken").code == 0
    assert project.query("SELECT count(*) FROM analytics.broken WHERE about_phones") == [(2,)]


def test_a_view_of_an_output_table_survives_its_rebuild(project: Project, pg: PgDatabase) -> None:
    on_postgres(project, pg)
    project.write("models/positive.sql", "select review_id from {{ ref('insights') }} where sentiment = 'positive'\n")
    assert project.llmt("run").code == 0
    oid = pg.query("SELECT 'analytics.insights'::regclass::oid")
    project.write("prompts/analyse.md", "Product: {{ product }}\nReview, again: {{ review_text }}\n")
    assert project.llmt("run", "-s", "insights").code == 0  # every answer new: the output is rebuilt
    assert pg.query("SELECT 'analytics.insights'::regclass::oid") == oid  # refilled in place, not swapped
    assert project.query("SELECT count(*) FROM analytics.positive") == project.query(
        "SELECT count(*) FROM analytics.insights WHERE sentiment = 'positive'")


def test_realtime_mode_and_the_ledger_on_postgresql(project: Project, pg: PgDatabase) -> None:
    on_postgres(project, pg)
    data = project.run_json("--mode", "realtime")
    assert project.llm_result(data)["answered"] == 4
    assert pg.query("SELECT DISTINCT provider, status FROM _llmt.shards") == [("realtime", "collected")]
    ledger = json.loads(project.llmt("status", "--output", "json").out)
    assert [(e["model"], e["provider"]) for e in ledger["simulated_spend"]] == [("insights", "fake")]


def test_unit_tests_on_postgresql_never_touch_the_targets_tables(project: Project, pg: PgDatabase) -> None:
    on_postgres(project, pg)
    assert project.llmt("run").code == 0
    project.write("models/unit.yml", """
        unit_tests:
          - name: stg_keeps_every_review
            model: stg_reviews
            given:
              - input: source('raw', 'reviews')
                rows:
                  - {review_id: 9, product: X, review_text: hello}
            expect:
              rows:
                - {review_id: 9, product: X, review_text: hello}
        """)
    before = project.query("SELECT count(*) FROM analytics.stg_reviews")
    result = project.llmt("test", "-s", "stg_reviews")
    assert result.code == 0, result.out + result.err
    assert project.query("SELECT count(*) FROM analytics.stg_reviews") == before
    assert pg.query("SELECT count(*) FROM pg_namespace WHERE nspname LIKE '_llmt_scratch%'") == [(0,)]


@pytest.mark.parametrize("problem", ["unreachable", "password", "database", "privilege", "timeout"])
def test_a_bad_target_is_a_clear_error_that_writes_nothing_and_shows_no_password(
        problem: str, project: Project, pg: PgDatabase, tmp_path: Path) -> None:
    from tests.pg import PASSWORD, PASSWORD_USER

    server = pg.server
    warehouse: dict[str, Any] = {}
    if problem == "unreachable":
        dsn = f"postgresql://{PASSWORD_USER}:{PASSWORD}@/{pg.name}?host={tmp_path}"  # no server's socket here
    elif problem == "password":
        dsn = server.uri(pg.name, PASSWORD_USER, "wrong-" + PASSWORD)
    elif problem == "database":
        dsn = server.uri("no_such_database", PASSWORD_USER, PASSWORD)
    elif problem == "privilege":
        pg.execute(f"CREATE ROLE llmt_nobody_{pg.name} LOGIN; CREATE SCHEMA locked; "
                   f"REVOKE CREATE ON SCHEMA public FROM PUBLIC; REVOKE ALL ON DATABASE {pg.name} FROM PUBLIC; "
                   f"GRANT CONNECT ON DATABASE {pg.name} TO llmt_nobody_{pg.name}")
        dsn = server.uri(pg.name, f"llmt_nobody_{pg.name}") + f"&password={PASSWORD}"
        warehouse = {"schema": "locked"}
    else:
        dsn = server.uri(pg.name, PASSWORD_USER, PASSWORD)
        warehouse = {"statement_timeout": 0.2}
        project.write("models/stg_reviews.sql", "select review_id, product, review_text "
                      "from {{ source('raw', 'reviews') }}, pg_sleep(1)\n")
    on_postgres(project, pg, **warehouse)
    config = (project.root / "project.yml").read_text()
    (project.root / "project.yml").write_text(config.replace(pg.uri, dsn))

    result = project.llmt("run")
    assert result.code == 2, result.out + result.err
    assert "target `dev`" in result.err
    expected = {"unreachable": "cannot connect", "password": "password authentication failed",
                "database": "does not exist", "privilege": "permission denied", "timeout": "statement_timeout"}
    assert expected[problem] in result.err
    shown = result.out + result.err + "".join(
        p.read_text(errors="replace") for p in (project.root / "target").rglob("*") if p.is_file())
    assert PASSWORD not in shown
    if problem in ("privilege", "timeout"):  # it connected: nothing half-written
        assert pg.query("SELECT count(*) FROM pg_tables WHERE schemaname IN ('analytics', 'locked')") == [(0,)]


def llmt_process(root: Path, emulator: Emulator, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLMT_"))}
    env.update(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=emulator.base_url)
    return subprocess.Popen([sys.executable, "-m", "llmt", "run", "--project-dir", str(root), "--target", "openai",
                             *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_runs_at_once_never_send_a_request_twice(emulator: Emulator, tmp_path: Path, pg: PgDatabase) -> None:
    emulator.step_per_poll = True  # batches take a few polls: both runs are under way together
    root = make_project(tmp_path / "demo", pg)
    runs = [llmt_process(root, emulator) for _ in range(2)]
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, out + err
    sent = Counter(line["custom_id"] for batch in emulator.seen.batches
                   for line in map(json.loads, emulator.file_content(batch["input_file_id"]).splitlines()))
    assert len(sent) == REQUESTS and set(sent.values()) == {1}, sent
    assert set(emulator.seen.answered.values()) == {1}
    assert pg.query("SELECT _llmt_status, count(*) FROM main.insights GROUP BY 1") == [("ok", ROWS)]


def test_a_run_waits_for_another_llmt_and_names_it(project: Project, pg: PgDatabase) -> None:
    on_postgres(project, pg, lock_timeout=0.3)
    with psycopg.connect(pg.uri, autocommit=True, application_name="llmt run (someone else)") as other:
        other.execute("SELECT pg_advisory_lock(%s)", [lock_key(pg.name, "_llmt")])
        result = project.llmt("run")
        assert result.code == 2
        assert "another llmt command writes to this state ('llmt run (someone else)'" in result.err
        assert "lock_timeout" in result.err
    assert project.llmt("run").code == 0  # let go: the next run goes ahead


def test_readers_never_see_a_half_built_output_table(project: Project, pg: PgDatabase) -> None:
    """A BI tool reads the output table while runs collect answers and rebuild it: it sees the whole table
    before or after, never part of one, and never an error."""
    on_postgres(project, pg)
    rows = 3000
    project.write("data/reviews.csv", "review_id,product,review_text\n" + "".join(
        f"{i},P{i % 7},review number {i}\n" for i in range(rows)))
    assert project.llmt("run").code == 0
    seen: list[tuple[Any, ...]] = []
    failures: list[str] = []
    stop = threading.Event()

    def read() -> None:
        with psycopg.connect(pg.uri, autocommit=True) as reader:
            while not stop.is_set():
                try:
                    seen.append(reader.execute("SELECT count(*), count(DISTINCT review_id), count(sentiment) "
                                               "FROM analytics.insights").fetchone() or ())
                except psycopg.Error as exc:
                    failures.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for version in range(3):  # every request changes: each run collects every row and rebuilds the table
            project.write("prompts/analyse.md", f"Version {version}. Product: {{{{ product }}}}\n"
                          "Review: {{ review_text }}\n")
            assert project.llmt("run").code == 0
    finally:
        stop.set()
        reader.join()
    assert not failures, failures[:3]
    assert seen and set(seen) == {(rows, rows, rows)}, Counter(seen)


def test_the_output_builds_working_table_goes_with_the_build_and_with_a_failed_one(
        project: Project, pg: PgDatabase) -> None:
    """The rows without an answer are held in a table of the state schema while the output is built (parallel
    workers cannot read a temp table): it is dropped when the build ends and rolled back when it fails."""
    on_postgres(project, pg)
    working = ("SELECT count(*) FROM pg_class WHERE relnamespace = '_llmt'::regnamespace "
               "AND relname LIKE '\\_llmt\\_extra%'")
    assert project.llmt("run").code == 0
    assert pg.query(working) == [(0,)]
    before = project.query("SELECT review_id, review_text, _llmt_status FROM analytics.insights ORDER BY 1")
    pg.execute("CREATE VIEW analytics.insights__llmt_new AS SELECT 1 AS x")  # the rebuild's DROP TABLE fails
    project.write("data/reviews.csv", "review_id,product,review_text\n1,Phone,Great phone\n2,Phone,Battery died\n"
                  "3,Cable,Great phone\n4,Cable,Kabel ist heil\n")
    assert project.llmt("run").code != 0
    assert pg.query(working) == [(0,)]
    assert project.query("SELECT review_id, review_text, _llmt_status FROM analytics.insights ORDER BY 1") == before
    pg.execute("DROP VIEW analytics.insights__llmt_new")
    assert project.llmt("run").code == 0
    assert pg.query(working) == [(0,)]
    assert project.query("SELECT review_text, _llmt_status FROM analytics.insights WHERE review_id = 4") == [
        ("Kabel ist heil", "ok")]


def test_answer_fields_that_do_not_cast_read_as_null_and_lists_keep_their_order(pg: PgDatabase) -> None:
    """The output's typed columns from stored answers (`answer_sql`, `answer_field_sql`): an answer stored
    under an older schema shows NULL where its value is not of the column's type, never an error."""
    from llmt.project.config import PostgresConfig
    from llmt.warehouse.postgres import PostgresWarehouse

    fields = {"n": "BIGINT", "x": "DOUBLE", "b": "BOOLEAN", "d": "DATE", "t": "TIMESTAMPTZ", "s": "VARCHAR",
              "tags": ["VARCHAR"], "counts": ["BIGINT"]}
    answers = [
        {"n": 5, "x": 1.5, "b": True, "d": "2024-02-29", "t": "2024-01-02T03:04:05Z", "s": "a",
         "tags": ["z", "a", "m", "b", None, "a"], "counts": [3, 1, 2]},
        {"n": "many", "x": "n/a", "b": "maybe", "d": "soon", "t": "later", "s": 7, "tags": "z,a",
         "counts": [1, "two", 3.0]},
        {"n": "12", "x": "2.5", "tags": [], "counts": None},
        {},
        None,
    ]
    wh = PostgresWarehouse(PostgresConfig(type="postgres", dsn=pg.uri), "test")
    try:
        columns = ", ".join(f"{wh.answer_field_sql('j.a', f, kind)} AS {f}" for f, kind in fields.items())
        rows = wh.fetchall(f"SELECT {columns} FROM (SELECT v.n, {wh.answer_sql('v.a', fields)} AS a FROM "
                           f"unnest(?::text[]) WITH ORDINALITY AS v(a, n) OFFSET 0) j ORDER BY j.n",
                           [[None if a is None else json.dumps(a) for a in answers]])
    finally:
        wh.close()
    day, at = rows[0][3], rows[0][4]
    assert str(day) == "2024-02-29" and at.isoformat() == "2024-01-02T03:04:05+00:00"
    assert [r[:3] + r[5:] for r in rows] == [
        (5, 1.5, True, "a", ["z", "a", "m", "b", None, "a"], [3, 1, 2]),
        (None, None, None, "7", None, [1, None, 3]),
        (12, 2.5, None, None, [], None),
        (None,) * 6,
        (None,) * 6,
    ]
    assert [r[3:5] for r in rows[1:]] == [(None, None)] * 4


def test_storing_into_state_tables_analyzed_empty_never_scans_them_once_per_row(pg: PgDatabase) -> None:
    """A table analyzed while empty (autovacuum after a killed first collect, say) is planned as one row. The
    inserts of attempts and answers not stored yet read the table they fill (NOT EXISTS): as a nested loop,
    they would scan it again for every row while growing it (896k rows ran for over ten minutes). Their plans
    (auto_explain, sent to the client) hash instead."""
    from llmt.project.config import PostgresConfig
    from llmt.warehouse.collecting import ATTEMPT_TYPES, Source, store_attempts
    from llmt.warehouse.postgres import PostgresWarehouse

    rows = 3000
    columns: dict[str, list[Any]] = {name: [None] * rows for name in ATTEMPT_TYPES}
    columns.update(shard_id=["s1"] * rows, request_key=[f"{i:064x}" for i in range(rows)], outcome=["ok"] * rows,
                   answer=['{"label": "x"}'] * rows, prompt_tokens=[1] * rows, completion_tokens=[1] * rows,
                   cached_tokens=[0] * rows, cost_usd=[0.0] * rows)
    wh = PostgresWarehouse(PostgresConfig(type="postgres", dsn=pg.uri), "test")
    try:
        for table in ("attempts", "answers"):
            wh.execute(f"VACUUM ANALYZE {wh.state_table(table)}")
        plans: list[str] = []
        wh.connection.add_notice_handler(lambda notice: plans.append(str(notice.message_primary)))
        wh.execute("LOAD 'auto_explain'")
        wh.execute("SET auto_explain.log_min_duration = 0")
        wh.execute("SET auto_explain.log_level = notice")
        with wh.transaction():
            store_attempts(wh, columns, Source("r1", "m", "gpt", batch=True, provider="fake"))
        inserts = [p for p in plans if "Insert on" in p]
        assert len(inserts) == 2 and not any("Nested Loop" in p for p in inserts), inserts
        assert wh.fetchall(f"SELECT count(*) FROM {wh.state_table('answers')}") == [(rows,)]
        assert wh.scalar("SHOW enable_nestloop") == "on"  # (for the statements after them)
    finally:
        wh.close()


def test_rows_reconciled_in_duckdb_reach_postgresql_exactly_and_a_failure_on_either_side_fails_the_load(
        pg: PgDatabase) -> None:
    """`load_from`: DuckDB writes CSV into a pipe while COPY reads it. Texts (empty, NULL, quotes, newlines,
    commas, not ASCII), integers and doubles arrive as they were; an error of DuckDB half-way, or of the
    server (on a row, or before any), is raised (neither side is left waiting for the other) and the
    transaction keeps nothing."""
    from llmt.project.config import PostgresConfig
    from llmt.warehouse.base import DatabaseError
    from llmt.warehouse.duckdb import scratch
    from llmt.warehouse.postgres import PostgresWarehouse

    texts = ["", None, 'say "hi", then\nleave', "é ☃ \\N \t", "x" * 70_000]
    wh = PostgresWarehouse(PostgresConfig(type="postgres", dsn=pg.uri), "test")
    try:
        with scratch() as duck:
            duck.execute("CREATE TABLE r AS SELECT i, ([?, ?, ?, ?, ?])[i % 5 + 1] AS s, i / 7 AS x "
                         "FROM range(200000) t(i)", texts)
            expected = duck.fetchall("SELECT i, s, x FROM r ORDER BY i")
            wh.execute("CREATE TABLE moved (i bigint, s text, x double precision)")
            with wh.transaction():
                wh.load_from("moved", duck, "SELECT i, s, x FROM r")
                assert wh.fetchall("SELECT i, s, x FROM moved ORDER BY i") == expected
                wh.execute("DELETE FROM moved")
            with pytest.raises(DatabaseError, match="half-way"), wh.transaction():
                wh.load_from("moved", duck, "SELECT i, s, CASE WHEN i = 150000 THEN error('half-way') END FROM r")
            with pytest.raises(DatabaseError, match="invalid input syntax for type bigint"), wh.transaction():
                wh.load_from("moved", duck, "SELECT s, s, x FROM r WHERE i > 0")
            with pytest.raises(DatabaseError, match="no_such_table"), wh.transaction():  # (before DuckDB writes)
                wh.load_from("no_such_table", duck, "SELECT i, s, x FROM r")
            assert wh.scalar("SELECT count(*) FROM moved") == 0
    finally:
        wh.close()
