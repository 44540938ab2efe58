"""The commands as a user types them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmt.cli import dbt_selection
from tests.conftest import Project

REPO = Path(__file__).resolve().parent.parent


def test_init_scaffolds_a_project_that_runs(
    tmp_path: Path, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = project.llmt("init", "my_project")
    assert result.code == 0, result.err
    root = tmp_path / "my_project"
    for rel in ("project.yml", "models", "prompts", "schemas", "tests", "data", ".gitignore"):
        assert (root / rel).exists(), rel
    gitignore = (root / ".gitignore").read_text()
    assert "target/" in gitignore and "duckdb" in gitignore
    assert "my_project" in (root / "project.yml").read_text()
    scaffolded = Project(root, project.capsys)
    run = scaffolded.llmt("run")
    assert run.code == 0, run.err
    assert project.llmt("init", "my_project").code == 2  # never overwrites


def test_init_rejects_bad_names(tmp_path: Path, project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = project.llmt("init", "my-project!")
    assert result.code == 2 and "not a valid project name" in result.err


def test_compile_shows_sql_and_a_sample_request(project: Project) -> None:
    result = project.llmt("compile")
    assert result.code == 0, result.err
    assert "no sample" in result.out  # nothing built yet
    assert project.llmt("run").code == 0
    result = project.llmt("compile", "-s", "insights")
    assert "-- insights (llm) models/insights.sql" in result.out
    start = result.out.index("{")
    line = json.loads(result.out[start:])
    assert line["url"] == "/v1/chat/completions"
    assert line["body"]["messages"][0] == {"role": "system", "content": "You analyse reviews."}
    assert "Review: Great phone" in line["body"]["messages"][1]["content"]
    assert line["body"]["response_format"]["json_schema"]["strict"] is True


def test_ls_json_in_dag_order(project: Project) -> None:
    result = project.llmt("ls", "--output", "json")
    nodes = json.loads(result.out)
    assert [n["name"] for n in nodes] == ["stg_reviews", "insights"]
    assert nodes[1]["depends_on"] == ["stg_reviews"] and nodes[1]["materialized"] == "llm"


def test_selection_on_run(project: Project) -> None:
    project.write("models/agg.sql", "select sentiment, count(*) as n from {{ ref('insights') }} group by 1\n")
    data = project.run_json("-s", "stg_reviews")
    assert [r["name"] for r in data["results"]] == ["stg_reviews"]
    data = project.run_json("-s", "insights+", "--exclude", "agg")
    assert [r["name"] for r in data["results"]] == ["insights"]
    data = project.run_json("-s", "+agg")
    assert [r["name"] for r in data["results"]] == ["stg_reviews", "insights", "agg"]
    result = project.llmt("run", "-s", "insight")
    assert result.code == 2 and "Did you mean `insights`?" in result.err
    data = project.run_json("-s", "stg_reviews", "agg")  # dbt's `-s a b`
    assert [r["name"] for r in data["results"]] == ["stg_reviews", "agg"]
    listed = json.loads(project.llmt("ls", "--exclude", "stg_reviews", "agg", "--output", "json").out)
    assert [n["name"] for n in listed] == ["insights"]


@pytest.mark.parametrize(("args", "read"), [
    (["run", "-s", "a", "b+", "--exclude", "c", "tag:x", "--full-refresh"],
     ["run", "-s", "a", "-s", "b+", "--exclude", "c", "--exclude", "tag:x", "--full-refresh"]),
    (["ls", "--select", "+a", "-s", "b", "c,d"], ["ls", "--select", "+a", "-s", "b", "-s", "c,d"]),
    (["test", "--select=a", "b", "--exclude=c"], ["test", "--select=a", "--select", "b", "--exclude=c"]),
    (["show", "insights", "-n", "5"], ["show", "insights", "-n", "5"]),
    (["run", "-s", "a", "--project-dir", "x"], ["run", "-s", "a", "--project-dir", "x"]),
])
def test_several_selectors_after_one_option_are_read_as_dbt_reads_them(args: list[str], read: list[str]) -> None:
    assert dbt_selection(args) == read


def test_show(project: Project) -> None:
    project.llmt("run")
    result = project.llmt("show", "insights", "--limit", "2", "--output", "json")
    rows = json.loads(result.out)
    assert len(rows) == 2 and rows[0]["_llmt_status"] == "ok"
    assert project.llmt("show", "insights__errors").code == 0
    missing = project.llmt("show", "insight")
    assert missing.code == 2 and "Did you mean `insights`?" in missing.err


def test_compile_shows_what_the_next_run_builds_of_an_incremental_model(project: Project) -> None:
    project.write(
        "models/inc.sql",
        """
        {{ config(materialized='incremental', unique_key='review_id') }}
        select review_id, review_text from {{ ref('stg_reviews') }}
        {% if is_incremental() %} where review_id > (select max(review_id) from {{ this }}) {% endif %}
        """,
    )
    compiled = project.root / "target" / "compiled" / "models" / "inc.sql"
    result = project.llmt("compile", "-s", "inc")
    assert result.code == 0, result.err
    assert "-- inc (incremental) models/inc.sql: the full build: the table does not exist yet" in result.out
    assert "max(review_id)" not in result.out and "max(review_id)" not in compiled.read_text()
    assert project.llmt("run", "-s", "+inc").code == 0
    result = project.llmt("compile", "-s", "inc")
    assert "models/inc.sql: the incremental branch: the table exists (--full-refresh shows the full build)" \
        in result.out
    assert 'where review_id > (select max(review_id) from "main"."inc")' in result.out
    assert 'from "main"."inc")' in compiled.read_text()  # target/compiled/ holds what was shown
    result = project.llmt("compile", "-s", "inc", "--full-refresh")
    assert "models/inc.sql: the full build (--full-refresh)" in result.out and "max(review_id)" not in result.out


def test_incremental_model_merges_on_unique_key(project: Project) -> None:
    project.write(
        "models/inc.sql",
        """
        {{ config(materialized='incremental', unique_key='review_id') }}
        select review_id, review_text, {{ var('batch', 1) }} as batch from {{ ref('stg_reviews') }}
        {% if is_incremental() %} where review_id >= 3 {% endif %}
        """,
    )
    assert project.llmt("run", "-s", "stg_reviews", "-s", "inc").code == 0
    assert project.llmt("run", "-s", "inc", "--vars", "{batch: 2}").code == 0
    rows = project.query("select review_id, batch from main.inc order by 1")
    assert rows == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert project.llmt("run", "-s", "inc", "--vars", "{batch: 3}", "--full-refresh").code == 0
    assert project.query("select distinct batch from main.inc") == [(3,)]


def test_table_and_view_switch(project: Project) -> None:
    assert project.llmt("run", "-s", "stg_reviews").code == 0
    kind = "select table_type from information_schema.tables where table_name = 'stg_reviews'"
    assert project.query(kind) == [("VIEW",)]
    project.write(
        "models/stg_reviews.sql",
        "{{ config(materialized='table') }}\n"
        "select review_id, product, review_text from {{ source('raw', 'reviews') }}\n",
    )
    assert project.llmt("run", "-s", "stg_reviews").code == 0
    assert project.query(kind) == [("BASE TABLE",)]


@pytest.mark.parametrize("command", ["init", "compile", "ls", "run", "seed", "show", "status", "cancel"])
def test_every_command_has_help_with_an_example(project: Project, command: str) -> None:
    result = project.llmt(command, "--help")
    assert result.code == 0
    assert "Example" in result.out and "llmt " in result.out


def test_python_dash_m_and_progress_lines_when_not_a_terminal(project: Project) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llmt", "run", "--project-dir", str(project.root)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stderr + proc.stdout  # plain lines, no terminal escapes
    assert "insights" in proc.stdout and "ok    insights [llm]" in proc.stderr
