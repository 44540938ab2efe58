"""Synthetic answers in the OpenAI batch output format.

One implementation shared by the offline ``fake`` provider and the test emulator:

- :func:`synth_answer` makes a deterministic value that is valid against a strict-mode JSON
  Schema. Every choice (enum member, number, list length, null or not) comes from a sha256 of
  the seed and the JSON path of the value, so a value depends only on (schema, seed) and a
  change to one property leaves the others alone.
- :func:`answer_line` turns one batch input line into one batch output (or error) line, with
  a ``chat.completion`` body whose content answers the request's ``json_schema``, and usage.
  The answer depends only on the request body, never on ``custom_id``.
- :class:`FaultPlan` injects the outcomes the pipeline must handle (refusals, truncation,
  content filter, invalid JSON, schema violations, per-line HTTP errors) at given fractions,
  rolled per ``(batch_id, custom_id)`` so that a retry in a new batch rolls again; pins
  (:class:`Pin`) return a fixed answer for requests whose last user message contains a text.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from llmt.providers.embeddings import ENDPOINT as EMBEDDINGS
from llmt.providers.embeddings import embeddings_body
from llmt.tokens import count_request

FAULT_KINDS: tuple[str, ...] = (
    "refused",
    "truncated",
    "content_filter",
    "invalid_json",
    "schema_violation",
    "http_error_400",
    "http_error_500",
)
"""Per-line outcomes a :class:`FaultPlan` can inject, in the order they are rolled."""

REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
_MAX_DEPTH = 6  # beyond this, recursive schemas take their shortest branch (null, [], ...)
_EPOCH_DATE = dt.date(2000, 1, 1)
_EPOCH_TS = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _unit(text: str) -> float:
    """A number in [0, 1) derived from ``text``."""
    return int.from_bytes(_digest(text)[:8], "big") / 2.0**64


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Pin:
    """A fixture: requests whose last user message contains ``contains`` get ``answer``."""

    contains: str
    answer: Any  # returned verbatim (as JSON) as the message content


@dataclass
class FaultPlan:
    """Fractions of requests that get each faulty outcome, plus pinned answers.

    The kind of a request is chosen by hashing ``batch_id`` and ``custom_id`` into [0, 1) and
    walking the fractions in :data:`FAULT_KINDS` order, so the same request in the same batch
    always gets the same outcome while a retry in a new batch rolls again.
    """

    refused: float = 0.0
    truncated: float = 0.0
    content_filter: float = 0.0
    invalid_json: float = 0.0
    schema_violation: float = 0.0
    http_error_400: float = 0.0
    http_error_500: float = 0.0
    pinned: list[Pin] = field(default_factory=list)

    def __post_init__(self) -> None:
        total = 0.0
        for kind in FAULT_KINDS:
            value = getattr(self, kind)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"fault fraction `{kind}` must be a number between 0 and 1, got {value!r}")
            total += float(value)
        if total > 1 + 1e-9:
            raise ValueError(f"fault fractions add up to {total:g}, more than 1")

    def pick(self, custom_id: str, batch_id: str) -> str | None:
        """The fault kind for this request in this batch, or None for a normal answer."""
        u = _unit(f"fault\x00{batch_id}\x00{custom_id}")
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += getattr(self, kind)
            if u < edge:
                return kind
        return None

    def pin_for(self, text: str) -> Pin | None:
        for pin in self.pinned:
            if pin.contains in text:
                return pin
        return None


# --------------------------------------------------------------------------- synth


def synth_answer(schema: dict[str, Any], seed: str) -> Any:
    """A deterministic value valid against ``schema`` (a strict-mode JSON Schema)."""
    return _Synth(schema, seed).value(schema, "#", "", 0)


_M64 = 0xFFFFFFFFFFFFFFFF


@functools.lru_cache(maxsize=65536)
def _path_key(path: str) -> int:
    return int.from_bytes(_digest(path)[:8], "big")


class _Synth:
    """Choices are ``splitmix64(sha256(seed) ^ sha256(path))``: stable, and cheap per node."""

    __slots__ = ("base", "root", "seed")

    def __init__(self, root: dict[str, Any], seed: str) -> None:
        self.root = root
        self.seed = seed
        self.base = int.from_bytes(_digest(seed)[:8], "big")

    def h(self, path: str) -> int:
        z = ((self.base ^ _path_key(path)) + 0x9E3779B97F4A7C15) & _M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return z ^ (z >> 31)

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}  # remote refs are not supported by strict mode
        node: Any = self.root
        for part in ref[1:].split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if isinstance(node, list) else node.get(part, {})
        return node

    def value(self, schema: Any, path: str, name: str, depth: int) -> Any:
        if schema is True or not isinstance(schema, dict):
            return self.string({}, path, name)
        if "$ref" in schema:
            target = self.resolve(schema["$ref"])
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return self.value({**target, **rest} if rest else target, path, name, depth + 1)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            options = schema["enum"]
            return options[self.h(path + "|enum") % len(options)]
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self.value(self.branch(schema[key], path, depth), path, name, depth)
        if "allOf" in schema:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self.resolve(part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
                if isinstance(part, dict):
                    merged.update(part)
            return self.value(merged, path, name, depth)
        kind = self.pick_type(schema, path, depth)
        if kind == "null":
            return None
        if kind == "object":
            return self.object(schema, path, depth)
        if kind == "array":
            return self.array(schema, path, name, depth)
        if kind == "integer":
            return self.integer(schema, path)
        if kind == "number":
            return self.number(schema, path)
        if kind == "boolean":
            return bool(self.h(path + "|bool") & 1)
        return self.string(schema, path, name)

    def branch(self, options: list[Any], path: str, depth: int) -> Any:
        if depth >= _MAX_DEPTH:  # prefer a branch that ends the recursion
            for option in options:
                if isinstance(option, dict) and option.get("type") == "null":
                    return option
            for option in options:
                if isinstance(option, dict) and "$ref" not in option:
                    return option
        return options[self.h(path + "|branch") % len(options)]

    def pick_type(self, schema: dict[str, Any], path: str, depth: int) -> str:
        declared = schema.get("type")
        if isinstance(declared, str):
            return declared
        if isinstance(declared, list) and declared:
            concrete = [t for t in declared if t != "null"]
            if not concrete or ("null" in declared and (depth >= _MAX_DEPTH or self.h(path + "|null") % 5 == 0)):
                return "null"
            return str(concrete[self.h(path + "|type") % len(concrete)])
        if "properties" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
            return "number"
        return "string"

    def object(self, schema: dict[str, Any], path: str, depth: int) -> dict[str, Any]:
        props = schema.get("properties") or {}
        return {key: self.value(sub, f"{path}/{key}", key, depth + 1) for key, sub in props.items()}

    def array(self, schema: dict[str, Any], path: str, name: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        lo = int(schema.get("minItems", 0))
        hi = int(schema.get("maxItems", max(lo, 3)))
        if depth >= _MAX_DEPTH:
            n = lo
        else:
            first = max(lo, 1) if hi >= 1 else lo
            n = first + self.h(path + "|len") % (max(hi, first) - first + 1)
        if items is False:
            n = min(n, len(prefix))
        out: list[Any] = []
        seen: set[str] = set()
        i = 0
        while len(out) < n and i < n + 20:
            sub = prefix[i] if i < len(prefix) else items
            item = self.value(sub, f"{path}/{i}", name, depth + 1)
            i += 1
            if schema.get("uniqueItems"):
                key = json.dumps(item, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
            out.append(item)
        return out

    def integer(self, schema: dict[str, Any], path: str) -> int:
        lo, hi = _bounds(schema, integer=True)
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            k_lo, k_hi = math.ceil(lo / step), math.floor(hi / step)
            return step * (k_lo + self.h(path + "|int") % (k_hi - k_lo + 1)) if k_hi >= k_lo else math.ceil(lo)
        lo_i, hi_i = math.ceil(lo), math.floor(hi)
        if hi_i < lo_i:
            return int(lo_i)
        return int(lo_i + self.h(path + "|int") % (hi_i - lo_i + 1))

    def number(self, schema: dict[str, Any], path: str) -> float:
        lo, hi = _bounds(schema, integer=False)
        step = schema.get("multipleOf")
        if isinstance(step, int | float) and step > 0:
            k_lo, k_hi = math.ceil(lo / step), math.floor(hi / step)
            k = k_lo + self.h(path + "|num") % (k_hi - k_lo + 1) if k_hi >= k_lo else 0
            return float(k * step) if isinstance(step, int) else float(k) * step
        frac = (self.h(path + "|num") % 10001) / 10000
        value = round(lo + frac * (hi - lo), 2)
        if not lo <= value <= hi or value == schema.get("exclusiveMinimum") or value == schema.get("exclusiveMaximum"):
            value = (lo + hi) / 2
        return float(value)

    def string(self, schema: dict[str, Any], path: str, name: str) -> str:
        h = self.h(path + "|str")
        tag = f"{h & 0xFFFF:04x}"
        fmt = schema.get("format")
        if fmt == "date":
            text = (_EPOCH_DATE + dt.timedelta(days=h % 9000)).isoformat()
        elif fmt == "date-time":
            stamp = _EPOCH_TS + dt.timedelta(seconds=h % (5 * 365 * 86400))
            text = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif fmt == "time":
            s = h % 86400
            text = f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z"
        elif fmt == "email":
            text = f"user{tag}@example.com"
        elif fmt == "uuid":
            text = str(uuid.UUID(int=(h << 64) | self.h(path + "|uuid"), version=4))
        elif fmt == "hostname":
            text = f"host-{tag}.example.com"
        elif fmt == "ipv4":
            text = f"10.{h >> 8 & 0xFF}.{h >> 16 & 0xFF}.{h >> 24 & 0xFF}"
        elif fmt == "ipv6":
            text = f"2001:db8::{tag}"
        elif fmt in ("uri", "url", "iri"):
            text = f"https://example.com/{name or 'item'}/{tag}"
        elif fmt == "duration":
            text = f"P{1 + h % 30}D"
        else:
            label = name.replace("_", " ") if name else "text"
            text = f"synthetic {label} {tag}"
        lo = int(schema.get("minLength", 0))
        hi = schema.get("maxLength")
        while len(text) < lo:
            text += f" {tag}"
        if isinstance(hi, int) and len(text) > hi:
            text = text[:hi]
        return text


def _bounds(schema: dict[str, Any], *, integer: bool) -> tuple[float, float]:
    gap = 1 if integer else 0.01
    lo: float | None = schema.get("minimum")
    hi: float | None = schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(xlo, int | float) and not isinstance(xlo, bool):
        lo = xlo + gap if lo is None else max(lo, xlo + gap)
    if isinstance(xhi, int | float) and not isinstance(xhi, bool):
        hi = xhi - gap if hi is None else min(hi, xhi - gap)
    if lo is None and hi is None:
        return 0, 100
    if lo is None:
        assert hi is not None
        return hi - 100, hi
    if hi is None:
        return lo, lo + 100
    return lo, hi


# --------------------------------------------------------------------------- schema violations


def violate(schema: dict[str, Any], value: Any) -> Any:
    """A JSON value close to ``value`` that breaks ``schema`` (a missing field, a wrong enum...)."""
    if isinstance(value, dict) and schema.get("properties"):
        required = [k for k in schema.get("required", list(schema["properties"])) if k in value]
        for key in required:  # a wrong enum member is the likeliest real mistake
            sub = schema["properties"][key]
            if isinstance(sub, dict) and sub.get("enum") and all(isinstance(e, str) for e in sub["enum"]):
                return {**value, key: "not_" + "_or_".join(sub["enum"])[:40]}
        if required:
            broken = dict(value)
            del broken[required[0]]
            return broken
    if isinstance(value, dict) and schema.get("additionalProperties") is False:
        return {**value, "unexpected_field": True}
    return ["unexpected"] if not isinstance(value, list) else "unexpected"


# --------------------------------------------------------------------------- lines


def request_seed(body: dict[str, Any]) -> str:
    """A stable hash of a request body: the seed of its synthetic answer."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def message_text(message: Any) -> str:
    """The text of a chat message whose content is a string or a list of parts."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return message_text(message)
    return ""


def response_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema a request asks its answer to follow, or None for free text."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            return schema if isinstance(schema, dict) else {"type": "object"}
        if fmt.get("type") == "json_object":
            return {"type": "object", "properties": {"answer": {"type": "string"}}}
    return None


def error_body(status: int, *, message: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error body for an HTTP status."""
    if status >= 500:
        text = message or "The server had an error while processing your request. Sorry about that!"
        return {"error": {"message": text, "type": "server_error", "param": None, "code": code}}
    text = message or (
        "This model's maximum context length is 128000 tokens. However, your messages resulted in "
        "131072 tokens. Please reduce the length of the messages."
    )
    return invalid_request(text, "messages", code or "context_length_exceeded")


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's 400 error body."""
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def _ids(batch_id: str, seq: int, custom_id: str) -> tuple[str, str, str]:
    d = _digest(f"ids\x00{batch_id}\x00{seq}\x00{custom_id}").hex()
    return f"batch_req_{d[:24]}", d[24:56], f"chatcmpl-{d[:29]}"


def completion_body(
    body: dict[str, Any],
    *,
    kind: str | None,
    completion_id: str,
    created: int,
    faults: FaultPlan | None = None,
) -> tuple[int, dict[str, Any]]:
    """The HTTP status and response body of one chat completion request.

    ``kind`` is one of :data:`FAULT_KINDS` or None for a normal answer.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return 400, invalid_request("you must provide a model parameter", "model", "missing_required_parameter")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return 400, invalid_request("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if kind == "http_error_400":
        return 400, error_body(400)
    if kind == "http_error_500":
        return 500, error_body(500)

    seed = request_seed(body)
    schema = response_schema(body)
    pin = None if kind or faults is None else faults.pin_for(last_user_text(body))
    if pin is not None:
        answer_text = json.dumps(pin.answer, ensure_ascii=False, separators=(",", ":"))
    elif schema is None:
        answer_text = f"synthetic answer {seed[:8]}"
    else:
        answer: Any = synth_answer(schema, seed)
        if kind == "schema_violation":
            answer = violate(schema, answer)
        answer_text = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))

    content: str | None = answer_text
    refusal: str | None = None
    finish = "stop"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    completion_tokens = max(1, math.ceil(len(answer_text) / 4))
    if kind == "refused":
        content, refusal = None, REFUSAL_TEXT
        completion_tokens = math.ceil(len(REFUSAL_TEXT) / 4)
    elif kind == "truncated":
        content, finish = answer_text[: max(1, len(answer_text) // 2)], "length"
        completion_tokens = int(limit) if isinstance(limit, int) and limit > 0 else completion_tokens // 2 + 1
    elif kind == "content_filter":
        content, finish = None, "content_filter"
    elif kind == "invalid_json":
        content = f"Here is the JSON you asked for:\n```json\n{answer_text}\n```"
        completion_tokens = math.ceil(len(content) / 4)

    prompt_tokens = count_request(body)  # billed exactly as `llmt plan` counts
    return 200, {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_llmt_fake",
    }


def answer_line(
    request: dict[str, Any],
    *,
    faults: FaultPlan | None,
    batch_id: str,
    seq: int,
    kind: str | None = None,
    created: int | None = None,
) -> tuple[dict[str, Any], bool]:
    """One batch output line for one batch input line (chat completions or embeddings), and whether it goes to
    the error file.

    ``kind`` forces an outcome (one of :data:`FAULT_KINDS`); otherwise ``faults`` rolls one.
    Pinned requests always get their pinned answer unless ``kind`` forces another outcome.
    """
    custom_id = str(request.get("custom_id", ""))
    line_id, request_id, completion_id = _ids(batch_id, seq, custom_id)
    body = request.get("body")
    if kind is None and faults is not None:
        pinned = faults.pinned and isinstance(body, dict) and faults.pin_for(last_user_text(body))
        kind = None if pinned else faults.pick(custom_id, batch_id)
    url = request.get("url", "/v1/chat/completions")
    if not isinstance(body, dict):
        status = 400
        payload = invalid_request("Missing required parameter: 'body'.", "body", "missing_required_parameter")
    elif url == EMBEDDINGS:
        status, payload = embeddings_body(body, kind=kind)
    elif url != "/v1/chat/completions":
        status = 400
        payload = invalid_request(f"Unsupported URL {request.get('url')!r}.", "url", "invalid_url")
    else:
        status, payload = completion_body(
            body,
            kind=kind,
            completion_id=completion_id,
            created=int(time.time()) if created is None else created,
            faults=faults,
        )
    line = {
        "id": line_id,
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": payload},
        "error": None,
    }
    return line, status != 200


def error_line(custom_id: str, *, batch_id: str, seq: int, code: str, message: str) -> dict[str, Any]:
    """An error-file line for a request that never ran (``batch_expired``, ``batch_cancelled``)."""
    line_id, _, _ = _ids(batch_id, seq, custom_id)
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }
