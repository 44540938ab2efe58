"""A run's verdict on its LLM rows. A model with failed rows says so in its status line (dbt's `warn`), and
it fails the run (exit 1) when their share of its rows is above `max_failed_share` (under `llm:` in
project.yml, in the model's config, or `--max-failed-share`, which wins; default 0.05; 0: any failed row).
Its table is built all the same; pending rows are not failures."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from llmt.providers.synth import FaultPlan
from tests.conftest import Project, example_on_emulator
from tests.emulator import Emulator, fixtures
from tests.test_realtime import ROWS_CSV, set_yaml

emulator = fixtures.emulator
MakeProject = Callable[[dict[str, str]], Project]


@pytest.fixture(autouse=True)
def on_emulator(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)


def run_results(project: Project) -> dict[str, str]:
    data = json.loads((project.root / "target" / "run_results.json").read_text())
    return {r["name"]: r["status"] for r in data["results"]}


def test_a_server_that_answers_plain_text_fails_the_run_and_says_why(example: Project, emulator: Emulator) -> None:
    example_on_emulator(example, poll_interval=0.01)
    emulator.faults.lines = FaultPlan(invalid_json=1.0)  # "Here is the JSON you asked for: ```json ..."
    result = example.llmt("run", "--target", "openai")
    assert result.code == 1, result.err
    [(rows,)] = example.query("select count(*) from main.review_insights")
    assert rows > 100
    assert f"ERROR review_insights [llm] {rows} rows, " in result.err
    why = (f"{rows} of {rows} rows failed (100.0%; invalid_json {rows}), above the default max_failed_share "
           "(0.05): see `llmt show review_insights__errors`")
    assert why in result.err
    assert "skip  product_sentiment (upstream review_insights failed)" in result.err
    summary = result.err[result.err.index("Done in"):]
    assert ": 1 ok, 0 warn, 1 error(s), 1 skipped." in summary and f"ERROR review_insights: {why}" in summary
    assert "Spent $" in result.err and "Simulated" not in result.err  # a real provider's spend
    assert run_results(example) == {"stg_reviews": "success", "review_insights": "error",
                                    "product_sentiment": "skipped"}
    # the table is built with its failed rows, and the hint works
    assert example.query("select distinct _llmt_status from main.review_insights") == [("failed",)]
    shown = example.llmt("show", "review_insights__errors", "--target", "openai", "--output", "json")
    assert shown.code == 0 and {r["reason"] for r in json.loads(shown.out)} == {"invalid_json"}


@pytest.fixture
def one_refused(make_project: MakeProject, emulator: Emulator) -> Project:
    """8 rows sent in realtime, one at a time; the first is refused (final): 1 of 8 rows failed."""
    project = make_project({"data/reviews.csv": ROWS_CSV})
    set_yaml(project, provider="{type: openai, poll_interval: 0.01, concurrency: 1}", llm="\n  mode: realtime")
    emulator.faults.realtime_next("refused")
    return project


def verdict(project: Project, *args: str) -> tuple[int, str, dict[str, Any]]:
    result = project.llmt("run", *args)
    data = json.loads(project.llmt("run", "--output", "json", *args).out)  # the same verdict again, as JSON
    return result.code, result.err, data


def test_failed_rows_warn_within_the_threshold_and_fail_above_it(one_refused: Project) -> None:
    yml = (one_refused.root / "project.yml").read_text()
    one_refused.write("project.yml", yml.replace("max_attempts: 2", "max_attempts: 2\n  max_failed_share: 0.2"))
    code, err, data = verdict(one_refused)
    assert code == 0, err
    assert "WARN  insights [llm] 8 rows, 8 new requests, 7 answered, 1 failed (12.5%) in " in err
    assert ("1 of 8 rows failed (12.5%; refused 1), within max_failed_share under `llm:` in project.yml (0.2): "
            "see `llmt show insights__errors`") in err
    assert ": 1 ok, 1 warn, 0 error(s), 0 skipped." in err
    assert data["statuses"] == {"success": 1, "warn": 1, "error": 0, "skipped": 0}
    assert run_results(one_refused)["insights"] == "warn"

    one_refused.write("models/insights.yml", "models:\n  - name: insights\n    config: {max_failed_share: 0.1}\n")
    code, err, data = verdict(one_refused)  # the model's config wins over the project's
    assert code == 1 and "above max_failed_share of model `insights` (0.1)" in err
    assert data["statuses"]["error"] == 1 and run_results(one_refused)["insights"] == "error"

    code, err, _ = verdict(one_refused, "--max-failed-share", "0.5")  # and the command line over both
    assert code == 0 and "within --max-failed-share (0.5)" in err
    code, err, _ = verdict(one_refused, "--max-failed-share", "0")  # 0: any failed row fails
    assert code == 1 and "above --max-failed-share (0)" in err


def test_a_warned_model_is_still_tested_by_build(one_refused: Project) -> None:
    one_refused.write("models/insights.yml", "models:\n  - name: insights\n    tests: [{row_count: {min: 1}}]\n")
    result = one_refused.llmt("build", "--output", "json", "--max-failed-share", "0.5")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert [n["status"] for n in data["nodes"] if n["name"] == "insights"] == ["warn"]
    assert [t["status"] for t in data["tests"] if t["name"].startswith("row_count")] == ["pass"]


def test_pending_rows_are_not_failures(make_project: MakeProject, emulator: Emulator) -> None:
    project = make_project({})
    set_yaml(project, provider="{type: openai, poll_interval: 0.01}")
    emulator.timing.in_progress = 60
    result = project.llmt("run", "--no-wait", "--max-failed-share", "0")
    assert result.code == 0 and "ok    insights [llm] 4 rows" in result.err, result.err


@pytest.mark.parametrize(
    ("where", "text"),
    [("models/insights.yml", "models:\n  - name: insights\n    config: {max_failed_share: 2}\n"),
     ("project.yml", None)],
)
def test_a_max_failed_share_outside_0_and_1_is_a_config_error(
    one_refused: Project, emulator: Emulator, where: str, text: str | None
) -> None:
    if text is None:
        yml = (one_refused.root / "project.yml").read_text()
        text = yml.replace("max_attempts: 2", "max_attempts: 2\n  max_failed_share: 1.5")
    one_refused.write(where, text)
    result = one_refused.llmt("run")
    assert result.code == 2 and "max_failed_share" in result.err and "Traceback" not in result.err
    assert emulator.seen.realtime == 0
