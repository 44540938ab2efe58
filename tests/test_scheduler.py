"""How a run proceeds: nodes by readiness, every LLM model's batches in flight at once, polled together.

The emulator's batches wait (`stall_after=0`) until the test lets them go, so what is asserted is which batches
exist while others are still open, never how long anything took (the wall time is benchmarks/parallel.py's)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
import yaml

from tests.conftest import Project, on_postgres
from tests.emulator import Emulator, fixtures
from tests.pg import PgDatabase
from tests.test_crash_safety import status_of
from tests.test_stop import start_run

emulator = fixtures.emulator

OPENAI = "provider: {type: openai, poll_interval: 0.01, timeout: 10}"


def llm_model(prompt: str, source: str, columns: str = "review_id, product, review_text", extra: str = "") -> str:
    return (f"{{{{ config(materialized='llm', prompt='{prompt}', output_schema='analysis', unique_key='review_id'"
            f"{extra}) }}}}\nselect {columns} from {{{{ ref('{source}') }}}}\n")


def prompt(who: str) -> str:
    """A prompt of its own (identical requests of two models would be sent once)."""
    return (f"---\nsystem: You analyse reviews for {who}.\n---\n"
            "Product: {{ product }}\nReview: {{ review_text }}\n")


MakeProject = Callable[[dict[str, str]], Project]


def on_openai(project: Project) -> Path:
    """Give the project an `openai` target (the emulator, through OPENAI_BASE_URL); returns its directory."""
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("provider: {type: fake}", "provider: {type: fake}\n  openai:\n"
                                             "    warehouse: {path: demo.duckdb}\n    " + OPENAI))
    return project.root


def batch_of(emu: Emulator, node: str) -> str:
    [batch_id] = [str(b["id"]) for b in emu.seen.batches if b["metadata"]["node"] == node]
    return batch_id


def outcome(run: subprocess.Popen[str], emu: Emulator) -> None:
    """Every batch let go; the run ends well."""
    for b in emu.seen.batches:
        emu.release(str(b["id"]))
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err


def test_independent_llm_models_have_their_batches_in_flight_at_once(make_project: MakeProject,
                                                                      emulator: Emulator) -> None:
    files = {f"models/{m}.sql": llm_model(m, "stg_reviews") for m in ("a", "b", "c")}
    files.update({f"prompts/{m}.md": prompt(m) for m in ("a", "b", "c")})
    root = on_openai(make_project({**files, "models/insights.sql": ""}))
    for _ in range(3):
        emulator.faults.next_batch(stall_after=0)  # each batch answers nothing until it is let go
    run = start_run(root, emulator, "sk-test")
    try:
        # one model at a time would wait on the first batch forever: all three exist while none has ended
        emulator.wait_for(lambda: len(emulator.seen.batches) == 3, timeout=60)
        assert sorted(b["metadata"]["node"] for b in emulator.seen.batches) == ["a", "b", "c"]
        assert {status_of(emulator, str(b["id"])) for b in emulator.seen.batches} <= {"validating", "in_progress"}
    finally:
        outcome(run, emulator)
    with duckdb.connect(str(root / "demo.duckdb"), read_only=True) as conn:
        for m in ("a", "b", "c"):
            assert conn.execute(f"select _llmt_status, count(*) from main.{m} group by 1").fetchall() == [("ok", 4)]
        # one run, and each model's batch polled in the same loop: a single run row
        assert conn.execute("select count(*), min(status) from _llmt.runs").fetchall() == [(1, "success")]


def test_a_chain_runs_in_order_while_a_sibling_branch_runs_beside_it(make_project: MakeProject,
                                                                     emulator: Emulator) -> None:
    # stg_reviews -> insights (LLM) -> insight_scores (SQL) -> score_notes (LLM); stg_reviews -> sibling (LLM)
    root = on_openai(make_project({
        "models/insight_scores.sql": "{{ config(materialized='table') }}\nselect review_id, product, "
        "'score ' || score as review_text from {{ ref('insights') }} where _llmt_status = 'ok'\n",
        "models/score_notes.sql": llm_model("notes", "insight_scores"),
        "models/sibling.sql": llm_model("sibling", "stg_reviews"),
        "prompts/notes.md": prompt("notes"), "prompts/sibling.md": prompt("the sibling"),
    }))
    for _ in range(2):
        emulator.faults.next_batch(stall_after=0)  # insights' and sibling's batches wait until let go
    run = start_run(root, emulator, "sk-test")
    try:
        emulator.wait_for(lambda: len(emulator.seen.batches) == 2, timeout=60)
        assert sorted(b["metadata"]["node"] for b in emulator.seen.batches) == ["insights", "sibling"]
        emulator.release(batch_of(emulator, "insights"))
        # insights is collected, insight_scores built from its answers, score_notes sends: all while the
        # sibling's batch is still open
        emulator.wait_for(lambda: len(emulator.seen.batches) == 3, timeout=60)
        assert emulator.seen.batches[2]["metadata"]["node"] == "score_notes"
        assert status_of(emulator, batch_of(emulator, "sibling")) == "in_progress"
    finally:
        outcome(run, emulator)
    with duckdb.connect(str(root / "demo.duckdb"), read_only=True) as conn:
        # score_notes read insights' answers (built after them): one request per answered review
        assert conn.execute("select count(*) from main.insight_scores").fetchall() == [(4,)]
        for m in ("insights", "score_notes", "sibling"):
            assert conn.execute(f"select _llmt_status, count(*) from main.{m} group by 1").fetchall() == [("ok", 4)]
    results = json.loads((root / "target" / "run_results.json").read_text())["results"]
    assert [r["name"] for r in results] == ["stg_reviews", "insights", "insight_scores", "score_notes", "sibling"]
    assert {r["status"] for r in results} == {"success"}


BROKEN = "{{ config(materialized='table') }}\nselect 'abc'::int as n\n"


def test_a_failed_model_skips_only_its_descendants(make_project: MakeProject) -> None:
    project = make_project({"models/zz_broken.sql": BROKEN,
                            "models/zz_after.sql": "select * from {{ ref('zz_broken') }}\n"})
    result = project.llmt("run")
    assert result.code == 1
    assert "skip  zz_after (upstream zz_broken failed)" in result.err
    assert project.query("select distinct _llmt_status from main.insights") == [("ok",)]


def test_fail_fast_stops_the_run_at_the_first_failure_and_says_what_is_open(make_project: MakeProject) -> None:
    # in DAG order insights starts (and records its batch) before zz_broken fails
    project = make_project({"models/zz_broken.sql": BROKEN,
                            "models/zz_after.sql": "select * from {{ ref('zz_broken') }}\n"})
    result = project.llmt("run", "--fail-fast")
    assert result.code == 1
    assert "ERROR zz_broken" in result.err
    assert "skip  insights (stopped: --fail-fast: zz_broken failed)" in result.err
    assert ("stopped by --fail-fast: 1 batch(es) still open (insights: 1); they go on at the provider, and the next "
            "`llmt run` collects them") in result.err
    statuses = {r["name"]: r["status"] for r in
                json.loads((project.root / "target" / "run_results.json").read_text())["results"]}
    assert statuses == {"stg_reviews": "success", "insights": "skipped", "zz_broken": "error", "zz_after": "skipped"}
    assert project.query("select count(*) from _llmt.shards where status = 'written'") == [(1,)]
    # nothing was cancelled: the next run collects the batch and sends nothing new
    again = project.llmt("run", "-s", "insights")
    assert again.code == 0, again.err
    assert "insights: resuming 1 open batch(es)" in again.err
    assert project.query("select distinct _llmt_status from main.insights") == [("ok",)]
    assert project.query("select count(*) from _llmt.shards") == [(1,)]


def plans(project: Project) -> dict[str, dict[str, float]]:
    result = project.llmt("plan", "--output", "json")
    assert result.code == 0, result.err
    return {m["model"]: m for m in json.loads(result.out)["models"]}


def test_models_started_together_share_the_run_budget(make_project: MakeProject) -> None:
    project = make_project({"models/insights_b.sql": llm_model("analyse_b", "stg_reviews"),
                            "prompts/analyse_b.md": prompt("the second team")})
    assert project.llmt("run", "-s", "stg_reviews").code == 0
    cost = {name: plan["batch_usd_max"] for name, plan in plans(project).items()}
    # enough for either model, not for both: the second to start sees what the first committed
    result = project.llmt("run", "--max-cost", f"{max(cost.values()) * 1.5:.10f}")
    assert result.code == 1
    assert "`insights_b` would submit" in result.err and "already committed" in result.err
    assert project.query("select distinct node from _llmt.shards") == [("insights",)]
    assert project.query("select distinct _llmt_status from main.insights") == [("ok",)]


def test_what_a_model_holds_back_for_its_escalation_is_not_spent_by_another(make_project: MakeProject) -> None:
    escalate = ", escalate={'model': 'gpt-4o', 'max_share': 0.5}"
    project = make_project({"models/insights.sql": llm_model("analyse", "stg_reviews", extra=escalate),
                            "models/insights_b.sql": llm_model("analyse_b", "stg_reviews"),
                            "prompts/analyse_b.md": prompt("the second team")})
    assert project.llmt("run", "-s", "stg_reviews").code == 0
    plan = plans(project)
    first, held, second = (plan["insights"]["batch_usd_max"], plan["insights"]["escalation_usd_max"],
                           plan["insights_b"]["batch_usd_max"])
    assert held > 0
    # insights with its escalation fits, and so would both models' first rounds, but not all three together
    budget = first + max(held, second) * 1.001
    result = project.llmt("run", "--max-cost", f"{budget:.10f}")
    assert result.code == 1
    assert "`insights_b` would submit" in result.err
    assert f"other models of this run hold ${held:.4f} back for their escalations" in result.err
    assert project.query("select distinct node from _llmt.shards") == [("insights",)]


def test_open_batches_are_shown_as_plain_lines_off_a_terminal(make_project: MakeProject, emulator: Emulator,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    emulator.step_per_poll = True  # each poll moves a batch one stage on: validating, in progress, finalizing
    project = make_project({"models/insights_b.sql": llm_model("analyse_b", "stg_reviews"),
                            "prompts/analyse_b.md": prompt("the second team")})
    on_openai(project)
    result = project.llmt("run", "--target", "openai")
    assert result.code == 0, result.err
    for node in ("insights", "insights_b"):
        batch = batch_of(emulator, node)
        # a line when a batch's status changes: model, batch, status, requests done of all, age
        assert re.search(rf"^  {node} {batch}: in_progress 0/4 \d+m\d\ds$", result.err, re.M), result.err
        assert re.search(rf"^  {node} {batch}: finalizing 4/4 \d+m\d\ds$", result.err, re.M), result.err
        # the view is there while the shard's file is uploaded, before the batch exists
        assert re.search(rf"^  {node} \S+-{node}-0001: uploading 0/4$", result.err, re.M), result.err


def test_other_models_go_on_while_a_model_waits_for_its_realtime_answers(make_project: MakeProject,
                                                                         emulator: Emulator, pg: PgDatabase) -> None:
    project = on_postgres(make_project({
        "models/insights.sql": "", "models/live.sql": llm_model("live", "stg_reviews", extra=", mode='realtime'"),
        "models/bulk.sql": llm_model("bulk", "stg_reviews"), "prompts/live.md": prompt("live"),
        "prompts/bulk.md": prompt("bulk"),
    }), pg, schema="public")
    config = yaml.safe_load((project.root / "project.yml").read_text())
    config["targets"]["dev"]["provider"] = {"type": "openai", "poll_interval": 0.01, "timeout": 10}
    (project.root / "project.yml").write_text(yaml.safe_dump(config))
    held = emulator.faults.hold(path="/v1/chat/completions")  # live's realtime requests wait in the server

    def bulk_collected() -> bool:
        return (pg.query("SELECT to_regclass('_llmt.shards') IS NOT NULL") == [(True,)] and pg.query(
            "SELECT count(*) FROM _llmt.shards WHERE node = 'bulk' AND status = 'collected'") == [(1,)])

    run = start_run(project.root, emulator, "sk-test", target="dev")
    try:
        # while live's requests are on the wire, bulk's batch is polled, collected and its table built
        emulator.wait_for(lambda: held.held > 0 and bulk_collected(), timeout=60)
    finally:
        held.release()
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    for model in ("live", "bulk"):
        assert pg.query(f"SELECT _llmt_status, count(*) FROM {model} GROUP BY 1") == [("ok", 4)]
