"""Embedding models: requests keyed like LLM models', many inputs a batch line, vectors in a FLOAT[n] column;
against the fake provider and, through the openai SDK, the emulator (batch and realtime)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from llmt.providers.embeddings import fake_vector
from tests.conftest import Project, on_postgres, project_yml
from tests.emulator import Emulator, fixtures

emulator = fixtures.emulator
MakeProject = Callable[[dict[str, str]], Project]

ARTICLES = [
    ("KB-1", "Paper jam", "How to clear a paper jam in the printer tray"),
    ("KB-2", "Password", "Reset your account password from the login page"),
    ("KB-3", "Invoice", "Download an invoice as PDF from the billing page"),
    ("KB-4", "Printer offline", "The printer shows offline: restart the printer and check the cable"),
    ("KB-5", "Refund", "Ask for a refund within 30 days of the purchase"),
]
PROJECT = project_yml("poll_interval: 0.01, max_retries: 1, timeout: 10")
MODEL = """
    {{ config(materialized='embedding', column='body', unique_key='article_id', dimensions=64,
              inputs_per_request=2) }}
    select article_id, title, body from {{ source('raw', 'kb') }}
    """
SOURCES = """
    sources:
      - name: raw
        tables:
          - {name: kb, file: data/kb.csv}
    """


def kb_csv(rows: list[tuple[str, str, str]]) -> str:
    return "article_id,title,body\n" + "".join(f'{a},{t},"{b}"\n' for a, t, b in rows)


@pytest.fixture
def kb(make_project: MakeProject) -> Project:
    return make_project({"project.yml": PROJECT, "models/sources.yml": SOURCES, "models/insights.sql": "",
                         "models/stg_reviews.sql": "", "data/kb.csv": kb_csv(ARTICLES),
                         "models/kb_embeddings.sql": MODEL})


@pytest.fixture(params=["duckdb", "postgres"])
def kb_anywhere(request: pytest.FixtureRequest, kb: Project) -> Project:
    """The project's warehouse: DuckDB's file, or a database on the PostgreSQL server (schema `main` on both)."""
    return on_postgres(kb, request.getfixturevalue("pg"), schema="main") if request.param == "postgres" else kb


@pytest.fixture
def on_emulator(kb: Project, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    yml = (kb.root / "project.yml").read_text().replace("type: openai,", "type: openai, base_url: "
                                                        f"\"{emulator.base_url}\",")
    kb.write("project.yml", yml)
    return kb


def result(project: Project, *args: str) -> dict[str, object]:
    return project.llm_result(project.run_json(*args), "kb_embeddings")


def vectors(project: Project) -> dict[str, list[float]]:
    return {a: list(v) for a, v in project.query("select article_id, embedding from main.kb_embeddings "
                                                    "where embedding is not null")}


def sent_lines(project: Project, target: str = "dev") -> list[dict[str, Any]]:
    """The batch input lines llmt wrote for the model (in the order written)."""
    files = sorted(p for p in (project.root / "target/batches" / target / "kb_embeddings").glob("*.jsonl")
                   if "." not in p.stem)
    return [json.loads(line) for path in files for line in path.read_text().splitlines()]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# -- the synthetic vectors --------------------------------------------------------------------------


def test_fake_vectors_put_texts_that_share_words_near_each_other() -> None:
    jam = fake_vector("My printer does not print: paper jam in the tray", 256)
    near = fake_vector("How to clear a paper jam in the printer tray", 256)
    far = fake_vector("Reset your account password from the login page", 256)
    assert math.isclose(math.sqrt(sum(v * v for v in jam)), 1.0, rel_tol=1e-6)
    assert cosine(jam, near) > 0.5 > cosine(jam, far)
    assert fake_vector("Paper jam", 256) == fake_vector("paper JAM", 256) != fake_vector("paper jam", 128)
    assert len(fake_vector("", 8)) == 8


def test_the_emulator_answers_embeddings_through_the_sdk_within_the_apis_limits(emulator: Emulator) -> None:
    client = emulator.client(max_retries=0)
    got = client.embeddings.create(model="text-embedding-3-small", input=["paper jam", "refund"], dimensions=16)
    assert [d.embedding for d in got.data] == [pytest.approx(fake_vector(t, 16), abs=1e-6)
                                               for t in ("paper jam", "refund")]  # the SDK's base64, decoded
    assert got.usage.prompt_tokens == 3
    plain = client.embeddings.create(model="text-embedding-3-small", input="paper jam", encoding_format="float")
    assert len(plain.data[0].embedding) == 1536
    for bad, says in (({"input": [""]}, "empty string"), ({"input": ["x"] * 2049}, "at most 2048"),
                      ({"input": ["word " * 9000]}, "maximum context length is 8192"),
                      ({"input": ["word " * 8000] * 40}, "max 300000 tokens per request"),
                      ({"model": "text-embedding-ada-002", "input": ["x"], "dimensions": 8}, "dimensions")):
        with pytest.raises(openai.BadRequestError, match=says):
            client.embeddings.create(**{"model": "text-embedding-3-small", **bad})


# -- embedding models on the fake provider ----------------------------------------------------------


def test_an_embedding_model_writes_a_vector_column_and_a_rerun_sends_nothing(kb_anywhere: Project) -> None:
    first = result(kb_anywhere)
    assert first["requests"] == 5 and first["answered"] == 5
    columns = kb_anywhere.query("select column_name from information_schema.columns "
                                "where table_name = 'kb_embeddings' order by ordinal_position")
    assert [c for c, in columns] == ["article_id", "title", "body", "embedding", "_llmt_status", "_llmt_request_key",
                                     "_llmt_answer_key", "_llmt_model", "_llmt_answered_at"]
    assert kb_anywhere.query("select pg_typeof(embedding)::text from main.kb_embeddings limit 1" if kb_anywhere.pg
                             else "select typeof(embedding) from main.kb_embeddings limit 1") == [
        ("real[]" if kb_anywhere.pg else "FLOAT[64]",)]
    # each row's vector is its own text's, although two texts share a line of the batch file
    for article, title, body in ARTICLES:
        assert vectors(kb_anywhere)[article] == pytest.approx(fake_vector(body, 64), abs=1e-6), title
    lines = sent_lines(kb_anywhere)
    assert [(line["custom_id"], len(line["body"]["input"])) for line in lines] == [("0+2", 2), ("2+2", 2), ("4+1", 1)]
    assert {line["url"] for line in lines} == {"/v1/embeddings"}
    assert lines[0]["body"] | {"input": None} == {"model": "text-embedding-3-small", "encoding_format": "float",
                                                  "dimensions": 64, "input": None}
    assert result(kb_anywhere)["requests"] == 0
    assert kb_anywhere.query("select count(*) from _llmt.attempts") == [(5,)]


def test_an_edited_article_sends_one_input_and_a_title_change_none(kb_anywhere: Project) -> None:
    result(kb_anywhere)
    before = vectors(kb_anywhere)
    edited = [*ARTICLES[:2], ("KB-3", "Invoices (PDF)", "Download every invoice as PDF"), *ARTICLES[3:]]
    kb_anywhere.write("data/kb.csv", kb_csv(edited))
    assert result(kb_anywhere)["requests"] == 1
    after = vectors(kb_anywhere)
    assert after["KB-3"] == pytest.approx(fake_vector("Download every invoice as PDF", 64), abs=1e-6)
    assert {k: v for k, v in after.items() if k != "KB-3"} == {k: v for k, v in before.items() if k != "KB-3"}
    assert kb_anywhere.query("select title from main.kb_embeddings where article_id = 'KB-3'") == [("Invoices (PDF)",)]


def test_empty_and_too_long_texts_are_failed_rows_counted_exactly_and_never_sent(kb: Project) -> None:
    long_but_fits = "é" * 8000  # 16,000 bytes but fewer tokens than the 8,192 the model takes
    rows = [*ARTICLES[:2], ("KB-8", "Empty", ""), ("KB-9", "Huge", "word " * 8200), ("KB-10", "Accents", long_but_fits)]
    kb.write("data/kb.csv", kb_csv(rows))
    data = kb.run_json("--max-failed-share", "1")
    got = kb.llm_result(data, "kb_embeddings")
    assert got["requests"] == 3 and got["answered"] == 3
    errors = kb.query("select article_id, reason, status_code, error_code, detail from main.kb_embeddings__errors "
                      "order by 1")
    assert [e[:4] for e in errors] == [("KB-8", "http_error", 400, "empty_input"), ("KB-9", "too_long", None, None)]
    assert errors[1][4] == "8201 tokens > the 8192 tokens text-embedding-3-small takes"
    sent = sent_lines(kb)
    assert sorted(t for line in sent for t in line["body"]["input"]) == sorted(
        [ARTICLES[0][2], ARTICLES[1][2], long_but_fits])
    assert result(kb, "--max-failed-share", "1")["requests"] == 0  # final outcomes: not asked again


def test_config_mistakes_name_the_model_file(kb: Project) -> None:
    for config, says in (
            ("column='nope'", "`column='nope'` of embedding model `kb_embeddings` is not in its select"),
            ("column='body', dimensions=5000", "`dimensions` must be from 1 to 1536, got 5000"),
            ("column='body', model='my-embedder'", "`dimensions` of `my-embedder` are not known to llmt"),
            ("column='body', prompt='x'", "`prompt` is an LLM model's config key"),
            ("column='body', inputs_per_request=3000", "`inputs_per_request` must be from 1 to 2048"),
            ("dimensions=8", "an embedding model needs `column=`")):
        kb.write("models/kb_embeddings.sql", "{{ config(materialized='embedding', unique_key='article_id', "
                 + config + ") }}\nselect article_id, title, body from {{ source('raw', 'kb') }}\n")
        got = kb.llmt("run")
        assert got.code != 0 and says in got.err and "kb_embeddings.sql" in got.err, got.err


def test_plan_counts_an_embedding_models_inputs_exactly(kb: Project) -> None:
    plan = json.loads(kb.llmt("plan", "--output", "json").out)["models"][0]
    tokens = sum(len(embeddings_tokens(b)) for _, _, b in ARTICLES)
    assert (plan["requests"], plan["input_tokens"], plan["output_tokens_max"]) == (5, tokens, 0)
    assert plan["batch_usd_max"] == pytest.approx(tokens * 0.02e-6 * 0.5)
    result(kb)
    again = json.loads(kb.llmt("plan", "--output", "json").out)["models"][0]
    assert (again["answered_rows"], again["requests"]) == (5, 0)


def embeddings_tokens(text: str) -> list[int]:
    from llmt.tokens import encoding

    return list(encoding("cl100k_base").encode_ordinary(text))


# -- on the emulator, through the openai SDK --------------------------------------------------------


def test_batches_go_to_the_embeddings_endpoint_and_are_priced_at_batch_rates(
        on_emulator: Project, emulator: Emulator) -> None:
    emulator.faults.shuffle_output = True  # lines come back in another order: mapped by custom_id
    got = result(on_emulator, "--target", "openai")
    assert got["requests"] == 5 and got["answered"] == 5
    assert {b["endpoint"] for b in emulator.seen.batches} == {"/v1/embeddings"}
    for article, _, body in ARTICLES:
        assert vectors(on_emulator)[article] == pytest.approx(fake_vector(body, 64), abs=1e-6)
    tokens = sum(len(embeddings_tokens(b)) for _, _, b in ARTICLES)
    spent = on_emulator.query("select sum(prompt_tokens), sum(cost_usd), bool_and(batch) from _llmt.attempts")
    assert spent[0][0] == tokens and spent[0][1] == pytest.approx(tokens * 0.02e-6 * 0.5) and spent[0][2]
    status = json.loads(on_emulator.llmt("status", "--target", "openai", "--output", "json").out)
    assert [(e["model"], e["llm_model"], e["prompt_tokens"]) for e in status["spend"]] == [
        ("kb_embeddings", "text-embedding-3-small", tokens)]
    assert result(on_emulator, "--target", "openai")["requests"] == 0


def test_realtime_embeddings_are_stored_like_batch_ones(on_emulator: Project, emulator: Emulator) -> None:
    got = result(on_emulator, "--target", "openai", "--mode", "realtime")
    assert got["answered"] == 5 and emulator.seen.batches == [] and emulator.seen.realtime == 3
    for article, _, body in ARTICLES:
        assert vectors(on_emulator)[article] == pytest.approx(fake_vector(body, 64), abs=1e-6)
    assert on_emulator.query("select bool_or(batch), min(cost_usd) > 0 from _llmt.attempts") == [(False, True)]


def test_a_failed_line_fails_its_inputs_and_server_errors_are_sent_again(
        on_emulator: Project, emulator: Emulator) -> None:
    emulator.faults.line_outcome("0+2", "schema_violation")  # the first input's vector comes back a float short
    emulator.faults.line_outcome("2+2", "http_error_500")  # the provider's failure: sent again, no attempt used
    got = result(on_emulator, "--target", "openai", "--max-failed-share", "1")
    outcomes = on_emulator.query("select outcome, count(*) from _llmt.attempts group by 1 order by 1")
    assert outcomes == [("http_error", 2), ("ok", 5), ("schema_violation", 1)]
    assert got["answered"] == 5 and len(emulator.seen.batches) == 2
    # max_attempts 2: the invalid vector and the two that met a server error are asked again, in one batch
    again = [json.loads(line)["body"]["input"] for line in
             emulator.file_content(emulator.seen.batches[1]["input_file_id"]).splitlines()]
    assert sorted(len(i) for i in again) == [1, 2]
    for article, _, body in ARTICLES:
        assert vectors(on_emulator)[article] == pytest.approx(fake_vector(body, 64), abs=1e-6)


def test_a_batch_over_the_inputs_limit_is_split(on_emulator: Project, emulator: Emulator,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from llmt.pipeline import embed_lines
    from llmt.providers import fake

    monkeypatch.setattr(embed_lines, "MAX_BATCH_INPUTS", 2)  # what llmt packs within ...
    monkeypatch.setattr(fake, "MAX_BATCH_INPUTS", 2)  # ... and what the emulator refuses beyond
    assert result(on_emulator, "--target", "openai")["answered"] == 5
    assert len(emulator.seen.batches) == 3


def test_the_budget_refuses_embeddings_before_anything_is_sent(on_emulator: Project, emulator: Emulator) -> None:
    got = on_emulator.llmt("run", "--target", "openai", "--max-cost", "0.00000001")
    assert got.code == 1 and "over the $0.0000 budget (--max-cost)" in got.err
    assert emulator.seen.files == [] and not list(Path(on_emulator.root / "target/batches/openai/kb_embeddings")
                                                  .glob("*.jsonl"))


@pytest.mark.parametrize("point", ["after_record", "after_upload", "after_create", "after_download", "mid_store"])
def test_a_killed_embedding_run_is_resumed_without_repeating_paid_work(point: str, on_emulator: Project,
                                                                        emulator: Emulator) -> None:
    emulator.step_per_poll = True  # batches are still open when the process dies
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMT_")}
    command = [sys.executable, "-m", "llmt", "run", "--target", "openai", "--project-dir", str(on_emulator.root)]
    killed = subprocess.run(command, env={**env, "LLMT_CRASH_AT": point}, capture_output=True, text=True,
                            timeout=60)
    assert killed.returncode == -9, killed.stderr
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    for article, _, body in ARTICLES:
        assert vectors(on_emulator)[article] == pytest.approx(fake_vector(body, 64), abs=1e-6)
    assert set(emulator.seen.batches_per("shard_id").values()) == {1}  # no batch created twice
    assert set(emulator.seen.answered.values()) == {1}  # no line answered twice
    assert on_emulator.query("select count(*), count(distinct request_key) from _llmt.attempts "
                             "where outcome = 'ok'") == [(5, 5)]


def test_embedding_models_have_their_batches_in_flight_at_once(on_emulator: Project, emulator: Emulator) -> None:
    from tests.test_stop import start_run

    on_emulator.write("models/kb_titles.sql", MODEL.replace("column='body'", "column='title'"))
    for _ in range(2):
        emulator.faults.next_batch(stall_after=0)  # each batch answers nothing until it is let go
    run = start_run(on_emulator.root, emulator, "sk-test")
    try:
        # one model at a time would wait on the first batch forever: both exist while neither has ended
        emulator.wait_for(lambda: len(emulator.seen.batches) == 2, timeout=60)
        assert sorted(b["metadata"]["node"] for b in emulator.seen.batches) == ["kb_embeddings", "kb_titles"]
    finally:
        for b in emulator.seen.batches:
            emulator.release(str(b["id"]))
        _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    titles = dict(on_emulator.query("select article_id, embedding from main.kb_titles"))
    assert titles["KB-1"] == pytest.approx(fake_vector("Paper jam", 64), abs=1e-6)
