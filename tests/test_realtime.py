"""Realtime mode, auto mode, cascades and canaries, against the emulator's chat completions."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest

from llmt.pipeline import realtime
from llmt.pipeline.context import Limits
from llmt.pipeline.realtime import RateLimiter
from tests.conftest import Project, as_from_a_terminal, on_postgres
from tests.emulator import Emulator, fixtures

emulator = fixtures.emulator
MakeProject = Callable[[dict[str, str]], Project]
CHAT = "/v1/chat/completions"

ROWS_CSV = "review_id,product,review_text\n" + "".join(f"{i},P{i % 2},review text number {i}\n" for i in range(1, 9))


@pytest.fixture(params=["duckdb", "postgres"])
def rt(request: pytest.FixtureRequest, make_project: MakeProject, emulator: Emulator,
       monkeypatch: pytest.MonkeyPatch) -> Project:
    """8 distinct requests, an openai target on the emulator (its warehouse DuckDB's file, or a database on the
    PostgreSQL server); `mode` set per test in project.yml."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    project = make_project({"data/reviews.csv": ROWS_CSV})
    if request.param == "postgres":
        on_postgres(project, request.getfixturevalue("pg"), schema="main")
    set_yaml(project, provider="{type: openai, poll_interval: 0.01, concurrency: 3, max_retries: 4}")
    return project


def set_yaml(project: Project, provider: str | None = None, llm: str = "") -> None:
    yml = (project.root / "project.yml").read_text()
    if provider is not None:
        yml = yml.split("    provider:")[0] + f"    provider: {provider}\n" + yml[yml.index("llm:"):]
    project.write("project.yml", yml.replace("max_attempts: 2", "max_attempts: 2" + llm))


def models(project: Project) -> dict[str, int]:
    return dict(project.query("select _llmt_model, count(*) from main.insights group by 1"))


def test_realtime_mode_answers_through_chat_completions_with_bounded_concurrency(
    rt: Project, emulator: Emulator
) -> None:
    emulator.realtime_delay = 0.05  # requests overlap, so the bound is what keeps them at 3
    set_yaml(rt, llm="\n  mode: realtime")
    data = rt.run_json()
    llm = rt.llm_result(data)
    assert llm["requests"] == 8 and llm["answered"] == 8
    assert emulator.seen.batches == [] and emulator.seen.realtime == 8
    assert 1 < emulator.seen.realtime_max_in_flight <= 3
    assert rt.query("select distinct _llmt_status from main.insights") == [("ok",)]
    # recorded like batch answers, priced at live prices
    rows = rt.query("select batch, count(*), min(cost_usd) > 0 from _llmt.attempts group by 1")
    assert rows == [(False, 8, True)]
    assert rt.query("select provider, status from _llmt.shards") == [("realtime", "collected")]
    assert set(emulator.seen.realtime_answered.values()) == {1}
    assert rt.llm_result(rt.run_json())["requests"] == 0  # a re-run sends nothing


def test_realtime_honours_retry_after_and_retries_server_errors(rt: Project, emulator: Emulator) -> None:
    set_yaml(rt, llm="\n  mode: realtime")
    emulator.faults.rate_limit_next(3, retry_after=0.01, path=CHAT)
    emulator.faults.server_error_next(2, path=CHAT, retry_after=0.01)
    assert rt.llmt("run").code == 0
    statuses = [h[2] for h in emulator.seen.requests("POST", CHAT)]
    assert statuses.count(429) == 3 and statuses.count(500) == 2 and statuses.count(200) == 8
    assert rt.query("select outcome, count(*) from _llmt.attempts group by 1") == [("ok", 8)]


def test_realtime_outcomes_are_classified_like_batch_lines(rt: Project, emulator: Emulator) -> None:
    set_yaml(rt, provider="{type: openai, poll_interval: 0.01, concurrency: 1}", llm="\n  mode: realtime")
    emulator.faults.realtime_next("refused")
    emulator.faults.realtime_next("invalid_json")
    assert rt.llmt("run", "--max-failed-share", "0.2").code == 0  # 1 of 8 rows failed
    outcomes = dict(rt.query("select outcome, count(*) from _llmt.attempts group by 1"))
    assert outcomes == {"refused": 1, "invalid_json": 1, "ok": 7}  # invalid JSON retried, refusal final
    assert rt.query("select reason from main.insights__errors") == [("refused",)]


def test_auto_mode_chooses_by_the_size_of_the_work(rt: Project, emulator: Emulator) -> None:
    set_yaml(rt, llm="\n  mode: auto\n  realtime_below: 5")
    assert rt.llmt("run").code == 0  # 8 requests: batch
    assert len(emulator.seen.batches) == 1 and emulator.seen.realtime == 0
    csv = (rt.root / "data/reviews.csv").read_text()
    rt.write("data/reviews.csv", csv.replace("number 1\n", "number one\n").replace("number 2\n", "number two\n"))
    assert rt.llmt("run").code == 0  # 2 changed requests: realtime
    assert len(emulator.seen.batches) == 1 and emulator.seen.realtime == 2
    assert rt.llmt("run", "--mode", "realtime", "--full-refresh").code == 0  # nothing to send either way
    plan = json.loads(rt.llmt("plan", "--output", "json", "--mode", "realtime").out)["models"][0]
    assert plan["mode"] == "realtime" and plan["usd_max"] == plan["live_usd_max"]


def test_rate_limits_wait_for_the_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"now": 1000.0}
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock["now"] += seconds

    monkeypatch.setattr(realtime.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(realtime.time, "sleep", sleep)
    limiter = RateLimiter(Limits(concurrency=1, requests_per_minute=2))
    for _ in range(3):
        limiter.acquire(10)
    assert sum(slept) == pytest.approx(30.0)  # the third request waits for half a minute's refill
    slept.clear()
    limiter = RateLimiter(Limits(concurrency=1, tokens_per_minute=600))
    limiter.acquire(600)
    limiter.acquire(300)
    assert sum(slept) == pytest.approx(30.0)


def run_subprocess(project: Project, emu: Emulator, *args: str, crash: str | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLMT_"))}
    env.update(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=emu.base_url)
    if crash:
        env["LLMT_CRASH_AT"] = crash
    return subprocess.Popen([sys.executable, "-m", "llmt", "run", "--project-dir", str(project.root), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_from_a_terminal)


def stored_keys(project: Project) -> set[str]:
    return {k for (k,) in project.query("select request_key from _llmt.answers")}


@pytest.mark.parametrize("how", ["kill", "ctrl-c"])
def test_interrupted_realtime_run_keeps_its_answers_and_a_rerun_sends_only_the_rest(
    rt: Project, emulator: Emulator, how: str
) -> None:
    set_yaml(rt, provider="{type: openai, poll_interval: 0.01, concurrency: 1}", llm="\n  mode: realtime")
    if how == "kill":
        proc = run_subprocess(rt, emulator, crash="realtime_store")  # killed right after storing answers
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
    else:
        emulator.realtime_delay = 0.2
        proc = run_subprocess(rt, emulator)
        emulator.wait_for(lambda: emulator.seen.realtime >= 3, timeout=30)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        emulator.realtime_delay = 0.0
    kept = stored_keys(rt)
    assert 0 < len(kept) < 8
    if how == "ctrl-c":  # requests already on the wire were waited for: every answer received is stored
        assert len(kept) == emulator.seen.realtime
    assert rt.llmt("run").code == 0
    assert rt.query("select distinct _llmt_status from main.insights") == [("ok",)]
    assert all(emulator.seen.realtime_answered[k] == 1 for k in kept)  # never asked again
    assert rt.query("select count(*), count(DISTINCT request_key) from _llmt.answers") == [(8, 8)]


def test_cascade_escalates_only_the_failed_rows_and_records_the_model(rt: Project, emulator: Emulator) -> None:
    set_yaml(rt, provider="{type: openai, poll_interval: 0.01, concurrency: 1}",
             llm="\n  mode: realtime\n  escalate: {model: gpt-4o, when: [refused, truncated], max_share: 0.5}")
    emulator.faults.realtime_next("refused")
    emulator.faults.realtime_next("truncated")
    emulator.faults.realtime_next("schema_violation")  # retried with the primary model, not escalated
    data = rt.run_json()
    assert models(rt) == {"gpt-4o-mini": 6, "gpt-4o": 2}
    assert rt.query("select distinct _llmt_status from main.insights") == [("ok",)]
    assert rt.query("select count(*) from main.insights__errors") == [(0,)]
    escalated = rt.query("select count(*) from _llmt.attempts where model = 'gpt-4o'")
    assert escalated == [(2,)] and rt.llm_result(data)["failed"] == 0
    assert rt.llm_result(rt.run_json())["requests"] == 0  # nothing asked again, either model


def test_a_row_the_escalation_answered_is_not_an_error(rt: Project, emulator: Emulator) -> None:
    set_yaml(rt, provider="{type: openai, poll_interval: 0.01, concurrency: 1}",
             llm="\n  mode: realtime\n  escalate: {model: gpt-4o, when: [refused], max_share: 0.5}")
    rt.write("models/insights.yml", "models:\n  - name: insights\n    tests: [{max_error_rate: {max: 0}}]\n")
    emulator.faults.realtime_next("refused")  # the primary model refuses one row; gpt-4o answers it
    assert rt.llmt("run").code == 0
    assert models(rt) == {"gpt-4o-mini": 7, "gpt-4o": 1}
    result = rt.llmt("test", "--output", "json")
    assert result.code == 0, result.out
    assert {t["name"]: t["status"] for t in json.loads(result.out)["tests"]}["max_error_rate_insights"] == "pass"


def test_cascade_on_an_unsure_field_within_max_share(rt: Project) -> None:
    schema = {"type": "object", "properties": {"label": {"type": "string"},
                                               "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
              "required": ["label", "confidence"]}
    rt.write("schemas/analysis.json", json.dumps(schema))
    set_yaml(rt, llm="\n  escalate: {model: gpt-4.1, when_field: {confidence: \"< 0.6\"}, max_share: 1.0}")
    assert rt.llmt("run", "--mode", "batch").code == 0
    primary = rt.query("select request_key, answer from _llmt.answers where model = 'gpt-4o-mini'")
    unsure = sum(json.loads(a)["confidence"] < 0.6 for _, a in primary)
    assert 0 < unsure < 8
    assert models(rt).get("gpt-4.1") == unsure
    low = rt.query("select count(*) from main.insights where _llmt_model = 'gpt-4.1' and confidence is not null")
    assert low == [(unsure,)]


def test_canary_stops_a_broken_prompt_before_the_batch(rt: Project, emulator: Emulator) -> None:
    set_yaml(rt, llm="\n  canary_above: 4\n  canary_size: 3\n  canary_max_error_rate: 0.5")
    for _ in range(3 * 2):  # every canary request (and its one retry) fails to parse
        emulator.faults.realtime_next("invalid_json")
    result = rt.llmt("run")
    assert result.code == 1 and "the canary of `insights` failed: 3 of 3" in result.err
    assert "No batch was submitted" in result.err and "--no-canary" in result.err
    assert emulator.seen.batches == []
    # what the hint points at works: `<model>__errors` exists (the canary's rows have attempts left: none is
    # listed), and the query over _llmt.attempts lists every canary attempt and its reason
    shown = rt.llmt("show", "insights__errors", "--output", "json")
    assert shown.code == 0 and json.loads(shown.out) == [], shown.err
    query = re.search(r"`(select outcome, detail from _llmt.attempts where run_id = '[^']+')`", result.err)
    assert query is not None, result.err
    assert [outcome for outcome, _ in rt.query(query[1])] == ["invalid_json"] * 3


def test_canary_passes_then_the_rest_goes_in_one_batch(rt: Project, emulator: Emulator) -> None:
    set_yaml(rt, llm="\n  canary_above: 4\n  canary_size: 3")
    data = rt.run_json()
    assert emulator.seen.realtime == 3 and len(emulator.seen.batches) == 1
    batch_lines = emulator.file_content(str(emulator.seen.batches[0]["input_file_id"])).decode().splitlines()
    assert len(batch_lines) == 5
    assert rt.llm_result(data)["requests"] == 8


def test_no_canary_skips_it(rt: Project, emulator: Emulator) -> None:
    set_yaml(rt, llm="\n  canary_above: 4")
    assert rt.llmt("run", "--no-canary").code == 0
    assert emulator.seen.realtime == 0 and len(emulator.seen.batches) == 1


def test_cascade_has_its_own_budget(rt: Project, emulator: Emulator) -> None:
    set_yaml(rt, provider="{type: openai, poll_interval: 0.01, concurrency: 1}",
             llm="\n  mode: realtime\n  escalate: {model: gpt-4o, when: [refused], max_share: 0.5, "
                 "budget_usd: 0.0000001}")
    emulator.faults.realtime_next("refused")
    result = rt.llmt("run")
    assert result.code == 1 and "escalate.budget_usd of model `insights`" in result.err
    assert rt.query("select count(*) from _llmt.attempts where model = 'gpt-4o'") == [(0,)]
    assert rt.query("select count(*) from _llmt.answers") == [(7,)]  # the primary model's answers are kept
