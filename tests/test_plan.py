"""`llmt plan` beyond the basics (tests/test_cost.py): requests over a model's context window, the escalation's
upper bound (and the budget gate holding it back), long-context tiers, and planning a project nobody has run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from llmt.cost import RequestLimits, price_table
from llmt.pipeline.render import screen, write_shards
from tests.conftest import Project
from tests.emulator import Emulator, fixtures

emulator = fixtures.emulator
MakeProject = Callable[[dict[str, str]], Project]
HUGE = "lorem ipsum dolor sit amet " * 70_000  # 1.9 MB: far over gpt-4o-mini's 128k-token window


def plan(project: Project, *args: str) -> dict[str, object]:
    result = project.llmt("plan", "--output", "json", *args)
    assert result.code == 0, result.err
    data: dict[str, object] = json.loads(result.out)
    return data


def model_plan(data: dict[str, object], name: str = "insights") -> dict[str, object]:
    models = data["models"]
    assert isinstance(models, list)
    found: dict[str, object] = next(m for m in models if m["model"] == name)
    return found


def with_llm(project: Project, extra: str) -> None:
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("max_attempts: 2", "max_attempts: 2" + extra))


def test_a_request_over_the_context_window_is_a_final_too_long_row_and_never_sent(
    make_project: MakeProject, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    csv = ("review_id,product,review_text\n1,Phone,Great phone\n2,Phone,Battery died\n"
           f"3,Cable,{HUGE}\n4,Cable,Kabel ist kaputt\n")
    project = make_project({"data/reviews.csv": csv})
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("provider: {type: fake}", "provider: {type: openai, poll_interval: 0.01}"))

    result = project.llmt("plan")  # nothing built yet: planned from inputs built in memory
    assert result.code == 0, result.err
    assert "insights: 1 request(s) longer than gpt-4o-mini's context window allows" in result.err
    planned = model_plan(plan(project))
    assert (planned["requests"], planned["too_long"]) == (3, 1)

    result = project.llmt("run")
    assert result.code != 2 and "Traceback" not in result.err, result.err
    assert "1 request(s) too long for gpt-4o-mini's context window" in result.err
    sent = [emulator.file_content(str(b["input_file_id"])).decode() for b in emulator.seen.batches]
    assert sent and sum(len(f.splitlines()) for f in sent) == 3 and not any("lorem ipsum" in f for f in sent)
    [(review_id, reason, detail, attempts)] = project.query(
        "select review_id, reason, detail, attempts from main.insights__errors")
    assert (review_id, reason, attempts) == (3, "too_long", 1)
    tokens = int(detail.split()[0])
    assert tokens > 128_000 and detail == (f"{tokens} input tokens + max_output_tokens 1000 > context window 128000 "
                                           "of gpt-4o-mini")
    assert project.query("select review_id, _llmt_status from main.insights order by 1") == [
        (1, "ok"), (2, "ok"), (3, "failed"), (4, "ok")]
    assert project.query("select prompt_tokens, cost_usd from _llmt.attempts where outcome = 'too_long'") == [(0, 0.0)]
    # final: the next run neither sends it nor records it again
    project.llmt("run")
    assert len(emulator.seen.batches) == 1
    assert project.query("select count(*) from _llmt.attempts where outcome = 'too_long'") == [(1,)]


def test_only_lines_whose_bound_passes_a_limit_are_counted_and_tiers_get_shards_of_their_own(tmp_path: Path) -> None:
    # a line under every limit passes as it is: its data is not even read (here it is not JSON)
    too_long: list[tuple[str, int]] = []
    lines = [("a", b"not json", 100), ("b", b"not json either", 272_000)]
    assert list(screen(lines, RequestLimits(922_000, 272_000), too_long)) == lines and too_long == []
    assert list(screen([("c", b"{}", 900_000)], RequestLimits(100_000, None), too_long, exact=True)) == []
    assert too_long == [("c", 900_000)]

    mixed = [("a", b"1\n", 100), ("b", b"2\n", 300_000), ("c", b"3\n", 200), ("d", b"4\n", 400_000)]
    shards = write_shards(iter(mixed), tmp_path, iter(["s1", "s2", "s3"]), limits=RequestLimits(None, 272_000))
    assert [(s.shard_id, s.n_requests, s.input_tokens, s.largest) for s in shards] == [
        ("s1", 2, 300, 200), ("s2", 2, 700_000, 400_000)]
    assert [s.keys_path.read_text().split() for s in shards] == [["a", "c"], ["b", "d"]]
    table = price_table()
    long_shard = table.estimate("gpt-5.4", requests=2, prompt=700_000, completion=0, batch=True)
    assert long_shard == pytest.approx(700_000 * 5.0 / 1e6 * 0.5)  # the long-context price, at batch


def test_plan_shows_the_escalation_upper_bound_and_counts_it_in_the_totals(project: Project) -> None:
    with_llm(project, "\n  escalate: {model: gpt-4o, max_share: 0.5}")
    assert project.llmt("run", "-s", "stg_reviews").code == 0
    data = plan(project)
    p = model_plan(data)
    # the rule: at most max_share of the rows (2 of 4), each as long as the largest request, with max_output_tokens
    assert (p["requests"], p["escalation_model"], p["escalation_mode"], p["escalation_requests_max"],
            p["escalation_output_tokens_max"]) == (4, "gpt-4o", "batch", 2, 2000)
    assert p["usd_max"] == pytest.approx(p["batch_usd_max"] + p["escalation_usd_max"])  # type: ignore[operator]
    totals = data["totals"]
    assert isinstance(totals, dict)
    assert totals["escalation_usd_max"] == p["escalation_usd_max"] and totals["usd_max"] == p["usd_max"]
    result = project.llmt("plan")
    assert "insights (escalate)" in result.out and "escalations included" in result.err
    assert project.llmt("run").code == 0
    [(largest,)] = project.query("select max(prompt_tokens) from _llmt.attempts where model = 'gpt-4o-mini'")
    assert p["escalation_input_tokens_max"] == 2 * largest
    assert p["escalation_usd_max"] == pytest.approx(
        price_table().estimate("gpt-4o", requests=2, prompt=2 * largest, completion=2000, batch=True))


def test_the_budget_gate_holds_back_the_escalation_bound(project: Project) -> None:
    with_llm(project, "\n  escalate: {model: gpt-4o, max_share: 0.5}")
    assert project.llmt("run", "-s", "stg_reviews").code == 0
    p = model_plan(plan(project))
    own, whole = p["batch_usd_max"], p["usd_max"]
    assert isinstance(own, float) and isinstance(whole, float) and whole > own
    result = project.llmt("run", "--max-cost", f"{own * 1.0001:.10f}")  # the model's own requests fit, not both
    assert result.code == 1 and "held back for escalating up to 2 row(s) to gpt-4o" in result.err
    assert project.query("select count(*) from _llmt.shards") == [(0,)]
    assert project.llmt("run", "--max-cost", f"{whole * 1.0001:.10f}").code == 0


def test_the_escalation_budget_counts_the_escalation_only(make_project: MakeProject, emulator: Emulator,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    csv = "review_id,product,review_text\n" + "".join(f"{i},P{i % 2},review text number {i}\n" for i in range(1, 9))
    project = make_project({"data/reviews.csv": csv})
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("provider: {type: fake}", "provider: {type: openai, poll_interval: 0.01, "
                                            "concurrency: 1}"))
    yml = (project.root / "project.yml").read_text()
    with_llm(project, "\n  mode: realtime\n  escalate: {model: gpt-4o, when: [refused], max_share: 0.125}")
    bound = model_plan(plan(project))["escalation_usd_max"]  # one request: enough for the one escalated row
    assert isinstance(bound, float)
    project.write("project.yml", yml)
    with_llm(project, "\n  mode: realtime\n  escalate: {model: gpt-4o, when: [refused], max_share: 0.125, "
                      f"budget_usd: {bound:.10f}}}")
    emulator.faults.realtime_next("refused")
    result = project.llmt("run")
    assert result.code == 0, result.err  # the primary model's spend is not charged to the escalation's budget
    assert project.query("select count(*) from _llmt.answers where model = 'gpt-4o'") == [(1,)]


def test_plan_works_on_a_project_nobody_has_run(example: Project) -> None:
    data = plan(example)
    assert not (example.root / example.db).exists() and not list(example.root.glob("*.duckdb*"))
    assert not (example.root / "target" / "batches").exists()  # (target/ holds only the parse cache)
    p = model_plan(data, "review_insights")
    ran = example.run_json()  # what a run then finds and sends
    llm = example.llm_result(ran, "review_insights")
    assert (p["rows"], p["new_rows"], p["requests"], p["answered_rows"]) == (llm["rows"], llm["rows"],
                                                                             llm["requests"], 0)
    assert p["input_tokens"] == example.query("select sum(prompt_tokens) from _llmt.attempts")[0][0]


def test_a_model_reading_another_llm_models_answers_is_not_planned_before_it_ran(project: Project) -> None:
    project.write("models/followup.sql", """
        {{ config(materialized='llm', prompt='analyse', output_schema='analysis', unique_key='review_id') }}
        select review_id, product, sentiment as review_text from {{ ref('insights') }}
        """)
    result = project.llmt("plan")
    assert result.code == 0, result.err
    assert "followup: not planned: it reads an LLM model's answers" in result.err
    assert [m["model"] for m in plan(project)["models"]] == ["insights"]  # type: ignore[union-attr]
    assert not (project.root / project.db).exists()
