"""logs/llmt.log: JSON lines for every command (timings, SQL at debug level, provider calls), rotated by size,
--debug on the terminal, and never a secret."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmt import logs
from tests.conftest import Project, example_on_emulator, on_postgres
from tests.emulator import Emulator
from tests.pg import PgDatabase


def log_lines(project: Project) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (project.root / "logs" / "llmt.log").read_text().splitlines()]


def test_every_command_appends_json_lines_with_timings_sql_and_the_run_id(project: Project) -> None:
    assert project.llmt("run").code == 0
    assert project.llmt("ls").code == 0
    lines = log_lines(project)
    assert all({"ts", "level", "command", "invocation_id", "run_id", "event", "msg"} <= set(e) for e in lines)
    run = [e for e in lines if e["command"] == "run"]
    listing = [e for e in lines if e["command"] == "ls"]
    assert run and listing and run[0]["invocation_id"] != listing[0]["invocation_id"]
    assert [e["msg"] for e in run if e["event"] == "command"] == [
        "llmt run started", *(e["msg"] for e in run if e["event"] == "command" and "ended" in e["msg"])]
    end = run[-1]
    assert end["event"] == "command" and end["exit_code"] == 0 and end["seconds"] > 0
    run_id = json.loads((project.root / "target" / "run_results.json").read_text())["metadata"]["run_id"]
    assert {e["run_id"] for e in run if e["event"] in ("sql", "result")} == {run_id}
    sql = [e for e in run if e["event"] == "sql"]
    assert sql and all(e["level"] == "debug" and e["seconds"] >= 0 for e in sql)
    assert any(e["msg"].startswith('CREATE VIEW "main"."stg_reviews"') for e in sql)
    assert any(e.get("where") == "models/stg_reviews.sql" for e in sql)
    results = {e["unique_id"]: e["status"] for e in run if e["event"] == "result"}
    assert results == {"model.stg_reviews": "success", "model.insights": "success"}
    steps = [e["step"] for e in run if e["event"] == "step"]
    assert "load the project" in steps and "insights: rendering" in steps
    assert any(e["event"] == "console" and e["msg"].startswith("Done in") for e in run)


def test_a_failed_command_logs_its_error_and_exit_code(make_project: Any) -> None:
    project = make_project({"models/bad.sql": "select {{ nope }}\n"})
    assert project.llmt("run").code == 2
    lines = log_lines(project)
    assert any(e["level"] == "error" and e["event"] == "console" and "models/bad.sql:1" in e["msg"] for e in lines)
    assert lines[-1]["exit_code"] == 2 and lines[-1]["level"] == "error"


@pytest.mark.parametrize("args", [("--debug", "run"), ("run", "--debug")])
def test_debug_prints_the_log_on_the_terminal(project: Project, args: tuple[str, ...]) -> None:
    result = project.llmt(*args)
    assert result.code == 0, result.err
    assert ' sql: CREATE VIEW "main"."stg_reviews"' in result.err
    assert " command: llmt run ended with exit code 0" in result.err
    assert result.err.count("Done in") == 1  # what the console says is not repeated
    quiet = project.llmt("run")
    assert " sql: " not in quiet.err and "Done in" in quiet.err


def test_the_log_is_rotated_by_size_keeping_a_few_files(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "MAX_BYTES", 4000)
    for _ in range(8):
        assert project.llmt("run").code == 0
    files = sorted(p.name for p in (project.root / "logs").iterdir())
    assert files == ["llmt.log", *(f"llmt.log.{i}" for i in range(1, logs.BACKUPS + 1))]
    assert all(p.stat().st_size <= 4000 + 4000 for p in (project.root / "logs").iterdir())
    assert all(json.loads(line) for line in (project.root / "logs" / "llmt.log.1").read_text().splitlines())


def test_secrets_never_reach_the_log(example: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API key (from the environment, sent on every provider call), a password in an environment variable,
    and a password in a connection URL and in a key=value DSN that a model's SQL carries."""
    key, password = "sk-proj-Zq81xSecretKeyValue", "hunter2-Pg-Secret"
    api = Emulator(api_key=key, step_per_poll=True).start()  # (a batch takes a few polls: the run waits)
    base_url = api.base_url
    try:
        monkeypatch.setenv("OPENAI_API_KEY", key)
        monkeypatch.setenv("OPENAI_BASE_URL", base_url)
        monkeypatch.setenv("WAREHOUSE_PASSWORD", password)
        example_on_emulator(example, poll_interval=0.001)
        example.write("models/connections.sql", """
            select 'postgresql://app:s3cret-in-url@db.internal:5432/shop' as url,
                   'host=db.internal user=app password=s3cret-in-dsn dbname=shop' as dsn,
                   '{{ env_var("WAREHOUSE_PASSWORD") }}' as from_env
            """)
        result = example.llmt("--debug", "run", "--target", "openai")
        assert result.code == 0, result.err
    finally:
        api.stop()
    text = (example.root / "logs" / "llmt.log").read_text()
    calls = [e for e in log_lines(example) if e["event"] == "provider"]
    made = {(e["method"], e["url"].removeprefix(base_url).split("?")[0], e["status"]) for e in calls}
    assert {("POST", "/files", 200), ("POST", "/batches", 200)} <= made
    assert any(m == "GET" and p.startswith("/batches/batch_") and s == 200 for m, p, s in made)
    assert all(e["level"] == "debug" and e["seconds"] is not None for e in calls)
    assert any(e["event"] == "step" and e["step"] == "waiting for batches" for e in log_lines(example))
    assert "postgresql://app:***@db.internal" in text and "password=***" in text
    for shown in (text, result.err):
        for secret in (key, password, "s3cret-in-url", "s3cret-in-dsn"):
            assert secret not in shown


def test_on_postgresql_the_sql_is_logged_and_the_password_never(project: Project, pg: PgDatabase) -> None:
    """A password given in project.yml (the test server trusts loopback: it is sent and ignored) is scrubbed
    wherever it would appear, here in a model's SQL."""
    password = "pg-Literal-Secret-9"
    on_postgres(project, pg, schema="main", password=password)
    project.write("models/note.sql", f"select '{password}' as note")
    result = project.llmt("--debug", "run")
    assert result.code == 0, result.err
    sql = [e for e in log_lines(project) if e["event"] == "sql"]
    assert any(e["msg"].startswith('CREATE VIEW "main"."stg_reviews"') for e in sql)
    assert any("note" in e["msg"] for e in sql)
    for shown in ((project.root / "logs" / "llmt.log").read_text(), result.err):
        assert password not in shown
