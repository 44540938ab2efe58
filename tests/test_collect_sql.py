"""Collecting a batch: every outcome, detail, token count and cost equals what `classify` (the realtime path)
gives the same line, and every submitted key gets exactly one attempt whatever the files hold (duplicates,
unreadable lines, unknown ids). Each test runs on DuckDB and on PostgreSQL (lines classified by a scratch DuckDB,
sent by COPY, reconciled on the server)."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmt.console import Reporter
from llmt.cost import price_table
from llmt.pipeline import batches
from llmt.pipeline.batches import Batches
from llmt.pipeline.collect import classify
from llmt.pipeline.context import Limits, Providers, RunContext
from llmt.project.config import PostgresConfig
from llmt.providers.base import BatchInfo, BatchLineError, BatchProvider, Shard
from llmt.schema import to_strict
from llmt.validate import AnswerValidator
from llmt.warehouse.base import Warehouse
from llmt.warehouse.duckdb import DuckDBWarehouse
from llmt.warehouse.postgres import PostgresWarehouse
from llmt.warehouse.store import ShardRow, StateStore
from tests.conftest import SCHEMA
from tests.pg import PgDatabase

STRICT = to_strict(SCHEMA, where="test")
VALID = '{"sentiment":"positive","score":7,"issues":[],"competitor":null}'
OTHER = '{"sentiment":"negative","score":2,"issues":["battery"],"competitor":"Acme"}'
PRICES = price_table()
MODEL = "gpt-4o-mini"


def answered(key: str, content: Any = VALID, *, finish: str = "stop", refusal: Any = None,
             usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """A result line with a 200 response."""
    message = {"role": "assistant", "content": content, "refusal": refusal}
    body = {"id": "chatcmpl-1", "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 913, "completion_tokens": 41, "total_tokens": 954,
                      "prompt_tokens_details": {"cached_tokens": 512}} if usage is None else usage}
    return {"id": "batch_req_1", "custom_id": key, "response": {"status_code": 200, "body": body}, "error": None}


def http(key: str, status: int, error: dict[str, Any]) -> dict[str, Any]:
    return {"id": "batch_req_2", "custom_id": key, "response": {"status_code": status, "body": {"error": error}},
            "error": None}


def failed(key: str, code: str, message: str) -> dict[str, Any]:
    """An error-file line: no response, an error."""
    return {"id": "batch_req_3", "custom_id": key, "response": None, "error": {"code": code, "message": message}}


REFUSAL = "Je ne peux pas — désolé. " * 40  # over 500 characters, not ASCII
OUTPUT_LINES: dict[str, tuple[str, dict[str, Any]]] = {  # key -> (expected outcome, line)
    "ok": ("ok", answered("ok")),
    "ok_escaped": ("ok", answered("ok_escaped", '{"sentiment":"neutral","score":1,"issues":["a \\"b\\" é\\n\\u00e9 ☃"],'
                                                '"competitor":null}', usage={"prompt_tokens": 10})),
    "ok_no_usage": ("ok", answered("ok_no_usage", usage={})),
    "refused": ("refused", answered("refused", None, refusal="I can't help with that.")),
    "refused_long": ("refused", answered("refused_long", None, refusal=REFUSAL)),
    "empty_refusal": ("ok", answered("empty_refusal", refusal="")),
    "truncated": ("truncated", answered("truncated", VALID[:20], finish="length")),
    "content_filter": ("content_filter", answered("content_filter", None, finish="content_filter")),
    "not_json": ("invalid_json", answered("not_json", '{"sentiment": "positive", "sco')),
    "violation": ("schema_violation", answered("violation", '{"sentiment":"happy","score":11,"issues":[],'
                                                            '"competitor":null}')),
    "no_content": ("invalid_json", answered("no_content", None)),
    "content_object": ("invalid_json", answered("content_object", {"sentiment": "positive"})),
    "no_choices": ("invalid_json", {"custom_id": "no_choices", "response": {"status_code": 200, "body": {
        "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 0}}}}),
    "http_400": ("http_error", http("http_400", 400, {"code": "invalid_request_error", "message": "bad " * 200})),
    "http_500": ("http_error", http("http_500", 500, {"code": None, "type": "server_error", "message": "oops"})),
    "http_429": ("http_error", http("http_429", 429, {"code": "", "type": "", "message": None})),
    "no_response": ("http_error", {"custom_id": "no_response", "response": None, "error": None}),
}
ERROR_LINES: dict[str, tuple[str, dict[str, Any]]] = {
    "expired": ("expired", failed("expired", "batch_expired", "not run before the window expired")),
    "cancelled": ("cancelled", failed("cancelled", "batch_cancelled", "the batch was cancelled")),
    "server": ("http_error", failed("server", "server_error", "")),
}


class Serve(BatchProvider):
    """Serves result files by id (their path); collection needs nothing else."""

    def upload(self, shard: Shard) -> str:
        raise AssertionError("not used")

    def find_batch(self, shard: Shard) -> BatchInfo | None:
        raise AssertionError("not used")

    def create_batch(self, shard: Shard, file_id: str) -> BatchInfo:
        raise AssertionError("not used")

    def retrieve(self, batch_id: str) -> BatchInfo:
        raise AssertionError("not used")

    def download(self, file_id: str, dest: Path) -> bool:
        shutil.copyfile(file_id, dest)
        return True

    def cancel(self, batch_id: str) -> BatchInfo:
        raise AssertionError("not used")

    def check(self) -> str:
        raise AssertionError("not used")


class Harness:
    def __init__(self, root: Path, wh: Warehouse) -> None:
        self.root = root
        self.wh = wh
        self.run = RunContext("run-1", "demo", self.wh, StateStore(self.wh), Providers(Serve(), None, Limits()), PRICES,
                              Reporter(), root, root / "batches")
        self.batches = Batches(self.run)
        self.replace = False  # --reask

    def shard(self, shard_id: str, keys: list[str]) -> ShardRow:
        row = ShardRow(shard_id, "run-0", "insights", MODEL, str(self.root / f"{shard_id}.jsonl"), len(keys),
                       json.dumps(STRICT), "submitted", "file-1", f"batch-{shard_id}", "in_progress")
        self.wh.execute("INSERT INTO _llmt.shards (shard_id, run_id, node, model, provider, path, n_requests, "
                        "response_schema, status) VALUES (?, ?, ?, ?, 'batch', ?, ?, ?, 'submitted')",
                        [row.shard_id, row.run_id, row.node, row.model, row.path, row.n_requests, row.response_schema])
        self.wh.execute("INSERT INTO _llmt.shard_requests SELECT ?, unnest(?::VARCHAR[])", [shard_id, keys])
        return row

    def file(self, name: str, lines: list[dict[str, Any] | str | bytes]) -> str:
        path = self.root / name
        path.write_bytes(b"".join(
            (x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode()) + b"\n"
            for x in lines))
        return str(path)

    def collect(self, row: ShardRow, status: str = "completed", output: str | None = None,
                error_file: str | None = None, **info: Any) -> dict[str, int]:
        batch = BatchInfo(str(row.batch_id), status, output_file_id=output, error_file_id=error_file, **info)
        work = self.root / "work"
        work.mkdir(exist_ok=True)
        return self.batches.collect([(row, batch)], work, self.replace)

    def attempts(self, shard_id: str) -> dict[str, tuple[Any, ...]]:
        rows = self.wh.fetchall(
            "SELECT request_key, outcome, status_code, error_code, detail, prompt_tokens, completion_tokens, "
            "cached_tokens, cost_usd, run_id, node, model, batch FROM _llmt.attempts WHERE shard_id = ?", [shard_id])
        assert len(rows) == len({r[0] for r in rows}), "one attempt per key"
        return {r[0]: r[1:] for r in rows}

    def answers(self) -> dict[str, tuple[Any, ...]]:
        rows = self.wh.fetchall("SELECT request_key, answer, shard_id, prompt_tokens FROM _llmt.answers")
        return {r[0]: r[1:] for r in rows}


@pytest.fixture(params=["duckdb", "postgres"])
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "postgres":
        db: PgDatabase = request.getfixturevalue("pg")
        wh: Warehouse = PostgresWarehouse(PostgresConfig(type="postgres", dsn=db.uri), "test")
    else:
        wh = DuckDBWarehouse("state.duckdb", tmp_path)
    harness = Harness(tmp_path, wh)
    yield harness
    harness.wh.close()


def test_every_outcome_equals_classify_of_the_same_line(h: Harness) -> None:
    lines = {**OUTPUT_LINES, **ERROR_LINES}
    row = h.shard("s1", [*lines, "missing"])
    output = h.file("out.jsonl", [line for _, line in OUTPUT_LINES.values()])
    errors = h.file("err.jsonl", [line for _, line in ERROR_LINES.values()])
    counts = h.collect(row, output=output, error_file=errors)

    validator = AnswerValidator(STRICT, "insights")
    got = h.attempts("s1")
    for key, (outcome, line) in lines.items():
        a = classify(line, validator)
        cost = PRICES.cost(MODEL, prompt=a.prompt_tokens, completion=a.completion_tokens, cached=a.cached_tokens,
                           batch=True)
        expected = (a.outcome, a.status_code, a.error_code, a.detail, a.prompt_tokens, a.completion_tokens,
                    a.cached_tokens, cost, "run-1", "insights", MODEL, True)
        assert a.outcome == outcome, key
        assert got[key] == expected, key
    assert got["missing"][:4] == ("missing", None, None, "no result line (batch completed)")
    assert got["refused_long"][3] == REFUSAL[:500]
    assert got["ok"][7] > 0
    assert counts == {"ok": 4, "refused": 2, "truncated": 1, "content_filter": 1, "invalid_json": 4,
                      "schema_violation": 1, "http_error": 5, "expired": 1, "cancelled": 1, "missing": 1}
    answers = h.answers()
    assert set(answers) == {k for k, (o, _) in lines.items() if o == "ok"}
    for key, (answer, shard_id, prompt) in answers.items():
        message = lines[key][1]["response"]["body"]["choices"][0]["message"]
        assert (answer, shard_id, prompt) == (message["content"], "s1", got[key][4])


@pytest.mark.parametrize(
    ("status", "outcome", "error_code"),
    [("completed", "missing", None), ("expired", "expired", None), ("cancelled", "cancelled", None),
     ("failed", "batch_failed", "token_limit_exceeded")],
)
def test_a_key_without_a_line_gets_the_batch_outcome(h: Harness, status: str, outcome: str,
                                                     error_code: str | None) -> None:
    row = h.shard("s1", ["a", "b"])
    output = h.file("out.jsonl", [answered("a")]) if status != "failed" else None
    errors = (BatchLineError("token_limit_exceeded", "the queue is full"),) if status == "failed" else ()
    h.collect(row, status, output=output, errors=errors)
    got = h.attempts("s1")
    assert got["b"][:4] == (outcome, None, error_code, f"no result line (batch {status})")
    assert got["b"][4:8] == (0, 0, 0, 0.0)
    assert got["a"][0] == ("batch_failed" if status == "failed" else "ok")
    assert h.wh.fetchall("SELECT status, batch_status FROM _llmt.shards") == [("collected", status)]


def test_a_key_with_several_lines_takes_its_first_ok_one_else_its_first(h: Harness) -> None:
    row = h.shard("s1", ["a", "b", "c", "d"])
    output = h.file("out.jsonl", [
        http("a", 500, {"type": "server_error", "message": "oops"}), answered("a", OTHER), answered("a", VALID),
        answered("b", None, refusal="no"), answered("b", VALID[:10], finish="length"),
        answered("c", VALID), answered("c", None, refusal="no"),
        answered("d", '{"sentiment":"happy","score":1,"issues":[],"competitor":null}'),
    ])
    errors = h.file("err.jsonl", [failed("d", "batch_expired", "late"), answered("b", VALID)])
    counts = h.collect(row, output=output, error_file=errors)
    got = h.attempts("s1")
    assert {k: v[0] for k, v in got.items()} == {"a": "ok", "b": "ok", "c": "ok", "d": "schema_violation"}
    assert counts == {"ok": 3, "schema_violation": 1}
    assert {k: v[0] for k, v in h.answers().items()} == {"a": OTHER, "b": VALID, "c": VALID}


def test_unreadable_lines_are_skipped_and_their_keys_reconciled(h: Harness) -> None:
    row = h.shard("s1", ["a", "b", "c", "d"])
    output = h.file("out.jsonl", [
        answered("a"), "garbage {", "", "   ", b"\xff\xfe not utf-8", "[1, 2]", '"a string"',
        '{"custom_id": "b", "response": {"status_code": 200, "bo', answered("c"),
        {"custom_id": "d", "response": {"status_code": 200, "body": {"choices": {"not": "a list"}}}},
    ])
    counts = h.collect(row, output=output)
    got = h.attempts("s1")
    assert {k: v[0] for k, v in got.items()} == {"a": "ok", "b": "missing", "c": "ok", "d": "invalid_json"}
    assert counts == {"ok": 2, "missing": 1, "invalid_json": 1}


def test_ids_nobody_asked_for_are_ignored(h: Harness) -> None:
    row = h.shard("s1", ["a"])
    output = h.file("out.jsonl", [answered("zz"), answered("a"), {"response": None}, answered("s1")])
    assert h.collect(row, output=output) == {"ok": 1}
    assert list(h.attempts("s1")) == ["a"]
    assert list(h.answers()) == ["a"]


def test_collecting_twice_stores_once_and_reask_replaces_answers(h: Harness) -> None:
    first = h.shard("s1", ["a", "b"])
    output = h.file("out1.jsonl", [answered("a", VALID), answered("b", None, refusal="no")])
    h.collect(first, output=output)
    h.collect(first, output=output)
    assert h.attempts("s1") and len(h.attempts("s1")) == 2
    second = h.shard("s2", ["a"])
    h.collect(second, output=h.file("out2.jsonl", [answered("a", OTHER)]))
    assert h.answers()["a"][:2] == (VALID, "s1")  # an answer is kept...
    third = h.shard("s3", ["a"])
    h.replace = True
    h.collect(third, output=h.file("out3.jsonl", [answered("a", OTHER)]))
    assert h.answers()["a"][:2] == (OTHER, "s3")  # ...unless asked again (--reask)
    assert h.wh.fetchall("SELECT count(*) FROM _llmt.attempts") == [(4,)]


def test_shards_collected_together_are_reconciled_each_with_its_own_files_and_batch(h: Harness) -> None:
    s1, s2 = h.shard("s1", ["a", "b"]), h.shard("s2", ["c", "d"])
    # each file also carries a line for the other shard's key: a shard takes only the lines of its own files
    out1 = h.file("out1.jsonl", [answered("a", VALID), answered("c", OTHER)])
    out2 = h.file("out2.jsonl", [answered("c", VALID), answered("a", OTHER), answered("b", OTHER)])
    work = h.root / "work"
    work.mkdir()
    counts = h.batches.collect([
        (s1, BatchInfo("batch-s1", "completed", output_file_id=out1)),
        (s2, BatchInfo("batch-s2", "expired", output_file_id=out2)),
    ], work)
    assert counts == {"ok": 2, "missing": 1, "expired": 1}
    assert {k: v[0] for k, v in h.attempts("s1").items()} == {"a": "ok", "b": "missing"}
    assert {k: v[0] for k, v in h.attempts("s2").items()} == {"c": "ok", "d": "expired"}
    assert {k: v[:2] for k, v in h.answers().items()} == {"a": (VALID, "s1"), "c": (VALID, "s2")}
    assert h.wh.fetchall("SELECT shard_id, status, batch_status FROM _llmt.shards ORDER BY 1") == [
            ("s1", "collected", "completed"), ("s2", "collected", "expired")]


def test_a_key_answered_in_two_shards_collected_together_is_stored_once(h: Harness) -> None:
    # not expected (a key is in one open shard at a time), but the answers table has no key constraint:
    # the first shard's answer is kept, as when the shards are collected one by one
    s1, s2 = h.shard("s1", ["a"]), h.shard("s2", ["a", "b"])
    work = h.root / "work"
    work.mkdir()
    counts = h.batches.collect([
        (s2, BatchInfo("batch-s2", "completed", output_file_id=h.file("o2.jsonl", [answered("a", OTHER),
                                                                                   answered("b", VALID)]))),
        (s1, BatchInfo("batch-s1", "completed", output_file_id=h.file("o1.jsonl", [answered("a", VALID)]))),
    ], work)
    assert counts == {"ok": 3}
    assert {k: v[:2] for k, v in h.answers().items()} == {"a": (VALID, "s1"), "b": (VALID, "s2")}
    assert h.wh.fetchone("SELECT count(*) FROM _llmt.answers") == (2,)


def test_ended_shards_are_grouped_by_model_and_up_to_a_number_of_requests(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches, "COLLECT_REQUESTS", 5)
    rows = [h.shard(f"s{i}", [f"k{i}-{j}" for j in range(n)]) for i, n in enumerate([2, 3, 1, 4, 6])]
    rows[2].model = "gpt-4o"  # another model: its own group
    ended = [(row, BatchInfo(str(row.batch_id), "completed")) for row in rows]
    groups = [[row.shard_id for row, _ in group] for group in batches._groups(ended)]
    assert groups == [["s0", "s1"], ["s3"], ["s4"], ["s2"]]  # a shard larger than the limit goes alone


def test_the_result_files_of_shards_collected_together_are_downloaded_at_once(h: Harness) -> None:
    together = threading.Barrier(3, timeout=60)  # lets downloads through only three at a time

    class Together(Serve):
        def download(self, file_id: str, dest: Path) -> bool:
            together.wait()
            return super().download(file_id, dest)

    h.batches.provider = Together()
    rows = [h.shard(f"s{i}", [f"k{i}"]) for i in range(3)]
    work = h.root / "work"
    work.mkdir()
    ended = [(row, BatchInfo(str(row.batch_id), "completed", output_file_id=h.file(f"o{i}.jsonl", [answered(f"k{i}")])))
             for i, row in enumerate(rows)]
    assert h.batches.collect(ended, work) == {"ok": 3}
    assert sorted(p.name for p in work.iterdir()) == ["s0.output.jsonl", "s1.output.jsonl", "s2.output.jsonl"]


def test_an_invalid_answer_is_not_stored_and_a_stored_answer_is_kept(h: Harness) -> None:
    violation = '{"sentiment":"happy","score":11,"issues":[],"competitor":null}'
    first = h.shard("s1", ["a"])
    assert h.collect(first, output=h.file("o1.jsonl", [answered("a", VALID)])) == {"ok": 1}
    second = h.shard("s2", ["a", "b", "c"])
    output = h.file("o2.jsonl", [answered("a", violation), answered("b", violation), answered("c", OTHER)])
    for _ in range(2):  # collecting again changes nothing
        assert h.collect(second, output=output) == {"ok": 1, "schema_violation": 2}
        got = h.attempts("s2")
        assert {k: v[0] for k, v in got.items()} == {"a": "schema_violation", "b": "schema_violation", "c": "ok"}
        assert got["b"][3].startswith("sentiment: ")
        # a's answer from s1 is kept, b has none, c's is stored
        assert {k: v[:2] for k, v in h.answers().items()} == {"a": (VALID, "s1"), "c": (OTHER, "s2")}
