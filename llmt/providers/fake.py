"""The offline ``fake`` provider: deterministic, schema-valid answers with no network.

A local directory plays the remote (``target/fake_remote/`` in a project)::

    files/<file-id>          uploaded input files and produced output/error files
    files/<file-id>.json     their File objects
    batches/<batch-id>.json  Batch objects, shaped like OpenAI's, with ``metadata``

A batch is validated like OpenAI validates an input file (a failed batch carries
``errors.data`` with line numbers) and otherwise completes at once: answers come from
:func:`llmt.providers.synth.answer_line`, so they follow each request's ``json_schema`` and
carry usage; :class:`FaultPlan` injects refusals, truncation, HTTP errors and the like, and
pins return fixed answers. Target options::

    provider: {type: fake, failures: {refused: 0.1, invalid_json: 0.05}, fixtures: fixtures/pins.yml}
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llmt.errors import ConfigError, ProviderError, did_you_mean
from llmt.providers.base import BatchInfo, BatchLineError, BatchNotFound, BatchProvider, RealtimeProvider, Shard
from llmt.providers.embeddings import ENDPOINT as EMBEDDINGS
from llmt.providers.embeddings import MAX_BATCH_INPUTS
from llmt.providers.synth import FAULT_KINDS, FaultPlan, Pin, answer_line
from llmt.textfile import read_text, yaml_error

__all__ = ["FAULT_KINDS", "FakeProvider", "FaultPlan", "Pin", "batch_info", "new_batch", "validate_input"]

ENDPOINT = "/v1/chat/completions"
BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions")
MAX_REQUESTS = 50_000
MAX_REPORTED_ERRORS = 100
OPTION_KEYS = ("type", "failures", "fixtures")


# --------------------------------------------------------------------------- OpenAI semantics


def _error(code: str, message: str, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def validate_input(
    lines: Iterable[bytes | str], endpoint: str, *, max_requests: int = MAX_REQUESTS
) -> tuple[list[dict[str, Any]], int]:
    """Validate a batch input file like OpenAI does while a batch is ``validating``.

    Returns the ``errors.data`` items (``code``, ``message``, ``param``, 1-based ``line``; at
    most :data:`MAX_REPORTED_ERRORS`) and the number of requests. Codes: ``invalid_json_line``,
    ``missing_required_parameter``, ``invalid_method``, ``invalid_url``, ``duplicate_custom_id``,
    ``model_mismatch``, ``empty_file``, ``too_many_tasks`` (too many requests, or of an embeddings batch, too many
    inputs across its requests).
    """
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None
    count = inputs = 0
    for number, raw in enumerate(lines, start=1):
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
        count += 1
        try:
            item = json.loads(raw)
        except ValueError:
            item = None
        if not isinstance(item, dict):
            errors.append(_error("invalid_json_line", "This line is not parseable as valid JSON.", number))
            continue
        missing = [k for k in ("custom_id", "method", "url", "body") if k not in item]
        if missing:
            errors.append(
                _error(
                    "missing_required_parameter",
                    f"Missing required parameter: '{missing[0]}'.",
                    number,
                    missing[0],
                )
            )
            continue
        custom_id, body = item["custom_id"], item["body"]
        if not isinstance(custom_id, str) or not custom_id:
            errors.append(_error("invalid_value", "custom_id must be a non-empty string.", number, "custom_id"))
        elif custom_id in seen:
            errors.append(
                _error(
                    "duplicate_custom_id",
                    "The custom_id for this request is a duplicate of another request. "
                    "The custom_id parameter must be unique for each individual request in a batch.",
                    number,
                    "custom_id",
                )
            )
        else:
            seen.add(custom_id)
        if str(item["method"]).upper() != "POST":
            errors.append(_error("invalid_method", "Only the POST method is supported.", number, "method"))
        if item["url"] != endpoint:
            errors.append(
                _error(
                    "invalid_url",
                    f"The URL provided for this request does not match the batch endpoint {endpoint}.",
                    number,
                    "url",
                )
            )
        if not isinstance(body, dict):
            errors.append(_error("invalid_value", "The request body must be a JSON object.", number, "body"))
            continue
        if endpoint == EMBEDDINGS:
            texts = body.get("input")
            inputs += len(texts) if isinstance(texts, list) else 1
        line_model = body.get("model")
        if model is None and isinstance(line_model, str):
            model = line_model
        elif line_model != model:
            errors.append(
                _error(
                    "model_mismatch",
                    f"The model {line_model!r} of this request differs from the model {model!r} of the "
                    "other requests in the batch. A batch can only contain requests to a single model.",
                    number,
                    "body.model",
                )
            )
    if count == 0:
        errors.append(_error("empty_file", "The batch input file is empty."))
    elif count > max_requests:
        errors.append(
            _error(
                "too_many_tasks",
                f"The batch input file has {count} requests, more than the maximum of {max_requests}.",
            )
        )
    if inputs > MAX_BATCH_INPUTS:
        errors.append(
            _error(
                "too_many_tasks",
                f"The batch input file has {inputs} embedding inputs, more than the maximum of {MAX_BATCH_INPUTS} "
                "embedding inputs across all requests of a batch.",
            )
        )
    return errors, count


def new_batch(
    batch_id: str,
    *,
    input_file_id: str,
    endpoint: str = ENDPOINT,
    completion_window: str = "24h",
    metadata: dict[str, str] | None = None,
    created_at: int,
    model: str | None = None,
) -> dict[str, Any]:
    """A Batch object (OpenAI's shape) in status ``validating``."""
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": endpoint,
        "model": model,
        "errors": None,
        "input_file_id": input_file_id,
        "completion_window": completion_window,
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": created_at,
        "in_progress_at": None,
        "expires_at": created_at + 24 * 3600,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "usage": None,
        "metadata": dict(metadata or {}),
    }


def batch_info(obj: dict[str, Any]) -> BatchInfo:
    """A :class:`BatchInfo` from a Batch object; empty-string file ids (Azure) become None."""
    counts = obj.get("request_counts") or {}
    errors = (obj.get("errors") or {}).get("data") or []
    return BatchInfo(
        batch_id=obj["id"],
        status=obj["status"],
        input_file_id=obj.get("input_file_id") or None,
        output_file_id=obj.get("output_file_id") or None,
        error_file_id=obj.get("error_file_id") or None,
        total=int(counts.get("total") or 0),
        completed=int(counts.get("completed") or 0),
        failed=int(counts.get("failed") or 0),
        errors=tuple(
            BatchLineError(code=str(e.get("code") or ""), message=str(e.get("message") or ""), line=e.get("line"))
            for e in errors
        ),
        created_at=obj.get("created_at"),
        expires_at=obj.get("expires_at"),
        metadata={str(k): str(v) for k, v in (obj.get("metadata") or {}).items()},
    )


def add_usage(total: dict[str, Any], body: Any) -> None:
    """Add a chat completion's usage to a Batch ``usage`` object."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return
    total["input_tokens"] += usage.get("prompt_tokens", 0)
    total["output_tokens"] += usage.get("completion_tokens", 0)
    total["total_tokens"] += usage.get("total_tokens", 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    total["input_tokens_details"]["cached_tokens"] += cached or 0


def empty_usage() -> dict[str, Any]:
    return {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }


# --------------------------------------------------------------------------- the provider


class FakeProvider(BatchProvider, RealtimeProvider):
    """Offline, deterministic batches in a local directory playing the remote."""

    name = "fake"

    def __init__(self, root: Path, faults: FaultPlan | None = None) -> None:
        self.root = Path(root)
        self.faults = faults
        self.files = self.root / "files"
        self.batches = self.root / "batches"

    @classmethod
    def from_options(cls, options: dict[str, Any], root: Path, project_dir: Path) -> FakeProvider:
        """Build from target provider options ``{type: fake, failures: {...}, fixtures: path}``."""
        where = "provider options"
        for key in options:
            if key not in OPTION_KEYS:
                raise ConfigError(
                    f"unknown option `{key}` for the fake provider.{did_you_mean(key, OPTION_KEYS)}",
                    where=where,
                    hint=f"Options of the fake provider: {', '.join(OPTION_KEYS)}.",
                )
        failures = options.get("failures") or {}
        if not isinstance(failures, dict):
            raise ConfigError("`failures` must map an outcome to a fraction.", where=where)
        fractions: dict[str, float] = {}
        for kind, value in failures.items():
            if kind not in FAULT_KINDS:
                raise ConfigError(
                    f"unknown failure kind `{kind}`.{did_you_mean(str(kind), FAULT_KINDS)}",
                    where=f"{where}: failures",
                    hint=f"Failure kinds: {', '.join(FAULT_KINDS)}.",
                )
            fractions[kind] = value
        pins = load_pins(project_dir / options["fixtures"]) if options.get("fixtures") else []
        try:
            plan = FaultPlan(**fractions, pinned=pins)
        except ValueError as exc:
            raise ConfigError(str(exc), where=f"{where}: failures") from None
        return cls(root, faults=plan)

    # -- files

    def _file_meta(self, file_id: str) -> Path:
        return self.files / f"{file_id}.json"

    def _store_file(self, file_id: str, filename: str, purpose: str) -> None:
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": (self.files / file_id).stat().st_size,
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }
        _write_json(self._file_meta(file_id), meta)

    def upload(self, shard: Shard) -> str:
        self.files.mkdir(parents=True, exist_ok=True)
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        try:
            shutil.copyfile(shard.path, self.files / file_id)
        except OSError as exc:
            raise ProviderError(f"cannot upload {shard.path}: {exc.strerror}", where=shard.shard_id) from None
        self._store_file(file_id, shard.path.name, "batch")
        return file_id

    def download(self, file_id: str, dest: Path) -> bool:
        source = self.files / file_id
        if not file_id or not source.is_file():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        return True

    # -- batches

    def _batch_path(self, batch_id: str) -> Path:
        return self.batches / f"{batch_id}.json"

    def _records(self) -> Iterator[dict[str, Any]]:
        if not self.batches.is_dir():
            return
        for path in self.batches.glob("*.json"):
            try:
                yield json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue

    def find_batch(self, shard: Shard) -> BatchInfo | None:
        shard_id = shard.metadata.get("shard_id", shard.shard_id)
        found = [r for r in self._records() if (r.get("metadata") or {}).get("shard_id") == shard_id]
        if not found:
            return None
        return batch_info(max(found, key=lambda r: (r.get("created_at") or 0, r.get("_seq", 0))))

    def create_batch(self, shard: Shard, file_id: str) -> BatchInfo:
        source = self.files / file_id
        if not file_id or not source.is_file():
            raise ProviderError(f"no such input file `{file_id}`", where=shard.shard_id)
        self.batches.mkdir(parents=True, exist_ok=True)
        now = int(time.time())
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        obj = new_batch(
            batch_id,
            input_file_id=file_id,
            endpoint=shard.endpoint,
            metadata=shard.metadata,
            created_at=now,
            model=shard.model,
        )
        obj["_seq"] = time.monotonic_ns()
        with source.open("rb") as lines:
            errors, _ = validate_input(lines, shard.endpoint)
        if errors:
            obj.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
        else:
            self._answer(obj, source)
            obj.update(status="completed", in_progress_at=now, finalizing_at=now, completed_at=now)
        _write_json(self._batch_path(batch_id), obj)
        return batch_info(obj)

    def _answer(self, obj: dict[str, Any], source: Path) -> None:
        batch_id = obj["id"]
        out_id, err_id = f"file-{uuid.uuid4().hex[:24]}", f"file-{uuid.uuid4().hex[:24]}"
        counts = {"total": 0, "completed": 0, "failed": 0}
        usage = empty_usage()
        created = int(obj["created_at"])
        with (
            source.open("rb") as lines,
            (self.files / out_id).open("w", encoding="utf-8") as out,
            (self.files / err_id).open("w", encoding="utf-8") as err,
        ):
            for seq, raw in enumerate(lines):
                line, is_error = answer_line(
                    json.loads(raw), faults=self.faults, batch_id=batch_id, seq=seq, created=created
                )
                counts["total"] += 1
                counts["failed" if is_error else "completed"] += 1
                add_usage(usage, line["response"]["body"])
                (err if is_error else out).write(json.dumps(line, ensure_ascii=False) + "\n")
        for file_id, used in ((out_id, counts["completed"]), (err_id, counts["failed"])):
            if used:
                self._store_file(
                    file_id, f"{batch_id}_{'output' if file_id == out_id else 'error'}.jsonl", "batch_output"
                )
            else:
                (self.files / file_id).unlink()
        obj.update(
            output_file_id=out_id if counts["completed"] else None,
            error_file_id=err_id if counts["failed"] else None,
            request_counts=counts,
            usage=usage,
        )

    def _load(self, batch_id: str) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = json.loads(self._batch_path(batch_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BatchNotFound(f"no such batch `{batch_id}`", where=str(self.root)) from None
        return obj

    def retrieve(self, batch_id: str) -> BatchInfo:
        return batch_info(self._load(batch_id))

    def complete(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Realtime: one answer now, faults rolled anew for every call."""
        request = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
        line, _ = answer_line(request, faults=self.faults, batch_id=f"realtime-{uuid.uuid4().hex}", seq=0)
        return line

    def check(self) -> str:
        return f"offline, synthetic answers (no key, no network; its batches in {self.root})"

    def embed(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Realtime embeddings: one answer now, faults rolled anew for every call."""
        request = {"custom_id": custom_id, "method": "POST", "url": EMBEDDINGS, "body": body}
        line, _ = answer_line(request, faults=self.faults, batch_id=f"realtime-{uuid.uuid4().hex}", seq=0)
        return line

    def cancel(self, batch_id: str) -> BatchInfo:
        obj = self._load(batch_id)
        if obj["status"] in ("validating", "in_progress", "finalizing"):
            now = int(time.time())
            obj.update(status="cancelled", cancelling_at=now, cancelled_at=now)
            _write_json(self._batch_path(batch_id), obj)
        return batch_info(obj)


# --------------------------------------------------------------------------- helpers


def load_pins(path: Path) -> list[Pin]:
    """Read a fixtures file: a YAML (or JSON) list of ``{contains: "...", answer: {...}}``."""
    import yaml

    try:
        data = yaml.safe_load(read_text(path))
    except FileNotFoundError:
        raise ConfigError(
            "fixtures file not found", where=str(path), hint="Fix the `fixtures:` path of the provider."
        ) from None
    except yaml.YAMLError as exc:
        raise yaml_error(exc, path) from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise ConfigError("fixtures must be a list of {contains, answer} items", where=str(path))
    pins: list[Pin] = []
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict) or set(item) != {"contains", "answer"}:
            raise ConfigError(
                f"fixture #{number} must have exactly the keys `contains` and `answer`",
                where=str(path),
                hint='Example: - {contains: "battery died", answer: {sentiment: negative}}',
            )
        if not isinstance(item["contains"], str) or not item["contains"]:
            raise ConfigError(f"fixture #{number}: `contains` must be a non-empty string", where=str(path))
        pins.append(Pin(contains=item["contains"], answer=item["answer"]))
    return pins


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    """Write atomically, so a crash never leaves half a record."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
