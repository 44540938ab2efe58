"""--threads: SQL models built on several PostgreSQL connections at once; one at a time on DuckDB.

Models that must be built at the same time wait, inside PostgreSQL, for an advisory lock the test holds: the test
lets go only once that many builds wait on it at once (which no run building one model at a time reaches), so
what is asserted is that the builds overlapped, never how long anything took. A run that does not overlap them
fails the wait (and is then let go: nothing hangs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest

from tests.conftest import Project, on_postgres
from tests.pg import PgDatabase

GATE = 4217  # the advisory lock the gated models wait for
# a table model that waits for the gate (shared: every gated model goes on once the test lets go)
GATED = f"select {{n}} as id, length(pg_advisory_xact_lock_shared({GATE})::text) as waited\n"
FILES = {
    "models/insights.sql": "",  # SQL models only
    "models/a.sql": "{{ config(materialized='table') }}\n" + GATED.format(n=1),
    "models/b.sql": "{{ config(materialized='table') }}\n" + GATED.format(n=2),
    "models/ab.sql": "{{ config(materialized='table') }}\n"
                       "select id from {{ ref('a') }} union all select id from {{ ref('b') }}\n",
}

MakeProject = Callable[[dict[str, str]], Project]


def start(project: Project, *args: str, crash_at: str | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLMT_"))}
    if crash_at is not None:
        env["LLMT_CRASH_AT"] = crash_at
    return subprocess.Popen([sys.executable, "-m", "llmt", "run", "--project-dir", str(project.root), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=project.root)


def waiting_at_gate(db: PgDatabase) -> int:
    rows = db.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND NOT granted",
                    [GATE])
    return int(rows[0][0])


@contextmanager
def gate(db: PgDatabase) -> Iterator[Callable[[int], None]]:
    """Hold the gate; yields a function that waits until ``n`` builds wait at it at once. The gate is let go at
    the end (a failed wait included)."""
    with psycopg.connect(db.uri, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [GATE])

        def until_waiting(n: int) -> None:
            deadline = time.monotonic() + 30
            while waiting_at_gate(db) < n:
                assert time.monotonic() < deadline, f"{n} builds never waited at the gate at once"
                threading.Event().wait(0.01)

        try:
            yield until_waiting
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [GATE])


def results(project: Project) -> dict[str, dict[str, object]]:
    data = json.loads((project.root / "target" / "run_results.json").read_text())
    return {r["name"]: r for r in data["results"]}


@pytest.fixture
def on_pg(make_project: MakeProject, pg: PgDatabase) -> Project:
    project = on_postgres(make_project(FILES), pg, schema="public", statement_timeout=60)
    return project


def test_ready_sql_models_build_at_once_on_several_postgres_connections(on_pg: Project, pg: PgDatabase) -> None:
    with gate(pg) as until_waiting:
        run = start(on_pg, "--threads", "2")
        until_waiting(2)  # a and b wait at the gate at once: each on a worker connection of its own
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    # the models that read them ran after them; every fingerprint was recorded (by the main thread)
    assert sorted(on_pg.query("SELECT id FROM ab")) == [(1,), (2,)]
    again = on_pg.llmt("run", "--threads", "2")
    assert again.code == 0, again.err
    assert {name for name, r in results(on_pg).items() if r["unchanged"]} >= {"a", "b", "ab"}


def test_the_targets_threads_is_the_default(on_pg: Project, pg: PgDatabase) -> None:
    yml = on_pg.root / "project.yml"
    yml.write_text(yml.read_text().replace("    warehouse:", "    threads: 3\n    warehouse:", 1))
    with gate(pg) as until_waiting:
        run = start(on_pg)
        until_waiting(2)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err


def test_threads_1_builds_one_model_at_a_time_in_order(make_project: MakeProject, pg: PgDatabase) -> None:
    files = {"models/insights.sql": "", **{f"models/m{i}.sql": f"select {i} as id\n" for i in range(6)}}
    project = on_postgres(make_project(files), pg, schema="public")
    with gate(pg):  # (nothing waits at it: a build that did would hang until the gate is let go)
        result = project.llmt("run", "--threads", "1")
    assert result.code == 0, result.err
    built = [line.split()[1] for line in result.err.splitlines() if line.startswith("ok ")]
    assert built == [*(f"m{i}" for i in range(6)), "stg_reviews"]


def test_duckdb_builds_one_model_at_a_time_whatever_threads_says(make_project: MakeProject) -> None:
    files = {"models/insights.sql": "", **{f"models/m{i}.sql": f"select {i} as id\n" for i in range(6)}}
    project = make_project(files)
    result = project.llmt("run", "--threads", "4")
    assert result.code == 0, result.err
    built = [line.split()[1] for line in result.err.splitlines() if line.startswith("ok ")]
    assert built == [*(f"m{i}" for i in range(6)), "stg_reviews"]  # in order: one writer, on the main thread


def test_a_failed_build_on_a_worker_skips_only_its_descendants(make_project: MakeProject, pg: PgDatabase) -> None:
    project = on_postgres(make_project({**FILES, "models/a.sql": "select nonsense from nowhere\n"}), pg,
                          schema="public", statement_timeout=60)
    with gate(pg) as until_waiting:
        run = start(project, "--threads", "2")
        until_waiting(1)  # b waits at the gate while a failed
    _, err = run.communicate(timeout=60)
    assert run.returncode == 1, err
    got = {name: r["status"] for name, r in results(project).items()}
    assert got == {"stg_reviews": "success", "a": "error", "b": "success", "ab": "skipped"}
    assert project.query("SELECT id FROM b") == [(2,)]


def test_fail_fast_waits_for_the_builds_under_way_and_starts_no_other(make_project: MakeProject,
                                                                       pg: PgDatabase) -> None:
    files = {**FILES, "models/a.sql": "select nonsense from nowhere\n", "models/c.sql": "select 3 as id\n"}
    project = on_postgres(make_project(files), pg, schema="public", statement_timeout=60)
    with gate(pg) as until_waiting:
        run = start(project, "--threads", "2", "--fail-fast")
        assert run.stderr is not None
        # a failed on one worker (the run says so; the gated statement's timeout ends a run that never would)...
        assert any(line.startswith("ERROR a [") for line in iter(run.stderr.readline, ""))
        until_waiting(1)  # ... while b builds on the other: c waits for a free worker
    _, err = run.communicate(timeout=60)
    assert run.returncode == 1, err
    got = {name: r["status"] for name, r in results(project).items()}
    # b ended (and was recorded) before the run stopped; nothing started after a failed
    assert got == {"a": "error", "b": "success", "ab": "skipped", "c": "skipped", "stg_reviews": "skipped"}
    assert project.query("SELECT id FROM b") == [(2,)]


def test_a_crash_after_a_workers_build_and_before_its_record_builds_what_reads_it_again(
        make_project: MakeProject, pg: PgDatabase) -> None:
    files = {
        "models/insights.sql": "",
        "models/events.sql": "{{ config(materialized='incremental') }}\n"
                             "select id from src.events {% if is_incremental() %}"
                             "where id > (select max(id) from {{ this }}){% endif %}\n",
        "models/total.sql": "{{ config(materialized='table') }}\nselect count(*) as n from {{ ref('events') }}\n",
    }
    project = on_postgres(make_project(files), pg, schema="public")
    pg.execute("CREATE SCHEMA src")
    pg.execute("CREATE TABLE src.events AS SELECT generate_series(1, 3) AS id")
    assert project.llmt("run", "--threads", "2").code == 0
    pg.execute("INSERT INTO src.events VALUES (4)")
    # killed once the increment (row 4) is committed by its worker, before the main thread records it
    killed = start(project, "--threads", "2", "-s", "events", crash_at="after_build")
    killed.communicate(timeout=60)
    assert killed.returncode == -9
    assert project.query("SELECT count(*) FROM events") == [(4,)]
    # the next increment is empty, and what reads the model is built again all the same
    assert project.llmt("run", "--threads", "2").code == 0
    assert project.query("SELECT n FROM total") == [(4,)]
