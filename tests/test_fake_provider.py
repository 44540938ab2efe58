"""The offline fake provider and the synthetic answers it shares with the emulator."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from llmt.errors import ConfigError, ProviderError
from llmt.providers.base import Shard
from llmt.providers.fake import FakeProvider, validate_input
from llmt.providers.synth import FAULT_KINDS, FaultPlan, Pin, answer_line, synth_answer

REVIEW: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "score": {"type": ["integer", "null"], "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string"}},
        "reviewed_on": {"type": "string", "format": "date"},
    },
    "required": ["summary", "sentiment", "score", "tags", "reviewed_on"],
    "additionalProperties": False,
}


def _obj(props: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }
    if defs:
        schema["$defs"] = defs
    return schema


SCHEMAS: dict[str, dict[str, Any]] = {
    "review": REVIEW,
    "nested": _obj(
        {
            "product": _obj({"name": {"type": "string"}, "price": {"type": "number", "minimum": 0}}),
            "issues": {
                "type": "array",
                "items": _obj({"kind": {"type": "string", "enum": ["battery", "screen"]}}),
                "minItems": 1,
                "maxItems": 4,
            },
        }
    ),
    "nullable_everything": _obj(
        {
            "s": {"type": ["string", "null"]},
            "n": {"type": ["number", "null"]},
            "b": {"type": ["boolean", "null"]},
            "o": {"type": ["object", "null"], **_obj({"x": {"type": "integer"}})},
            "a": {"type": ["array", "null"], "items": {"type": "boolean"}},
        }
    ),
    "enums_and_consts": _obj(
        {
            "level": {"enum": ["low", "mid", "high", None]},
            "version": {"const": 2},
            "mixed": {"type": ["string", "integer"], "enum": ["a", 1, "b", 2]},
        }
    ),
    "any_of": _obj(
        {
            "item": {
                "anyOf": [
                    _obj({"kind": {"const": "book"}, "isbn": {"type": "string"}}),
                    _obj({"kind": {"const": "film"}, "minutes": {"type": "integer", "minimum": 1}}),
                    {"type": "null"},
                ]
            }
        }
    ),
    "refs_recursive": {
        **_obj({"root": {"$ref": "#/$defs/node"}}),
        "$defs": {
            "node": _obj(
                {
                    "label": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                }
            )
        },
    },
    "linked_list": {
        **_obj({"value": {"type": "integer"}, "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}),
    },
    "formats": _obj(
        {
            fmt: {"type": "string", "format": fmt}
            for fmt in ("date", "date-time", "time", "email", "uuid", "hostname", "ipv4", "ipv6", "duration")
        }
    ),
    "numbers": _obj(
        {
            "pct": {"type": "number", "minimum": 0, "maximum": 1},
            "open": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "neg": {"type": "integer", "maximum": -10},
            "big": {"type": "integer", "minimum": 1_000_000},
            "even": {"type": "integer", "multipleOf": 2, "minimum": 3, "maximum": 11},
            "xint": {"type": "integer", "exclusiveMinimum": 5, "exclusiveMaximum": 7},
            "quarter": {"type": "number", "multipleOf": 0.25, "minimum": 0, "maximum": 2},
        }
    ),
    "strings_and_lists": _obj(
        {
            "code": {"type": "string", "minLength": 30, "maxLength": 40},
            "short": {"type": "string", "maxLength": 5},
            "letters": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
            "none": {"type": "array", "items": {"type": "string"}, "maxItems": 0},
            "unique": {
                "type": "array",
                "items": {"enum": ["a", "b", "c"]},
                "uniqueItems": True,
                "minItems": 1,
                "maxItems": 3,
            },
        }
    ),
}


def _without_patterns(schema: Any) -> Any:
    """Patterns get plausible values only: do not check them."""
    if isinstance(schema, dict):
        return {k: _without_patterns(v) for k, v in schema.items() if k != "pattern" or not isinstance(v, str)}
    if isinstance(schema, list):
        return [_without_patterns(v) for v in schema]
    return schema


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_synth_answers_are_valid(name: str) -> None:
    validator = _validator(_without_patterns(SCHEMAS[name]))
    for i in range(150):
        value = synth_answer(SCHEMAS[name], seed=f"seed-{i}")
        errors = [e.message for e in validator.iter_errors(value)]
        assert not errors, (name, value, errors)


def test_synth_is_deterministic_and_varies_with_the_seed() -> None:
    assert synth_answer(REVIEW, "abc") == synth_answer(REVIEW, "abc")
    answers = [synth_answer(REVIEW, f"s{i}") for i in range(60)]
    assert len({a["sentiment"] for a in answers}) == 3
    assert len({a["score"] for a in answers}) >= 4
    assert None in {a["score"] for a in answers}
    assert len({len(a["tags"]) for a in answers}) >= 2
    assert len({a["summary"] for a in answers}) >= 55
    assert answers[0]["summary"].startswith("synthetic summary ")


def test_changing_one_property_leaves_the_others() -> None:
    wider = json.loads(json.dumps(REVIEW))
    wider["properties"]["extra"] = {"type": "string"}
    before, after = synth_answer(REVIEW, "k"), synth_answer(wider, "k")
    assert {k: after[k] for k in before} == before


def _request(text: str, custom_id: str = "r1", schema: dict[str, Any] = REVIEW, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "review", "strict": True, "schema": schema},
            },
            **body,
        },
    }


def _content(line: dict[str, Any]) -> Any:
    return line["response"]["body"]["choices"][0]["message"]["content"]


def test_answer_line_has_openai_shape_and_depends_only_on_the_body() -> None:
    line, is_error = answer_line(_request("great phone"), faults=None, batch_id="batch_1", seq=0)
    assert not is_error
    assert set(line) == {"id", "custom_id", "response", "error"}
    assert line["id"].startswith("batch_req_") and line["custom_id"] == "r1" and line["error"] is None
    response = line["response"]
    assert response["status_code"] == 200 and response["request_id"]
    body = response["body"]
    assert body["object"] == "chat.completion" and body["model"] == "gpt-4o-mini"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["refusal"] is None
    jsonschema.validate(json.loads(choice["message"]["content"]), REVIEW)
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert "reasoning_tokens" in usage["completion_tokens_details"]

    other, _ = answer_line(_request("great phone", custom_id="zz"), faults=None, batch_id="batch_2", seq=7)
    assert _content(other) == _content(line)
    changed, _ = answer_line(_request("awful phone"), faults=None, batch_id="batch_1", seq=0)
    assert _content(changed) != _content(line)


def test_each_fault_appears_at_its_fraction_with_its_shape() -> None:
    plan = FaultPlan(0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)
    assert all(getattr(plan, kind) == 0.1 for kind in FAULT_KINDS)
    n = 3000
    kinds: Counter[str] = Counter()
    review = jsonschema.Draft202012Validator(REVIEW)
    for i in range(n):
        request = _request(f"review {i}", custom_id=f"c{i}", max_completion_tokens=200)
        line, is_error = answer_line(request, faults=plan, batch_id="batch_x", seq=i)
        kind = plan.pick(f"c{i}", "batch_x") or "ok"
        kinds[kind] += 1
        response = line["response"]
        assert is_error == kind.startswith("http_error")
        if kind.startswith("http_error"):
            status = int(kind[-3:])
            assert response["status_code"] == status
            error = response["body"]["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["type"] == ("server_error" if status == 500 else "invalid_request_error")
            continue
        choice = response["body"]["choices"][0]
        content, finish = choice["message"]["content"], choice["finish_reason"]
        if kind == "refused":
            assert content is None and choice["message"]["refusal"] and finish == "stop"
        elif kind == "truncated":
            assert finish == "length"
            assert response["body"]["usage"]["completion_tokens"] == 200
            with pytest.raises(ValueError):
                json.loads(content)
        elif kind == "content_filter":
            assert content is None and finish == "content_filter"
        elif kind == "invalid_json":
            with pytest.raises(ValueError):
                json.loads(content)
        elif kind == "schema_violation":
            assert not review.is_valid(json.loads(content))
        else:
            assert review.is_valid(json.loads(content))
    for kind in FAULT_KINDS:
        assert 0.07 * n < kinds[kind] < 0.13 * n, kinds
    assert 0.25 * n < kinds["ok"] < 0.35 * n


def test_a_retry_in_a_new_batch_rolls_again() -> None:
    plan = FaultPlan(refused=0.5)
    first = {f"c{i}": plan.pick(f"c{i}", "batch_a") for i in range(200)}
    again = {f"c{i}": plan.pick(f"c{i}", "batch_a") for i in range(200)}
    retry = {f"c{i}": plan.pick(f"c{i}", "batch_b") for i in range(200)}
    assert first == again
    assert first != retry


def test_pins_return_their_answer_verbatim() -> None:
    pinned = {
        "summary": "pinned",
        "sentiment": "negative",
        "score": 1,
        "tags": [],
        "reviewed_on": "2024-01-01",
    }
    plan = FaultPlan(refused=1.0, pinned=[Pin(contains="battery died", answer=pinned)])
    line, _ = answer_line(_request("my battery died after a week"), faults=plan, batch_id="b", seq=0)
    assert json.loads(_content(line)) == pinned
    other, _ = answer_line(_request("fine"), faults=plan, batch_id="b", seq=1)
    assert _content(other) is None  # not pinned: refused
    forced, _ = answer_line(_request("my battery died"), faults=plan, batch_id="b", seq=2, kind="content_filter")
    assert forced["response"]["body"]["choices"][0]["finish_reason"] == "content_filter"


def test_invalid_requests_become_400_lines() -> None:
    request = _request("x")
    del request["body"]["messages"]
    line, is_error = answer_line(request, faults=None, batch_id="b", seq=0)
    assert is_error and line["response"]["status_code"] == 400
    assert line["response"]["body"]["error"]["code"] == "missing_required_parameter"


def test_free_text_requests_get_text() -> None:
    request = _request("hello")
    del request["body"]["response_format"]
    line, _ = answer_line(request, faults=None, batch_id="b", seq=0)
    assert _content(line).startswith("synthetic answer ")


# --------------------------------------------------------------------------- the provider


def _shard(tmp_path: Path, requests: list[dict[str, Any]], shard_id: str = "s1") -> Shard:
    path = tmp_path / f"{shard_id}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in requests), encoding="utf-8")
    meta = {"project": "demo", "node": "reviews", "shard_id": shard_id}
    return Shard(shard_id, "reviews", "gpt-4o-mini", path, len(requests), meta)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_lifecycle(tmp_path: Path) -> None:
    provider = FakeProvider(tmp_path / "remote", faults=FaultPlan(http_error_500=0.3))
    requests = [_request(f"review {i}", custom_id=f"k{i}") for i in range(50)]
    shard = _shard(tmp_path, requests)
    assert provider.find_batch(shard) is None
    file_id = provider.upload(shard)
    assert file_id.startswith("file-")
    info = provider.create_batch(shard, file_id)
    assert info.status == "completed" and info.terminal
    assert info.metadata == shard.metadata and info.input_file_id == file_id
    assert info.total == 50 and info.completed + info.failed == 50 and info.failed > 0
    assert provider.find_batch(shard) == info
    assert provider.retrieve(info.batch_id) == info
    assert provider.find_batch(_shard(tmp_path, requests, shard_id="other")) is None

    assert info.output_file_id and info.error_file_id
    assert provider.download(info.output_file_id, tmp_path / "out.jsonl")
    assert provider.download(info.error_file_id, tmp_path / "err.jsonl")
    out, err = _read_jsonl(tmp_path / "out.jsonl"), _read_jsonl(tmp_path / "err.jsonl")
    assert len(out) == info.completed and len(err) == info.failed
    assert {line["custom_id"] for line in out + err} == {f"k{i}" for i in range(50)}
    assert all(line["response"]["status_code"] == 500 for line in err)
    assert not provider.download("file-missing", tmp_path / "x.jsonl")
    assert not provider.download("", tmp_path / "x.jsonl")
    assert provider.cancel(info.batch_id) == info
    with pytest.raises(ProviderError):
        provider.retrieve("batch_nope")
    with pytest.raises(ProviderError):
        provider.create_batch(shard, "file-nope")


def test_a_batch_whose_lines_all_fail_has_no_output_file(tmp_path: Path) -> None:
    provider = FakeProvider(tmp_path, faults=FaultPlan(http_error_400=1.0))
    shard = _shard(tmp_path, [_request("a", "a"), _request("b", "b")])
    info = provider.create_batch(shard, provider.upload(shard))
    assert info.status == "completed" and info.output_file_id is None and info.error_file_id
    assert (info.completed, info.failed) == (0, 2)


def test_answers_are_the_same_across_providers(tmp_path: Path) -> None:
    shard = _shard(tmp_path, [_request(f"r{i}", f"k{i}") for i in range(5)])
    contents = []
    for name in ("one", "two"):
        provider = FakeProvider(tmp_path / name)
        info = provider.create_batch(shard, provider.upload(shard))
        assert info.output_file_id
        provider.download(info.output_file_id, tmp_path / f"{name}.jsonl")
        contents.append({x["custom_id"]: _content(x) for x in _read_jsonl(tmp_path / f"{name}.jsonl")})
    assert contents[0] == contents[1]


def test_invalid_input_fails_the_batch_with_line_numbers(tmp_path: Path) -> None:
    good = _request("a", "a")
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps(_request("b", "a")),  # duplicate custom_id
        json.dumps({**_request("c", "c"), "url": "/v1/embeddings"}),
        json.dumps(_request("d", "d", model="gpt-4o")),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    provider = FakeProvider(tmp_path / "remote")
    shard = Shard("bad", "reviews", "gpt-4o-mini", path, 5, {"shard_id": "bad"})
    info = provider.create_batch(shard, provider.upload(shard))
    assert info.status == "failed" and info.output_file_id is None
    assert [(e.code, e.line) for e in info.errors] == [
        ("invalid_json_line", 2),
        ("duplicate_custom_id", 3),
        ("invalid_url", 4),
        ("model_mismatch", 5),
    ]
    assert validate_input([], "/v1/chat/completions")[0][0]["code"] == "empty_file"
    too_many, count = validate_input([json.dumps(good)] * 3, "/v1/chat/completions", max_requests=2)
    assert count == 3 and too_many[-1]["code"] == "too_many_tasks"


def test_from_options(tmp_path: Path) -> None:
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "pins.yml").write_text(
        '- contains: "battery"\n  answer: {sentiment: negative}\n', encoding="utf-8"
    )
    provider = FakeProvider.from_options(
        {"type": "fake", "failures": {"refused": 0.1, "invalid_json": 0.05}, "fixtures": "fixtures/pins.yml"},
        root=tmp_path / "remote",
        project_dir=tmp_path,
    )
    assert provider.faults is not None
    assert provider.faults.refused == 0.1 and provider.faults.invalid_json == 0.05
    assert provider.faults.pinned == [Pin("battery", {"sentiment": "negative"})]
    plain = FakeProvider.from_options({"type": "fake"}, root=tmp_path, project_dir=tmp_path)
    assert plain.faults is not None and plain.faults.pick("x", "y") is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"type": "fake", "failure": {}}, "Did you mean `failures`?"),
        ({"type": "fake", "failures": {"refusal": 0.1}}, "Did you mean `refused`?"),
        ({"type": "fake", "failures": {"refused": 2}}, "between 0 and 1"),
        ({"type": "fake", "failures": {"refused": 0.6, "truncated": 0.6}}, "more than 1"),
        ({"type": "fake", "fixtures": "missing.yml"}, "fixtures file not found"),
    ],
)
def test_from_options_errors(tmp_path: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("`", ".").replace("?", ".")):
        FakeProvider.from_options(options, root=tmp_path, project_dir=tmp_path)


def test_bad_fixtures_file(tmp_path: Path) -> None:
    (tmp_path / "pins.yml").write_text("- {contains: x}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="exactly the keys"):
        FakeProvider.from_options({"fixtures": "pins.yml"}, root=tmp_path, project_dir=tmp_path)
