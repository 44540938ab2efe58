"""`llmt status` looks at one target's batches and says which other targets have batches open (read from
their state; their providers are not asked)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.conftest import Project
from tests.emulator import Emulator, fixtures

emulator = fixtures.emulator
MakeProject = Callable[[dict[str, str]], Project]


@pytest.mark.parametrize("path", ["openai.duckdb", "demo.duckdb"], ids=["own-file", "shared-file"])
def test_status_of_one_target_names_the_open_batches_of_others(
    make_project: MakeProject, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    project = make_project({})
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("llm:", f"""  openai:
    warehouse: {{path: {path}}}
    provider: {{type: openai, base_url: '{emulator.base_url}', poll_interval: 0.01}}
llm:""", 1))
    emulator.timing.in_progress = 3600
    assert project.llmt("run", "--target", "openai", "--no-wait").code == 0

    result = project.llmt("status")  # the default target, dev
    assert result.code == 0, result.err
    assert "No open batches on target `dev`." in result.err
    assert ("Target `openai` has 1 open batch(es) (insights: 1): `llmt status --target openai` shows them."
            in result.err)
    data = json.loads(project.llmt("status", "--output", "json").out)
    assert (data["target"], data["open_batches"]) == ("dev", [])
    assert data["other_targets"] == [{"target": "openai", "warehouse": path, "open_batches": 1,
                                      "models": {"insights": 1}, "error": None}]
    mine = json.loads(project.llmt("status", "--target", "openai", "--output", "json").out)
    assert [b["node"] for b in mine["open_batches"]] == ["insights"]
    assert mine["other_targets"] == [{"target": "dev", "warehouse": "demo.duckdb", "open_batches": 0, "models": {},
                                      "error": None}]
