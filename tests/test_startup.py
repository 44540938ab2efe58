"""Startup work: light commands do not import the run pipeline, and target/parse_cache.bin lets a
project load without compiling unchanged Jinja or parsing unchanged SQL, with the same result."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlglot

import llmt.compile
from llmt.project import Project as LoadedProject
from llmt.project import load_project
from llmt.project.loader import PARSE_CACHE
from tests.conftest import Project, project_yml
from tests.emulator import Emulator, fixtures

MakeProject = Callable[[dict[str, str]], Project]
emulator = fixtures.emulator
REPO = Path(__file__).resolve().parent.parent
HEAVY = ("openai", "duckdb", "tiktoken", "llmt.runner", "llmt.pipeline.llm")

MARTS: dict[str, str] = {
    "models/marts/by_product.sql": """
        {{ config(materialized='table', tags=['nightly']) }}
        {% set columns = ['product', 'count(*) as n'] %}
        select {{ columns | join(', ') }}
        from {{ ref('stg_reviews') }}
        {% if var('only_phones', false) %}where product = 'Phone'{% endif %}
        group by product
        """,
}


def imported_after(code: str, heavy: tuple[str, ...] = (*HEAVY, "sqlglot")) -> set[str]:
    """The modules of ``heavy`` that a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps([m for m in sys.modules]))"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    modules = set(json.loads(proc.stdout.splitlines()[-1]))
    return {m for m in heavy if m in modules}


def snapshot(project: LoadedProject) -> dict[str, Any]:
    return {name: (node.compiled_sql, node.config, node.refs, node.sources) for name, node in project.nodes.items()}


def no_sqlglot_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("sqlglot.parse was called")

    monkeypatch.setattr(sqlglot, "parse", refuse)


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    parsed: list[str] = []
    real = sqlglot.parse

    def spy(sql: str, *args: Any, **kwargs: Any) -> Any:
        parsed.append(sql)
        return real(sql, *args, **kwargs)

    monkeypatch.setattr(sqlglot, "parse", spy)
    return parsed


def test_commands_module_does_not_import_the_run_pipeline() -> None:
    assert imported_after("import llmt.cli, llmt.commands") == set()


def test_ls_with_a_warm_cache_imports_neither_the_pipeline_nor_sqlglot(make_project: MakeProject) -> None:
    project = make_project(MARTS)
    assert project.llmt("ls").code == 0
    assert (project.root / "target" / PARSE_CACHE).is_file()
    code = ("from click.testing import CliRunner\nfrom llmt.cli import cli\n"
            f"result = CliRunner().invoke(cli, ['ls', '--project-dir', {str(project.root)!r}])\n"
            "assert result.exit_code == 0 and 'by_product' in result.output, result.output")
    assert imported_after(code) == set()


def test_a_no_op_run_imports_nothing_that_only_sending_needs(
        make_project: MakeProject, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    project = make_project({"project.yml": project_yml("poll_interval: 0.01")})
    assert project.llmt("run", "--target", "openai").code == 0  # every row answered through the emulator
    code = ("from click.testing import CliRunner\nfrom llmt.cli import cli\n"
            f"result = CliRunner().invoke(cli, ['run', '--target', 'openai', '--project-dir', {str(project.root)!r}])\n"
            "assert result.exit_code == 0 and '0 new requests' in result.output, result.output")
    assert imported_after(code, ("openai", "llmt.pipeline.render", "llmt.pipeline.collect", "llmt.pipeline.realtime",
                                 "llmt.pipeline.embed_lines", "multiprocessing", "urllib.request")) == set()


def test_a_cache_hit_gives_the_same_project_without_parsing(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(MARTS)
    cold = snapshot(load_project(project.root, cli_vars={"only_phones": True}))
    no_sqlglot_parse(monkeypatch)
    warm = load_project(project.root, cli_vars={"only_phones": True})
    assert snapshot(warm) == cold
    assert "where product = 'Phone'" in warm.nodes["by_product"].compiled_sql
    assert warm.render(warm.nodes["by_product"], incremental=True) == warm.nodes["by_product"].compiled_sql


def test_changed_sql_is_parsed_again_and_its_error_located(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(MARTS)
    load_project(project.root)
    parsed = count_parses(monkeypatch)
    load_project(project.root, cli_vars={"only_phones": True})  # by_product renders to new SQL
    assert len(parsed) == 1 and "where product = 'Phone'" in parsed[0]
    project.write("models/stg_reviews.sql", "select review_id,\n  product\n  review_text text\nfrom x\n")
    result = project.llmt("ls")
    assert result.code == 2 and "models/stg_reviews.sql:3" in result.err and "SQL syntax error" in result.err
    project.write("models/marts/by_product.sql", "{{ config(materialized='table') }\nselect 1 as x\n")
    result = project.llmt("ls")
    assert result.code == 2 and "models/marts/by_product.sql:1" in result.err and "Jinja" in result.err


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "empty"])
def test_a_corrupt_cache_is_ignored_and_rewritten(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    project = make_project(MARTS)
    cold = snapshot(load_project(project.root))
    path = project.root / "target" / PARSE_CACHE
    data = path.read_bytes()
    path.write_bytes({"garbage": b"\x00not a cache" * 50, "truncated": data[: len(data) // 2], "empty": b"",
                      "flipped": data[:-40] + bytes([data[-40] ^ 0xFF]) + data[-39:]}[damage])
    parsed = count_parses(monkeypatch)
    assert snapshot(load_project(project.root)) == cold
    assert len(parsed) == len(cold)
    no_sqlglot_parse(monkeypatch)
    assert snapshot(load_project(project.root)) == cold


def test_a_cache_from_another_sqlglot_version_is_not_trusted(
    make_project: MakeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(MARTS)
    load_project(project.root)
    monkeypatch.setattr(llmt.compile, "_sql_version", lambda: (1, "0.0.0-other", "duckdb"))
    parsed = count_parses(monkeypatch)
    load_project(project.root)
    assert len(parsed) == 3


def test_the_cache_keeps_only_what_the_last_load_used(make_project: MakeProject) -> None:
    project = make_project(MARTS)
    load_project(project.root)
    path = project.root / "target" / PARSE_CACHE
    full = path.read_bytes()
    project.remove("models/marts/by_product.sql")
    load_project(project.root)
    smaller = path.read_bytes()
    assert len(smaller) < len(full)
    mtime = path.stat().st_mtime_ns
    load_project(project.root)
    assert path.read_bytes() == smaller and path.stat().st_mtime_ns == mtime  # nothing new: not rewritten


def test_a_target_that_cannot_be_written_does_not_fail_the_load(make_project: MakeProject) -> None:
    project = make_project(MARTS)
    (project.root / "target").write_text("a file where the directory would be\n")
    assert project.llmt("ls").code == 0
    assert project.llmt("ls").code == 0
    assert (project.root / "target").is_file()
