"""`llmt clean`: target/ goes, except what a later command needs (open batches' files, a warehouse kept there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import TWO_TARGETS, Project, on_postgres

MakeProject = Callable[[dict[str, str]], Project]


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_clean_removes_target(project: Project) -> None:
    assert project.llmt("run").code == 0
    assert {"target/manifest.json", "target/run_results.json"} <= files(project.root)
    result = project.llmt("clean", "--output", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["kept"] == {}
    assert not (project.root / "target").exists()
    assert (project.root / "demo.duckdb").is_file() and (project.root / "logs" / "llmt.log").is_file()
    again = project.llmt("clean")
    assert again.code == 0 and "Removed 0 file(s) from target/." in again.err


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_clean_keeps_the_files_of_open_batches_and_the_next_run_collects_them(
        project: Project, engine: str, request: pytest.FixtureRequest) -> None:
    if engine == "postgres":
        on_postgres(project, request.getfixturevalue("pg"), schema="main")
    env = {**os.environ, "LLMT_CRASH_AT": "waiting"}  # killed while its batch is open (llmt/crash.py)
    killed = subprocess.run([sys.executable, "-m", "llmt", "run", "--project-dir", str(project.root)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == -9, killed.stderr
    open_shards = project.query("select shard_id from _llmt.shards where status = 'submitted'")
    assert open_shards
    result = project.llmt("clean")
    assert result.code == 0, result.err
    left = files(project.root / "target")
    assert "manifest.json" not in left and not any(f.startswith("compiled/") for f in left)
    for (shard_id,) in open_shards:
        assert f"batches/dev/insights/{shard_id}.jsonl" in left
        assert f"kept target/batches/dev/insights/{shard_id}.jsonl: open batch of `insights` (target `dev`): " \
               "the next `llmt run` collects it" in result.err
    assert any(f.startswith("fake_remote/") for f in left)
    assert "kept target/fake_remote: the fake provider's batches: 1 of them are open" in result.err
    data = project.run_json()
    assert project.llm_result(data)["answered"] == 4 and project.llm_result(data)["requests"] == 0
    assert project.query("select count(*) from _llmt.shards where status = 'submitted'") == [(0,)]
    result = project.llmt("clean")
    assert result.code == 0 and not (project.root / "target").exists()


def test_clean_keeps_a_warehouse_kept_in_target(make_project: MakeProject) -> None:
    project = make_project({"project.yml": """
        name: demo
        clean-targets: [target, scratch]
        targets:
          dev:
            warehouse: {path: target/dev.duckdb}
        """})
    project.db = "target/dev.duckdb"
    project.write("scratch/notes.txt", "x")
    assert project.llmt("run").code == 0
    result = project.llmt("clean")
    assert result.code == 0, result.err
    assert "kept target/dev.duckdb: the warehouse of target `dev`" in result.err
    assert files(project.root / "target") == {"dev.duckdb"} and not (project.root / "scratch").exists()
    assert project.query("select count(*) from main.insights") == [(4,)]


def test_clean_keeps_the_batches_of_a_target_whose_state_it_cannot_read(make_project: MakeProject) -> None:
    project = make_project({"project.yml": TWO_TARGETS})
    assert project.llmt("run").code == 0
    (project.root / "other.duckdb").write_text("not a database")
    (project.root / "target" / "batches" / "other").mkdir(parents=True)
    (project.root / "target" / "batches" / "other" / "x.jsonl").write_text("{}")
    result = project.llmt("clean")
    assert result.code == 0, result.err
    assert files(project.root / "target") == {"batches/other/x.jsonl"}
    assert "kept target/batches/other: the batches of target `other`: its state could not be read" in result.err


def test_clean_works_while_a_model_does_not_compile_and_refuses_folders_outside(make_project: MakeProject) -> None:
    project = make_project({"models/broken.sql": "select {{ nope }}\n"})
    (project.root / "target").mkdir()
    (project.root / "target" / "manifest.json").write_text("{}")
    assert project.llmt("clean").code == 0 and not (project.root / "target").exists()
    project.write("project.yml", "name: demo\nclean-targets: ['..']\n")
    result = project.llmt("clean")
    assert result.code == 2 and "`clean-targets` names .., which is not a folder inside the project" in result.err
