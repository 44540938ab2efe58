"""The emulator's state: files, batches and their lifecycle on a virtual clock, and a record
of everything the server saw.

A batch walks ``validating -> in_progress -> finalizing -> completed`` (or ``failed``,
``expired``, ``cancelling -> cancelled``). Transitions happen when the batch is looked at
(retrieve, list, cancel), once its stage has lasted ``timing.<stage>`` virtual seconds;
the default timing is 0, so a batch is done the first time it is retrieved. With
``step_per_poll`` each look moves a batch at most one stage, whatever the clock says.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from llmt.providers.fake import add_usage, empty_usage, new_batch, validate_input
from llmt.providers.synth import answer_line, error_body, error_line
from tests.emulator.faults import TOKEN_LIMIT_MESSAGE, BatchScript, FaultInjector

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."


class Clock:
    """Real time plus an offset that tests move forward with :meth:`advance`."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Timing:
    """How long each stage lasts, in (virtual) seconds."""

    validating: float = 0.0
    in_progress: float = 0.0
    finalizing: float = 0.0
    cancelling: float = 0.0


@dataclass
class StoredFile:
    obj: dict[str, Any]
    content: bytes


@dataclass
class BatchRecord:
    obj: dict[str, Any]
    script: BatchScript
    stage_started: float
    requests: list[dict[str, Any]] = field(default_factory=list)
    results: list[tuple[dict[str, Any], bool]] = field(default_factory=list)
    released: bool = False


@dataclass
class Seen:
    """What the server saw, for assertions such as "each shard created at most once"."""

    http: list[tuple[str, str, int, int]] = field(default_factory=list)  # method, path, status, retry#
    files: list[dict[str, Any]] = field(default_factory=list)  # File objects uploaded
    batches: list[dict[str, Any]] = field(default_factory=list)  # Batch objects as created
    answered: Counter[str] = field(default_factory=Counter)  # custom_id -> times answered in batches
    realtime: int = 0  # chat completions and embeddings requests answered
    realtime_answered: Counter[str] = field(default_factory=Counter)  # x-client-request-id -> times asked
    realtime_in_flight: int = 0
    realtime_max_in_flight: int = 0  # the most chat completions served at once

    def batches_per(self, key: str = "shard_id") -> Counter[str]:
        """How many batches were created per value of a metadata key."""
        return Counter(str((b.get("metadata") or {}).get(key)) for b in self.batches)

    def requests(self, method: str, path: str) -> list[tuple[str, str, int, int]]:
        return [h for h in self.http if h[0] == method and h[1] == path]


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


class Store:
    def __init__(self, clock: Clock, timing: Timing, faults: FaultInjector, max_requests: int) -> None:
        self.clock = clock
        self.timing = timing
        self.faults = faults
        self.max_requests = max_requests
        self.step_per_poll = False
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, BatchRecord] = {}
        self.order: list[str] = []  # batch ids, oldest first
        self.seen = Seen()
        self.lock = threading.RLock()

    # -- files

    def add_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        now = int(self.clock.now())
        obj: dict[str, Any] = {
            "id": new_id("file-"),
            "object": "file",
            "bytes": len(content),
            "created_at": now,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": now + 30 * 86400 if purpose in ("batch", "batch_output") else None,
        }
        with self.lock:
            self.files[obj["id"]] = StoredFile(obj, content)
        return obj

    # -- batches

    def create_batch(self, input_file_id: str, endpoint: str, window: str, metadata: dict[str, str]) -> BatchRecord:
        now = self.clock.now()
        obj = new_batch(
            new_id("batch_"),
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=window,
            metadata=metadata,
            created_at=int(now),
        )
        record = BatchRecord(obj, self.faults.script_for_new_batch(), now)
        with self.lock:
            self.batches[obj["id"]] = record
            self.order.append(obj["id"])
            self.seen.batches.append(copy(obj))
        self._hide_absent_ids(obj)
        return record

    def view(self, record: BatchRecord) -> dict[str, Any]:
        """The Batch object as the API shows it now (after advancing its lifecycle)."""
        with self.lock:
            self.tick(record)
            obj = copy(record.obj)
        return obj

    def cancel(self, record: BatchRecord) -> dict[str, Any] | None:
        """Start cancelling; None when the batch can no longer be cancelled."""
        with self.lock:
            self.tick(record)
            if record.obj["status"] not in ("validating", "in_progress", "finalizing"):
                return None
            record.obj.update(status="cancelling", cancelling_at=int(self.clock.now()))
            record.stage_started = self.clock.now()
            return copy(record.obj)

    def tick(self, record: BatchRecord) -> None:
        """Advance a batch through every stage whose time is up (one stage with step_per_poll)."""
        while record.obj["status"] in ACTIVE:
            if not self._step(record) or self.step_per_poll:
                break

    def _due(self, record: BatchRecord, stage: str) -> float | None:
        """When the current stage ended, or None while it lasts."""
        due = record.stage_started + float(getattr(self.timing, stage))
        return due if self.clock.now() >= due else None

    def _enter(self, record: BatchRecord, status: str, stamp: str, at: float) -> None:
        record.obj["status"] = status
        record.obj[stamp] = int(at)
        record.stage_started = at

    def _step(self, record: BatchRecord) -> bool:
        """Make one transition if it is due (stamped with when it was due); False if none."""
        obj, script = record.obj, record.script
        status = obj["status"]
        if status in ("validating", "cancelling", "finalizing"):
            at = self._due(record, status)
            if at is None:
                return False
            if status == "validating":
                self._validate(record, at)
            elif status == "cancelling":
                self._finish(record, "cancelled", "cancelled_at", at, CANCELLED_MESSAGE, "batch_cancelled")
            else:
                self._finish(record, "completed", "completed_at", at, "", "")
            return True
        # in_progress: answer as many requests as the elapsed time allows
        total, duration = len(record.requests), self.timing.in_progress
        expires_at = float(obj["expires_at"])
        now = min(self.clock.now(), expires_at)
        target = total if duration <= 0 else min(total, int(total * (now - record.stage_started) / duration))
        if script.expire_after is not None:
            target = min(target, script.expire_after)
        stalled = script.stall_after is not None and not record.released
        if stalled:
            target = min(target, script.stall_after or 0)
        if script.cancel_after is not None:
            target = min(target, script.cancel_after)
        self._process(record, target)
        if script.cancel_after is not None and len(record.results) >= min(script.cancel_after, total):
            self._enter(record, "cancelling", "cancelling_at", now)  # the provider's own cancel
            return True
        ended = self._due(record, "in_progress")
        if self.clock.now() >= expires_at or (script.expire_after is not None and ended is not None):
            at = expires_at if self.clock.now() >= expires_at else float(ended or now)
            self._finish(record, "expired", "expired_at", at, EXPIRED_MESSAGE, "batch_expired")
            return True
        if stalled or ended is None or len(record.results) < total:
            return False
        self._enter(record, "finalizing", "finalizing_at", ended)
        return True

    def _validate(self, record: BatchRecord, at: float) -> None:
        obj, script = record.obj, record.script
        stored = self.files.get(obj["input_file_id"])
        content = stored.content if stored else b""
        raw_lines = content.splitlines()
        errors, count = validate_input(raw_lines, obj["endpoint"], max_requests=self.max_requests)
        if not errors:
            record.requests = [json.loads(raw) for raw in raw_lines]
            obj["model"] = record.requests[0]["body"].get("model")
            if script.fail_code:
                message = script.fail_message or (
                    TOKEN_LIMIT_MESSAGE.format(model=obj["model"])
                    if script.fail_code == "token_limit_exceeded"
                    else f"The batch failed: {script.fail_code}."
                )
                errors = [{"code": script.fail_code, "message": message, "param": None, "line": None}]
        if errors:
            self._enter(record, "failed", "failed_at", at)
            obj["errors"] = {"object": "list", "data": errors}
            return
        obj["request_counts"] = {"total": count, "completed": 0, "failed": 0}
        self._enter(record, "in_progress", "in_progress_at", at)

    def _process(self, record: BatchRecord, upto: int) -> None:
        """Answer requests up to index ``upto`` (exclusive)."""
        obj, script = record.obj, record.script
        created = int(self.clock.now())
        for seq in range(len(record.results), upto):
            request = record.requests[seq]
            custom_id = request["custom_id"]
            if script.all_lines_status is not None:
                line, _ = answer_line(request, faults=None, batch_id=obj["id"], seq=seq, created=created)
                line["response"]["status_code"] = script.all_lines_status
                line["response"]["body"] = error_body(script.all_lines_status)
                result = (line, True)
            else:
                kind = self.faults.forced_kind(custom_id)
                result = answer_line(
                    request, faults=self.faults.lines, batch_id=obj["id"], seq=seq, kind=kind, created=created
                )
            record.results.append(result)
            self.seen.answered[custom_id] += 1
            obj["request_counts"]["failed" if result[1] else "completed"] += 1

    def _finish(self, record: BatchRecord, status: str, stamp: str, at: float, message: str, code: str) -> None:
        """Write the output and error files and end the batch."""
        obj, script = record.obj, record.script
        batch_id = obj["id"]
        outputs = [line for line, is_error in record.results if not is_error]
        failures = [line for line, is_error in record.results if is_error]
        for seq in range(len(record.results), len(record.requests)):
            custom_id = record.requests[seq]["custom_id"]
            failures.append(error_line(custom_id, batch_id=batch_id, seq=seq, code=code, message=message))
        if script.drop_lines:
            rng = random.Random(f"drop:{batch_id}")
            dropped = set(rng.sample(range(len(outputs)), min(script.drop_lines, len(outputs))))
            outputs = [line for i, line in enumerate(outputs) if i not in dropped]
        if script.drop_share:
            rng = random.Random(script.seed)
            outputs = [line for line in outputs if rng.random() >= script.drop_share]
        if script.shuffle:
            random.Random(f"shuffle:{batch_id}").shuffle(outputs)
            random.Random(f"shuffle2:{batch_id}").shuffle(failures)
        usage = empty_usage()
        for line, _ in record.results:
            add_usage(usage, (line.get("response") or {}).get("body"))
        counts = obj.get("request_counts") or {"total": 0, "completed": 0, "failed": 0}
        counts["failed"] = counts["total"] - counts["completed"]
        obj.update(request_counts=counts, usage=usage)
        if outputs:
            out = self.add_file(_jsonl(outputs), f"{batch_id}_output.jsonl", "batch_output")
            obj["output_file_id"] = out["id"]
            if script.output_missing:
                del self.files[out["id"]]
        if failures:
            errors = self.add_file(_jsonl(failures), f"{batch_id}_error.jsonl", "batch_output")
            obj["error_file_id"] = errors["id"]
        self._enter(record, status, stamp, at)
        self._hide_absent_ids(obj)

    def _hide_absent_ids(self, obj: dict[str, Any]) -> None:
        if self.faults.empty_file_ids:
            for key in ("output_file_id", "error_file_id"):
                if obj.get(key) is None:
                    obj[key] = ""

    def release(self, batch_id: str) -> None:
        """Let a stalled batch go on to completion."""
        with self.lock:
            self.batches[batch_id].released = True


def copy(obj: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a JSON object (what a client would receive)."""
    out: dict[str, Any] = json.loads(json.dumps(obj))
    return out


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
