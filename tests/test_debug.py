"""`llmt debug`: each check ok or what to fix; exit code 1 on any failure; the provider's key tried for real
(against the emulator)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llmt.warehouse.duckdb import DuckDBWarehouse
from llmt.warehouse.state import LATEST
from tests.conftest import Project, example_on_emulator, on_postgres
from tests.emulator import Emulator
from tests.pg import PgDatabase

MakeProject = Callable[[dict[str, str]], Project]


def checks(project: Project, *args: str) -> tuple[int, dict[str, Any]]:
    result = project.llmt("debug", "--output", "json", *args)
    data = json.loads(result.out)
    return result.code, {c["name"]: c for c in data["checks"]} | {"ok": data["ok"]}


@pytest.fixture
def keyed() -> Iterator[Emulator]:
    emu = Emulator(api_key="sk-the-right-key").start()
    try:
        yield emu
    finally:
        emu.stop()


def test_debug_on_the_example_passes_and_says_what_it_found(example: Project) -> None:
    result = example.llmt("debug")
    assert result.code == 0, result.out
    lines = result.out.splitlines()
    assert lines[0].startswith("python ") and "llmt " in lines[0] and "duckdb " in lines[0]
    assert lines[1].startswith("ok    project: `reviews`")
    assert "ok    model review_insights: prompt `review_analysis`, output schema `review_analysis`, mode batch; " \
           "gpt-4o-mini at $" in result.out
    assert "does not exist yet: the first `llmt run` creates it" in result.out  # nothing was run
    assert "ok    provider (fake): offline" in result.out and lines[-1] == "All checks passed."
    assert not (example.root / "reviews.duckdb").exists()  # debug writes nothing
    assert example.llmt("run").code == 0
    code, found = checks(example)
    assert code == 0 and "its state is readable: 0 open batch(es)" in found["warehouse (duckdb)"]["detail"]


def test_debug_tries_the_providers_key(example: Project, keyed: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", keyed.base_url)
    example_on_emulator(example)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-right-key")
    code, found = checks(example, "--target", "openai")
    assert code == 0 and found["provider (openai)"]["ok"]
    assert keyed.base_url in found["provider (openai)"]["detail"]
    assert [h[:3] for h in keyed.seen.http] == [("GET", "/v1/batches", 200)]  # one cheap call: listing a batch
    monkeypatch.setenv("OPENAI_API_KEY", "sk-a-wrong-key")
    code, found = checks(example, "--target", "openai")
    provider = found["provider (openai)"]
    assert code == 1 and not found["ok"] and not provider["ok"]
    assert "Incorrect API key provided" in provider["detail"] and "(HTTP 401)" in provider["detail"]
    assert provider["hint"] == "Check OPENAI_API_KEY (or the target's api_key)."
    assert found["warehouse (duckdb)"]["ok"] and found["model review_insights"]["ok"]  # the other checks still ran
    monkeypatch.delenv("OPENAI_API_KEY")
    result = example.llmt("debug", "--target", "openai")
    assert result.code == 1
    assert "FAIL  provider (openai): " in result.out and "environment variable `OPENAI_API_KEY` is not set" \
        in result.out
    assert result.out.splitlines()[-1] == "1 check(s) failed."


def test_debug_says_when_the_provider_cannot_be_reached(example: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = Emulator().start()
    url = gone.base_url
    gone.stop()  # nothing listens there any more
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    example_on_emulator(example)
    code, found = checks(example, "--target", "openai")
    assert code == 1 and "Connection error" in found["provider (openai)"]["detail"]
    assert "base_url" in found["provider (openai)"]["hint"]


def test_debug_fails_on_an_unknown_price_an_old_state_and_a_project_that_does_not_load(
    make_project: MakeProject,
) -> None:
    project = make_project({})
    project.write("models/insights.sql", (project.root / "models" / "insights.sql").read_text().replace(
        "unique_key='review_id'", "unique_key='review_id', model='gpt-nobody-knows'"))
    old = DuckDBWarehouse(str(project.root / "demo.duckdb"), project.root, state_version=8)
    old.execute("SELECT 1")  # opened: its state made, at version 8
    old.close()
    code, found = checks(project)
    assert code == 1
    assert "no price for model `gpt-nobody-knows`" in found["model insights"]["detail"]
    assert "llm: prices:" in found["model insights"]["hint"]
    assert f"is at version 8; this llmt reads version {LATEST}" in found["warehouse (duckdb)"]["detail"]
    assert found["warehouse (duckdb)"]["hint"].startswith("Run `llmt status` once")
    assert found["provider (fake)"]["ok"]
    project.write("models/broken.sql", "select {{ nope }}\n")
    code, found = checks(project)
    assert code == 1 and set(found) == {"project", "ok"}
    assert found["project"]["detail"] == "models/broken.sql:1: 'nope' is undefined"


def test_debug_opens_a_postgresql_warehouse_and_names_one_it_cannot_reach(example: Project, pg: PgDatabase) -> None:
    on_postgres(example, pg, schema="main")
    code, found = checks(example)
    check = found["warehouse (postgres)"]
    assert code == 0 and check["ok"], check
    assert "its state is readable: 0 open batch(es)" in check["detail"] and "postgresql://" in check["detail"]
    on_postgres(example, pg, schema="main", port=1, connect_timeout=1)  # nothing listens there
    code, found = checks(example)
    check = found["warehouse (postgres)"]
    assert code == 1 and not check["ok"] and "cannot connect to the PostgreSQL warehouse" in check["detail"], check
