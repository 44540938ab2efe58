"""Cost control: exact token counts offline, prices, `llmt plan`, budget gates, --sample, the ledger."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from llmt import tokens
from llmt.cost import Rates, RequestLimits, price_table
from llmt.errors import ConfigError
from llmt.project.config import ModelPrice
from llmt.tokens import RequestCounter, TokenMemo, count_request, count_text
from tests.conftest import Project
from tests.emulator import Emulator, fixtures

emulator = fixtures.emulator

MakeProject = Callable[[dict[str, str]], Project]

COOKBOOK = [  # the OpenAI cookbook's example: 129 tokens with cl100k_base models, 124 with o200k_base
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate "
     "jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch "
     "base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to "
     "do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client "
     "deliverable."},
]


def test_exact_counts_on_known_examples() -> None:
    assert count_text("hello world", "gpt-4o") == 2
    assert count_text("tiktoken is great!", "gpt-4") == 6
    assert count_request({"model": "gpt-4", "messages": COOKBOOK}) == 129
    assert count_request({"model": "gpt-3.5-turbo", "messages": COOKBOOK}) == 129
    assert count_request({"model": "gpt-4o-mini", "messages": COOKBOOK}) == 124
    assert count_request({"model": "gpt-4.1", "messages": COOKBOOK}) == 124


def test_structured_output_schema_is_counted() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    schema = {"name": "a", "strict": True, "schema": {"type": "object", "properties": {"x": {"type": "string"}}}}
    plain = count_request({"model": "gpt-4o", "messages": messages})
    with_schema = count_request({"model": "gpt-4o", "messages": messages,
                                 "response_format": {"type": "json_schema", "json_schema": schema}})
    assert with_schema - plain == count_text(json.dumps(schema, separators=(",", ":")), "gpt-4o")


@pytest.mark.parametrize("text", ["plain English words", "日本語のレビュー、とても良い", "emoji 👍🏽🎉 ok", "",
                                  "a" * 3000, "Ünïcödé, ñ, ß — “quotes”", "\u0000\n\t\\"])
def test_the_byte_bound_is_never_below_the_exact_count(text: str) -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "a", "strict": True, "schema": {"type": "object"}}}
    for model in ("gpt-4o-mini", "gpt-4"):
        counter = RequestCounter(model, schema)
        for system in (None, "You are terse.", text):
            assert counter.bound_chat(system, len(text.encode())) >= counter.count_chat(system, text)
        assert counter.bound_chat(None, len(text.encode())) == counter.count_chat(None, "") + len(text.encode())


def test_the_memo_spares_loading_an_encoding_for_bounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "a", "strict": True, "schema": {"type": "object"}}}
    path = tmp_path / "target" / "token_counts.json"
    memo = TokenMemo(path)
    first = RequestCounter("gpt-4o-mini", schema, memo)
    bound, exact = first.bound_chat("You are terse.", 40), first.count_chat("You are terse.", "x" * 40)
    assert not path.exists()  # written only when asked
    memo.save()

    def no_encoding(name: str) -> None:
        raise AssertionError(f"the {name} encoding was loaded")

    monkeypatch.setattr(tokens, "encoding", no_encoding)
    again = RequestCounter("gpt-4o-mini", schema, TokenMemo(path))
    assert again.bound_chat("You are terse.", 40) == bound >= exact
    with pytest.raises(AssertionError, match="o200k_base encoding was loaded"):
        again.bound_chat("A system message the memo has not seen.", 40)
    with pytest.raises(AssertionError, match="loaded"):  # another encoding: its own counts
        RequestCounter("gpt-4", schema, TokenMemo(path))


@pytest.mark.parametrize("content", ["{not json", '{"version": 1, "counts": {"o200k_base:x": -1}}', "[1, 2]",
                                     '{"version": 99, "counts": {}}'])
def test_an_unreadable_memo_is_ignored_and_written_afresh(tmp_path: Path, content: str) -> None:
    path = tmp_path / "token_counts.json"
    path.write_text(content)
    memo = TokenMemo(path)
    assert memo.counts == {}
    counted = RequestCounter("gpt-4o-mini", None, memo).bound_chat("You are terse.", 0)
    assert counted == RequestCounter("gpt-4o-mini", None).bound_chat("You are terse.", 0)
    memo.save()
    saved = json.loads(path.read_text())
    assert saved["version"] == tokens.MEMO_VERSION and sorted(saved["counts"].values()) == [1, 1, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["token_counts.json"]  # no temporary file left


def test_the_memo_keeps_the_latest_counts(tmp_path: Path) -> None:
    memo = TokenMemo(tmp_path / "token_counts.json")
    for i in range(2 * tokens.MEMO_SIZE + 10):
        memo.count("o200k_base", f"text {i}", lambda text: [0] * len(text))
    assert len(memo.counts) <= 2 * tokens.MEMO_SIZE
    memo.save()
    kept = TokenMemo(tmp_path / "token_counts.json").counts
    assert len(kept) == tokens.MEMO_SIZE
    assert memo.count("o200k_base", f"text {2 * tokens.MEMO_SIZE + 9}", lambda text: []) == len("text 521")


def test_counting_works_with_the_network_unreachable(tmp_path: Path) -> None:
    code = (
        "import socket\n"
        "class NoNet(socket.socket):\n"
        "    def __init__(self, *a, **k): raise RuntimeError('network used')\n"
        "socket.socket = NoNet\n"
        "socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(RuntimeError('network used'))\n"
        "from llmt.tokens import count_text\n"
        "print(count_text('hello world', 'gpt-4o'), count_text('tiktoken is great!', 'gpt-4'))\n"
    )
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "6"]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_prices_match_a_name_exactly_or_with_a_date_suffix_and_nothing_else() -> None:
    table = price_table()
    assert table.price("gpt-4o-mini-2024-07-18") == table.price("gpt-4o-mini") != table.price("gpt-4o")
    assert table.price("gpt-5-2025-08-07") == table.price("gpt-5")
    assert table.price("gpt-5-pro").rates == Rates(15.0, 15.0, 120.0) != table.price("gpt-5").rates
    assert table.price("o3-pro").rates == Rates(20.0, 20.0, 80.0) != table.price("o3").rates
    assert table.price("gpt-5-pro-2025-10-06") == table.price("gpt-5-pro")
    assert table.cost("gpt-4o-mini", prompt=1_000_000, completion=1_000_000, batch=True) == pytest.approx(0.375)
    assert table.cost("gpt-4o-mini", prompt=1_000_000, completion=0, cached=1_000_000, batch=False) == \
        pytest.approx(0.075)
    for name in ("gpt-4o-mini-tts", "gpt-5-codex", "gpt-5.1-chat-latest", "gpt-4o-mini-2024", "my-local-llama"):
        with pytest.raises(ConfigError, match=f"no price for model `{name}`") as caught:
            table.price(name)
        hint = caught.value.hint or ""
        assert f"{name}: {{input: <USD>, cached_input: <USD>, output: <USD>" in hint and "llm:" in hint
        assert not re.search(r"\d\.\d", hint.replace(name, "")), hint  # no other model's figures
    with pytest.raises(ConfigError, match="ft:gpt-4o-mini:acme::abc123") as caught:
        table.price("ft:gpt-4o-mini:acme::abc123")
    assert "fine-tuned model has prices of its own" in (caught.value.hint or "")


def test_a_project_declares_or_overrides_prices_key_by_key() -> None:
    custom = price_table({"my-local-llama": ModelPrice(input=1.0, cached_input=0.5, output=2.0),
                          "gpt-4o-mini": ModelPrice(context_window=64_000),
                          "ft:gpt-4o-mini:acme::abc123": ModelPrice(input=0.3, cached_input=0.15, output=1.2,
                                                                     batch_discount=0.0)})
    assert custom.cost("my-local-llama", prompt=1_000_000, completion=0, batch=False) == 1.0
    assert custom.price("my-local-llama").context_window is None
    kept = custom.price("gpt-4o-mini")
    assert (kept.rates, kept.context_window, kept.max_output) == (Rates(0.15, 0.075, 0.6), 64_000, 16_384)
    assert custom.cost("ft:gpt-4o-mini:acme::abc123", prompt=1_000_000, completion=0, batch=True) == 0.3
    with pytest.raises(ConfigError, match="the price of `half` needs cached_input, output"):
        price_table({"half": ModelPrice(input=1.0)})


def test_the_shipped_table_knows_limits_and_long_context_prices() -> None:
    table = price_table()
    assert table.taken.startswith("2026-12-06")
    for name in ("gpt-5", "gpt-5.1", "gpt-5.2", "gpt-5.4", "gpt-5.4-mini", "gpt-5.5", "gpt-5.6-sol", "gpt-6.2-sol",
                 "gpt-4.1", "gpt-4o", "o1", "o1-pro", "o3", "o3-pro", "o3-mini", "o4-mini",
                 "text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"):
        assert table.price(name).context_window, name
    assert table.price("gpt-4o-mini").limits(1000) == RequestLimits(127_000, None)
    assert table.price("gpt-5.4").limits(200_000) == RequestLimits(850_000, 272_000)
    assert table.price("gpt-6.2-sol").limits(1000) == RequestLimits(922_000, 272_000)


def test_long_context_prices_apply_per_request_and_sql_gives_the_same_doubles() -> None:
    table = price_table()
    short = table.cost("gpt-5.4", prompt=272_000, completion=1000, batch=False)
    long = table.cost("gpt-5.4", prompt=272_001, completion=1000, batch=False)
    assert short == pytest.approx((272_000 * 2.5 + 1000 * 15) / 1e6)
    assert long == pytest.approx((272_001 * 5.0 + 1000 * 22.5) / 1e6)
    # two requests of 200k tokens each are not one long request
    assert table.estimate("gpt-5.4", requests=2, prompt=400_000, completion=0, batch=True) == \
        pytest.approx(2 * table.cost("gpt-5.4", prompt=200_000, completion=0, batch=True))
    assert table.estimate("gpt-5.4", requests=2, prompt=600_000, completion=0, batch=True) == \
        pytest.approx(2 * table.cost("gpt-5.4", prompt=300_000, completion=0, batch=True))
    usage = [(272_000, 500, 0), (272_001, 500, 100_000), (1_000, 7, 3), (900_000, 128_000, 899_999), (0, 0, 0)]
    with duckdb.connect() as conn:
        conn.execute("CREATE TABLE u (prompt_tokens BIGINT, completion_tokens BIGINT, cached_tokens BIGINT)")
        conn.executemany("INSERT INTO u VALUES (?, ?, ?)", usage)
        for model, batch in (("gpt-5.4", True), ("gpt-5.4", False), ("gpt-4o-mini", True)):
            sql, params = table.cost_sql(model, batch=batch)
            got = [r[0] for r in conn.execute(f"SELECT {sql} FROM u", params).fetchall()]
            assert got == [table.cost(model, prompt=p, completion=c, cached=k, batch=batch) for p, c, k in usage]


def test_a_model_asked_for_more_output_than_it_gives_is_a_config_error(project: Project) -> None:
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("max_attempts: 2", "max_attempts: 2\n  max_output_tokens: 20000"))
    result = project.llmt("plan")
    assert result.code == 2 and "max_output_tokens 20000 is more than `gpt-4o-mini` can give (16384" in result.err


def plan_json(project: Project, *args: str) -> dict[str, object]:
    result = project.llmt("plan", "--output", "json", *args)
    assert result.code == 0, result.err
    data: dict[str, object] = json.loads(result.out)
    return data


def insights_plan(data: dict[str, object]) -> dict[str, object]:
    models = data["models"]
    assert isinstance(models, list)
    entry: dict[str, object] = models[0]
    return entry


def test_plan_numbers_equal_what_is_then_billed(project: Project) -> None:
    assert project.llmt("run", "-s", "stg_reviews").code == 0
    before = project.query("select count(*) from _llmt.attempts")
    plan = insights_plan(plan_json(project))
    assert project.query("select count(*) from _llmt.attempts") == before  # plan writes nothing
    assert (plan["rows"], plan["new_rows"], plan["requests"]) == (4, 4, 4)
    assert plan["output_tokens_max"] == 4 * 1000
    data = project.run_json()
    billed = project.query("select sum(prompt_tokens) from _llmt.attempts")[0][0]
    assert plan["input_tokens"] == billed
    llm = project.llm_result(data)
    assert llm["usage"]["prompt_tokens"] == billed
    assert llm["cost_usd"] <= plan["batch_usd_max"]
    again = insights_plan(plan_json(project))
    assert (again["requests"], again["input_tokens"], again["answered_rows"]) == (0, 0, 4)
    assert "stored answers" in str(again["expected_from"])


def shard_tokens(project: Project) -> list[tuple[int, bool]]:
    return [(int(n), bool(exact)) for n, exact in
            project.query("select input_tokens, input_tokens_exact from _llmt.shards order by shard_id")]


def test_a_run_bounds_input_tokens_and_counts_exactly_only_for_a_budget(project: Project) -> None:
    assert project.llmt("run", "-s", "stg_reviews").code == 0
    plan = insights_plan(plan_json(project))
    assert project.llmt("run", "--max-cost", "100").code == 0  # far under budget: nothing counted
    [(bound, exact)] = shard_tokens(project)
    assert not exact and bound > plan["input_tokens"]


def test_a_budget_the_bound_exceeds_but_the_exact_count_meets_is_met(project: Project) -> None:
    assert project.llmt("run", "-s", "stg_reviews").code == 0
    plan = insights_plan(plan_json(project))
    exact_max = plan["batch_usd_max"]
    assert isinstance(exact_max, float)
    result = project.llmt("run", "--no-wait", "--max-cost", f"{exact_max * 1.0001:.10f}")
    assert result.code == 0, result.err
    assert shard_tokens(project) == [(plan["input_tokens"], True)]


def test_budget_gate_refuses_and_submits_nothing(project: Project) -> None:
    result = project.llmt("run", "--max-cost", "0.000001")
    assert result.code == 1
    assert "over the $0.0000 budget (--max-cost)" in result.err and "Nothing was submitted" in result.err
    assert "--sample N" in result.err
    assert project.query("select count(*) from _llmt.shards") == [(0,)]
    assert project.query("select count(*) from _llmt.attempts") == [(0,)]
    assert not list((project.root / "target" / "batches").rglob("*.jsonl"))
    assert not (project.root / "target" / "fake_remote" / "files").exists()
    assert project.llmt("run", "--max-cost", "5").code == 0


def test_model_and_project_budgets(project: Project) -> None:
    project.write("models/insights.sql", """
        {{ config(materialized='llm', prompt='analyse', output_schema='analysis', unique_key='review_id',
                  budget_usd=0.000001) }}
        select review_id, product, review_text from {{ ref('stg_reviews') }}
        """)
    result = project.llmt("run")
    assert result.code == 1 and "budget_usd of model `insights`" in result.err
    yml = (project.root / "project.yml").read_text()
    project.write("models/insights.sql", """
        {{ config(materialized='llm', prompt='analyse', output_schema='analysis', unique_key='review_id') }}
        select review_id, product, review_text from {{ ref('stg_reviews') }}
        """)
    project.write("project.yml", yml.replace("max_attempts: 2", "max_attempts: 2\n  budget_usd: 0.000001"))
    result = project.llmt("run")
    assert result.code == 1 and "budget_usd under `llm:`" in result.err


def test_the_gate_cannot_be_passed_by_splitting_across_shards(project: Project) -> None:
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("provider: {type: fake}",
                                             "provider: {type: fake, max_requests_per_batch: 1}"))
    assert project.llmt("run", "-s", "stg_reviews").code == 0
    total = insights_plan(plan_json(project))["batch_usd_max"]
    assert isinstance(total, float)
    result = project.llmt("run", "--max-cost", f"{total * 0.6:.10f}")  # each 1-request shard would fit
    assert result.code == 1 and "Nothing was submitted" in result.err
    assert project.query("select count(*) from _llmt.shards") == [(0,)]


def test_open_batches_count_against_the_budget_of_later_models(
    project: Project, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    emulator.timing.in_progress = 3600  # batches stay open
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("provider: {type: fake}", "provider: {type: openai, poll_interval: 0.01}"))
    project.write("models/insights_b.sql", """
        {{ config(materialized='llm', prompt='analyse', output_schema='analysis', unique_key='review_id',
                  temperature=0.9) }}
        select review_id, product, review_text from {{ ref('stg_reviews') }}
        """)
    assert project.llmt("run", "-s", "stg_reviews").code == 0
    plans = {m["model"]: m["batch_usd_max"] for m in plan_json(project)["models"]}  # type: ignore[union-attr]
    assert project.llmt("run", "-s", "insights", "--no-wait").code == 0
    assert [exact for _, exact in shard_tokens(project)] == [False]  # no budget: bounded by bytes
    assert insights_plan(plan_json(project, "-s", "insights"))["open_usd_max"] == pytest.approx(plans["insights"])
    # enough for insights_b alone, not with insights' open batch on top
    result = project.llmt("run", "-s", "insights_b", "--no-wait", "--max-cost", f"{plans['insights_b'] * 1.5:.10f}")
    assert result.code == 1 and "already committed" in result.err
    assert len(emulator.seen.batches) == 1
    assert [exact for _, exact in shard_tokens(project)] == [True]  # the bound broke the budget: counted
    result = project.llmt("run", "-s", "insights_b", "--no-wait", "--max-cost",
                          f"{(plans['insights'] + plans['insights_b']) * 1.01:.10f}")
    assert result.code == 0, result.err
    assert len(emulator.seen.batches) == 2


def test_sample_sends_exactly_n_and_a_rerun_continues(make_project: MakeProject) -> None:
    csv = "review_id,product,review_text\n" + "".join(f"{i},P{i % 3},text number {i}\n" for i in range(20))
    project = make_project({"data/reviews.csv": csv})
    first = project.llm_result(project.run_json("--sample", "7"))
    assert first["requests"] == 7
    assert project.query("select count(*) from _llmt.attempts") == [(7,)]
    assert project.query("select count(*) from main.insights where _llmt_status = 'pending'") == [(13,)]
    second = project.llm_result(project.run_json("--sample", "7"))
    assert second["requests"] == 7
    assert project.query("select count(DISTINCT request_key) from _llmt.attempts") == [(14,)]


def test_ledger_totals_equal_the_sum_of_per_answer_usage(make_project: MakeProject) -> None:
    project = make_project({})
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("provider: {type: fake}",
                                             "provider: {type: fake, failures: {truncated: 1.0}}"))
    data = project.run_json("--max-failed-share", "1")  # every row fails on purpose
    llm = project.llm_result(data)
    rows = project.query("select model, prompt_tokens, completion_tokens, cached_tokens, cost_usd, outcome "
                         "from _llmt.attempts")
    table = price_table()
    expected = sum(table.cost(m, prompt=p, completion=c, cached=k, batch=True) for m, p, c, k, _, _ in rows)
    assert sum(r[4] for r in rows) == pytest.approx(expected)
    assert llm["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert any(r[5] == "truncated" and r[4] > 0 for r in rows)  # billed failures are counted
    results = json.loads((project.root / "target" / "run_results.json").read_text())
    insights = next(r for r in results["results"] if r["name"] == "insights")
    assert insights["llm"]["cost_usd"] == pytest.approx(expected, abs=1e-6)
    status = json.loads(project.llmt("status", "--output", "json").out)
    spend = status["simulated_spend"]  # the fake provider's: never real spend
    assert status["spend"] == []
    assert spend[0]["model"] == "insights" and spend[0]["today_usd"] == pytest.approx(expected)
    assert spend[0]["month_usd"] == pytest.approx(expected) and spend[0]["provider"] == "fake"


def test_unknown_model_price_is_a_config_error(project: Project) -> None:
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("model: gpt-4o-mini", "model: my-llama"))
    result = project.llmt("run")
    assert result.code == 2 and "no price for model `my-llama`" in result.err
    project.write("project.yml", yml.replace("model: gpt-4o-mini", "model: my-llama\n  prices:\n    my-llama: "
                                             "{input: 1, cached_input: 1, output: 1}"))
    assert project.llmt("run").code == 0


def test_plan_equals_what_the_emulator_bills(
    project: Project, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("provider: {type: fake}", "provider: {type: openai, poll_interval: 0.01}"))
    assert project.llmt("run", "-s", "stg_reviews").code == 0
    planned = insights_plan(plan_json(project))["input_tokens"]
    assert project.llmt("run").code == 0
    outputs = [emulator.batch(str(b["id"]))["output_file_id"] for b in emulator.seen.batches]
    billed = [json.loads(line)["response"]["body"]["usage"]["prompt_tokens"]
              for file_id in outputs for line in emulator.file_content(file_id).decode().splitlines()]
    assert len(billed) == 4 and planned == sum(billed)


def test_plan_reads_a_warehouse_llmt_has_not_written_to_yet(project: Project) -> None:
    with duckdb.connect(str(project.root / project.db)) as conn:  # e.g. made by another tool
        conn.execute("CREATE TABLE main.stg_reviews AS SELECT 1 AS review_id, 'x' AS product, 'y' AS review_text")
    plan = insights_plan(plan_json(project))
    assert (plan["rows"], plan["new_rows"], plan["requests"]) == (1, 1, 1)
    with duckdb.connect(str(project.root / project.db)) as conn:  # plan wrote nothing, not even llmt's state
        assert conn.execute("SELECT count(*) FROM duckdb_schemas() WHERE schema_name = '_llmt'").fetchone() == (0,)


def test_the_fake_providers_spend_is_said_to_be_simulated(project: Project) -> None:
    result = project.llmt("run")
    assert result.code == 0, result.err
    assert "Simulated spend (fake provider, nothing was paid): $0.0" in result.err and "Spent $" not in result.err
    assert "simulated cost $" in result.out
    data = project.run_json("--reask", "--yes")
    assert data["cost_simulated"] is True and data["cost_usd"] > 0
