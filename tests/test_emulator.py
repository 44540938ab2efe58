"""The OpenAI Batch API emulator, driven through the real ``openai`` SDK."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import jsonschema
import openai
import pytest

from llmt.providers.fake import batch_info
from llmt.providers.synth import FaultPlan
from tests.emulator import Emulator, Timing, fixtures

emulator = fixtures.emulator  # the fixture (until tests/conftest.py imports it)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "issues": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["sentiment", "score", "issues"],
    "additionalProperties": False,
}
VALID = jsonschema.Draft202012Validator(SCHEMA)
ENDPOINT: Literal["/v1/chat/completions"] = "/v1/chat/completions"


def body(text: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "system", "content": "Analyse."}, {"role": "user", "content": text}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "analysis", "strict": True, "schema": SCHEMA},
        },
    }


def requests(n: int) -> list[dict[str, Any]]:
    return [{"custom_id": f"c{i}", "method": "POST", "url": ENDPOINT, "body": body(f"review {i}")} for i in range(n)]


def upload(client: Any, tmp_path: Path, lines: list[Any], name: str = "shard.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    with path.open("rb") as f:
        file_id: str = client.files.create(file=f, purpose="batch").id
    return file_id


def submit(client: Any, tmp_path: Path, lines: list[Any], shard: str = "s1") -> Any:
    file_id = upload(client, tmp_path, lines)
    return client.batches.create(
        input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h", metadata={"shard_id": shard}
    )


def read(client: Any, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def counts(batch: Any) -> dict[str, int]:
    assert batch.request_counts is not None
    out: dict[str, int] = batch.request_counts.model_dump()
    return out


def message(line: dict[str, Any]) -> tuple[Any, Any, str]:
    choice = line["response"]["body"]["choices"][0]
    return choice["message"]["content"], choice["message"]["refusal"], choice["finish_reason"]


# --------------------------------------------------------------------------- lifecycle


def test_batch_walks_each_stage_and_answers_follow_the_schema(emulator: Emulator, tmp_path: Path) -> None:
    emulator.step_per_poll = True
    client = emulator.client()
    batch = submit(client, tmp_path, requests(4))
    assert batch.status == "validating" and batch.metadata == {"shard_id": "s1"}
    walked = [client.batches.retrieve(batch.id).status for _ in range(4)]
    assert walked == ["in_progress", "finalizing", "completed", "completed"]
    done = client.batches.retrieve(batch.id)
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.error_file_id is None
    assert counts(done) == {"total": 4, "completed": 4, "failed": 0}
    assert done.model == "gpt-4o-mini" and done.usage and done.usage.input_tokens > 0
    lines = read(client, done.output_file_id)
    assert sorted(x["custom_id"] for x in lines) == ["c0", "c1", "c2", "c3"]
    for line in lines:
        content, refusal, finish = message(line)
        assert VALID.is_valid(json.loads(content)) and refusal is None and finish == "stop"
        usage = line["response"]["body"]["usage"]
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert emulator.seen.answered == {f"c{i}": 1 for i in range(4)}
    info = batch_info(done.model_dump())
    assert info.status == "completed" and info.total == 4 and info.metadata == {"shard_id": "s1"}


def test_stages_follow_the_virtual_clock(tmp_path: Path) -> None:
    emu = Emulator(timing=Timing(validating=10, in_progress=100, finalizing=10)).start()
    try:
        client = emu.client()
        batch = submit(client, tmp_path, requests(10))
        assert client.batches.retrieve(batch.id).status == "validating"
        emu.advance(10)
        assert client.batches.retrieve(batch.id).status == "in_progress"
        emu.advance(50)
        half = client.batches.retrieve(batch.id)
        assert half.status == "in_progress" and 4 <= counts(half)["completed"] <= 6
        emu.advance(50)
        assert client.batches.retrieve(batch.id).status == "finalizing"
        emu.advance(10)
        assert client.batches.retrieve(batch.id).status == "completed"
    finally:
        emu.stop()


def test_list_is_newest_first_with_cursor_pagination(emulator: Emulator, tmp_path: Path) -> None:
    client = emulator.client()
    ids = [submit(client, tmp_path, requests(1), shard=f"s{i}").id for i in range(5)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    nxt = client.batches.list(limit=2, after=page.data[-1].id)
    assert [b.id for b in nxt.data] == ids[::-1][2:4]
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # auto-pagination
    shards = [(b.metadata or {})["shard_id"] for b in client.batches.list(limit=100)]
    assert shards == ["s4", "s3", "s2", "s1", "s0"]


# --------------------------------------------------------------------------- HTTP faults


def test_429_with_retry_after_is_retried(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults.rate_limit_next(2, retry_after=0.01, path="/v1/batches", method="POST")
    batch = submit(emulator.client(max_retries=2), tmp_path, requests(1))
    assert batch.status == "validating"
    statuses = [(status, retry) for _, _, status, retry in emulator.seen.requests("POST", "/v1/batches")]
    assert statuses == [(429, 0), (429, 1), (200, 2)]
    assert len(emulator.seen.batches) == 1

    emulator.faults.rate_limit_next(1, retry_after=0.02)
    with pytest.raises(openai.RateLimitError) as caught:
        emulator.client(max_retries=0).batches.list()
    assert caught.value.status_code == 429 and caught.value.response.headers["retry-after"] == "0.02"
    assert caught.value.code == "rate_limit_exceeded"


def test_500s_are_retried_then_surface(emulator: Emulator, tmp_path: Path) -> None:
    client = emulator.client(max_retries=1)
    file_id = upload(client, tmp_path, requests(1))
    emulator.faults.server_error_next(1, path=f"/v1/files/{file_id}", retry_after=0.001)
    assert client.files.retrieve(file_id).id == file_id
    emulator.faults.server_error_next(2, status=503, retry_after=0.001)
    with pytest.raises(openai.InternalServerError) as caught:
        client.files.retrieve(file_id)
    assert caught.value.status_code == 503
    assert caught.value.body == {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }


def test_a_dropped_connection_after_commit_is_created_twice_by_a_retry(emulator: Emulator, tmp_path: Path) -> None:
    client = emulator.client(max_retries=1)
    file_id = upload(client, tmp_path, requests(2))
    emulator.faults.drop_after_commit_next(1)
    client.batches.create(
        input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h", metadata={"shard_id": "s1"}
    )
    assert emulator.seen.batches_per("shard_id") == {"s1": 2}  # the SDK's retry created it again

    emulator.faults.drop_after_commit_next(1)
    with pytest.raises(openai.APIConnectionError):
        emulator.client(max_retries=0).batches.create(
            input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h", metadata={"shard_id": "s2"}
        )
    found = [b for b in client.batches.list() if (b.metadata or {}).get("shard_id") == "s2"]
    assert len(found) == 1  # committed although the client saw an error: find it, do not create again


def test_a_dropped_connection_before_work_commits_nothing(emulator: Emulator, tmp_path: Path) -> None:
    client = emulator.client(max_retries=0)
    file_id = upload(client, tmp_path, requests(1))
    emulator.faults.drop_next(1, path="/v1/batches")
    with pytest.raises(openai.APIConnectionError):
        client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h")
    assert emulator.seen.batches == []


def test_slow_responses(emulator: Emulator, tmp_path: Path) -> None:
    file_id = upload(emulator.client(), tmp_path, requests(1))
    client = emulator.client(max_retries=0, timeout=0.05)
    emulator.faults.slow_next(1, delay=0.3, path="/v1/batches", method="POST")
    with pytest.raises(openai.APITimeoutError):
        client.batches.create(
            input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h", metadata={"shard_id": "s1"}
        )
    emulator.wait_for(lambda: len(emulator.seen.batches) == 1)  # the server still created it
    emulator.faults.slow_next(1, delay=0.01)
    assert emulator.client(timeout=2).batches.list().data[0].metadata == {"shard_id": "s1"}


# --------------------------------------------------------------------------- batch faults


def test_validation_failure_reports_lines(emulator: Emulator, tmp_path: Path) -> None:
    client = emulator.client()
    good = requests(2)
    lines = [
        good[0],
        "{not json",
        {**good[1], "url": "/v1/embeddings"},
        {**good[1], "custom_id": "c0"},
        {**good[1], "custom_id": "c9", "body": body("x", model="gpt-4o")},
    ]
    batch = client.batches.retrieve(submit(client, tmp_path, lines).id)
    assert batch.status == "failed" and batch.failed_at and batch.output_file_id is None
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.code, e.line) for e in batch.errors.data] == [
        ("invalid_json_line", 2),
        ("invalid_url", 3),
        ("duplicate_custom_id", 4),
        ("model_mismatch", 5),
    ]
    assert batch.errors.data[0].message == "This line is not parseable as valid JSON."
    assert emulator.seen.answered == {}


def test_token_limit_exceeded(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults.fail_next_batch("token_limit_exceeded")
    client = emulator.client()
    batch = client.batches.retrieve(submit(client, tmp_path, requests(3)).id)
    assert batch.status == "failed" and batch.errors and batch.errors.data
    error = batch.errors.data[0]
    assert error.code == "token_limit_exceeded" and error.line is None
    assert "gpt-4o-mini" in (error.message or "")
    assert client.batches.retrieve(submit(client, tmp_path, requests(3)).id).status == "completed"


def test_expiry_with_partial_output(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults.next_batch(expire_after=2)
    client = emulator.client()
    batch = client.batches.retrieve(submit(client, tmp_path, requests(5)).id)
    assert batch.status == "expired" and batch.expired_at
    assert counts(batch) == {"total": 5, "completed": 2, "failed": 3}
    assert [x["custom_id"] for x in read(client, batch.output_file_id)] == ["c0", "c1"]
    errors = read(client, batch.error_file_id)
    assert [x["custom_id"] for x in errors] == ["c2", "c3", "c4"]
    assert all(x["response"] is None and x["error"]["code"] == "batch_expired" for x in errors)


def test_expiry_when_the_window_passes(tmp_path: Path) -> None:
    emu = Emulator(timing=Timing(in_progress=40 * 3600)).start()
    try:
        client = emu.client()
        batch = submit(client, tmp_path, requests(4))
        emu.advance(24 * 3600 + 1)
        late = client.batches.retrieve(batch.id)
        assert late.status == "expired" and counts(late)["completed"] == 2
    finally:
        emu.stop()


def test_cancel_with_partial_output(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults.next_batch(stall_after=2)
    client = emulator.client()
    batch = submit(client, tmp_path, requests(5))
    running = client.batches.retrieve(batch.id)
    assert running.status == "in_progress" and counts(running)["completed"] == 2
    assert client.batches.cancel(batch.id).status == "cancelling"
    done = client.batches.retrieve(batch.id)
    assert done.status == "cancelled" and done.cancelling_at and done.cancelled_at
    assert len(read(client, done.output_file_id)) == 2
    errors = read(client, done.error_file_id)
    assert {x["error"]["code"] for x in errors} == {"batch_cancelled"} and len(errors) == 3
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(batch.id)


def test_a_released_stall_completes(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults.next_batch(stall_after=1)
    client = emulator.client()
    batch = submit(client, tmp_path, requests(3))
    assert client.batches.retrieve(batch.id).status == "in_progress"
    emulator.release(batch.id)
    assert emulator.batch(batch.id)["status"] == "completed"


def test_a_completed_batch_whose_every_line_failed(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults.next_batch(all_lines_status=500)
    client = emulator.client()
    batch = client.batches.retrieve(submit(client, tmp_path, requests(3)).id)
    assert batch.status == "completed" and batch.output_file_id is None
    assert counts(batch) == {"total": 3, "completed": 0, "failed": 3}
    errors = read(client, batch.error_file_id)
    assert {x["response"]["status_code"] for x in errors} == {500}
    assert errors[0]["response"]["body"]["error"]["type"] == "server_error"


def test_shuffled_output_order(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults.shuffle_output = True
    client = emulator.client()
    batch = client.batches.retrieve(submit(client, tmp_path, requests(20)).id)
    ids = [x["custom_id"] for x in read(client, batch.output_file_id)]
    assert sorted(ids) == sorted(f"c{i}" for i in range(20)) and ids != [f"c{i}" for i in range(20)]


def test_missing_lines(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults.next_batch(drop_lines=2)
    client = emulator.client()
    batch = client.batches.retrieve(submit(client, tmp_path, requests(6)).id)
    assert batch.status == "completed" and counts(batch)["completed"] == 6
    assert len(read(client, batch.output_file_id)) == 4 and batch.error_file_id is None


def test_per_line_400_and_500(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults.line_outcome("c1", "http_error_400")
    emulator.faults.line_outcome("c2", "http_error_500")
    client = emulator.client()
    batch = client.batches.retrieve(submit(client, tmp_path, requests(4)).id)
    assert counts(batch) == {"total": 4, "completed": 2, "failed": 2}
    errors = {x["custom_id"]: x for x in read(client, batch.error_file_id)}
    assert errors["c1"]["response"]["status_code"] == 400 and errors["c1"]["error"] is None
    assert errors["c1"]["response"]["body"]["error"]["code"] == "context_length_exceeded"
    assert errors["c2"]["response"]["status_code"] == 500
    assert set(errors["c2"]["response"]["body"]["error"]) == {"message", "type", "param", "code"}
    again = client.batches.retrieve(submit(client, tmp_path, requests(4), shard="s2").id)
    assert again.error_file_id is None  # forced outcomes are consumed


def test_refusal_length_filter_invalid_json_and_schema_violation(emulator: Emulator, tmp_path: Path) -> None:
    for custom_id, kind in [
        ("c0", "refused"),
        ("c1", "truncated"),
        ("c2", "content_filter"),
        ("c3", "invalid_json"),
        ("c4", "schema_violation"),
    ]:
        emulator.faults.line_outcome(custom_id, kind)
    client = emulator.client()
    batch = client.batches.retrieve(submit(client, tmp_path, requests(6)).id)
    out = {x["custom_id"]: message(x) for x in read(client, batch.output_file_id)}
    assert out["c0"][0] is None and out["c0"][1] and out["c0"][2] == "stop"
    assert out["c1"][2] == "length"
    with pytest.raises(ValueError):
        json.loads(out["c1"][0])
    assert out["c2"][0] is None and out["c2"][2] == "content_filter"
    with pytest.raises(ValueError):
        json.loads(out["c3"][0])
    assert not VALID.is_valid(json.loads(out["c4"][0]))
    assert VALID.is_valid(json.loads(out["c5"][0]))


def test_fault_fractions_roll_per_batch(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults.lines = FaultPlan(refused=0.5)
    client = emulator.client()
    first = client.batches.retrieve(submit(client, tmp_path, requests(40)).id)
    refused = {x["custom_id"] for x in read(client, first.output_file_id) if message(x)[0] is None}
    assert 8 < len(refused) < 32
    second = client.batches.retrieve(submit(client, tmp_path, requests(40), shard="s2").id)
    again = {x["custom_id"] for x in read(client, second.output_file_id) if message(x)[0] is None}
    assert again != refused


def test_empty_string_file_ids(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults.empty_file_ids = True
    client = emulator.client()
    batch = submit(client, tmp_path, requests(2))
    assert batch.output_file_id == "" and batch.error_file_id == ""
    done = client.batches.retrieve(batch.id)
    assert done.output_file_id and done.error_file_id == ""
    with pytest.raises(ValueError):
        client.files.content(done.error_file_id)  # the SDK refuses an empty id
    assert batch_info(done.model_dump()).error_file_id is None


def test_404_on_an_output_file(emulator: Emulator, tmp_path: Path) -> None:
    emulator.faults.next_batch(output_missing=True)
    client = emulator.client()
    batch = client.batches.retrieve(submit(client, tmp_path, requests(2)).id)
    assert batch.status == "completed" and batch.output_file_id
    with pytest.raises(openai.NotFoundError) as caught:
        client.files.content(batch.output_file_id)
    assert caught.value.body == {
        "message": f"No such File object: {batch.output_file_id}",
        "type": "invalid_request_error",
        "param": "id",
        "code": None,
    }


# --------------------------------------------------------------------------- files and requests


def test_files_endpoints(emulator: Emulator, tmp_path: Path) -> None:
    client = emulator.client()
    file_id = upload(client, tmp_path, requests(2))
    info = client.files.retrieve(file_id)
    assert info.purpose == "batch" and info.filename == "shard.jsonl" and info.bytes > 0
    assert client.files.content(file_id).text.count("\n") == 2
    assert [f.id for f in client.files.list()] == [file_id]
    assert client.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file_id)
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h")
    assert [f["id"] for f in emulator.seen.files] == [file_id]


@pytest.mark.parametrize(
    ("purpose", "name", "param"),
    [("batch", "shard.txt", "file"), ("nonsense", "shard.jsonl", "purpose")],
)
def test_upload_errors(emulator: Emulator, tmp_path: Path, purpose: str, name: str, param: str) -> None:
    path = tmp_path / name
    path.write_text("{}\n")
    with pytest.raises(openai.BadRequestError) as caught, path.open("rb") as f:
        emulator.client().files.create(file=f, purpose=purpose)  # type: ignore[arg-type]
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"endpoint": "/v1/nope"}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ],
)
def test_create_batch_errors(emulator: Emulator, tmp_path: Path, params: dict[str, Any], param: str) -> None:
    client = emulator.client()
    args: dict[str, Any] = {"input_file_id": upload(client, tmp_path, requests(1)), "endpoint": ENDPOINT}
    args["completion_window"] = "24h"
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(**{**args, **params})
    assert caught.value.param == param and emulator.seen.batches == []


def test_unknown_batch_and_bad_key(tmp_path: Path) -> None:
    emu = Emulator(api_key="sk-right").start()
    try:
        with pytest.raises(openai.NotFoundError):
            emu.client().batches.retrieve("batch_nope")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(api_key="sk-wrong", base_url=emu.base_url, max_retries=0).batches.list()
    finally:
        emu.stop()


def test_chat_completions(emulator: Emulator) -> None:
    client = emulator.client(max_retries=2)
    completion = client.chat.completions.create(**body("great phone"))
    assert completion.object == "chat.completion" and completion.usage and completion.usage.total_tokens > 0
    assert VALID.is_valid(json.loads(completion.choices[0].message.content or ""))
    again = client.chat.completions.create(**body("great phone"))
    assert again.choices[0].message.content == completion.choices[0].message.content

    emulator.faults.realtime_next("refused")
    refused = client.chat.completions.create(**body("great phone"))
    assert refused.choices[0].message.content is None and refused.choices[0].message.refusal
    emulator.faults.rate_limit_next(1, path="/v1/chat/completions")
    assert client.chat.completions.create(**body("x")).choices[0].finish_reason == "stop"
    emulator.faults.realtime_next("http_error_500")
    with pytest.raises(openai.InternalServerError):
        emulator.client(max_retries=0).chat.completions.create(**body("x"))
    emulator.faults.realtime_next("http_error_400")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body("x"))
    assert caught.value.code == "context_length_exceeded"
    assert emulator.seen.realtime == 6
