"""The emulator's fine-tuning jobs: ``POST/GET /v1/fine_tuning/jobs``, ``GET /v1/fine_tuning/jobs/{id}`` and
``POST /v1/fine_tuning/jobs/{id}/cancel``, with OpenAI's object shapes.

A job walks ``validating_files -> queued -> running -> succeeded`` on the emulator's virtual clock (each stage
lasting ``timing.<stage>`` virtual seconds, 0 by default: done when first looked at), or ``failed`` when its
training file breaks the format (not JSON lines of ``messages`` with roles and text, no assistant message, fewer
than 10 examples). It is trained on its training file's tokens (counted as llmt counts chat messages) times its
epochs (given, or OpenAI's "auto"), and names an ``ft:`` model.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from llmt.finetune_data import default_epochs
from llmt.tokens import RequestCounter
from tests.emulator.state import Clock, copy, new_id

STAGES = ("validating_files", "queued", "running")
FINE_TUNABLE = ("gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06", "gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14",
                "gpt-4.1-nano-2025-04-14", "gpt-3.5-turbo-0125", "gpt-4o-mini", "gpt-3.5-turbo")
MIN_EXAMPLES = 10


@dataclass
class JobTiming:
    validating_files: float = 0.0
    queued: float = 0.0
    running: float = 0.0


@dataclass
class JobRecord:
    obj: dict[str, Any]
    stage_started: float
    training: bytes
    epochs: int | None


@dataclass
class FineTuning:
    clock: Clock
    timing: JobTiming = field(default_factory=JobTiming)
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)  # jobs as created (for assertions)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def create(self, params: dict[str, Any], training: bytes) -> dict[str, Any]:
        now = self.clock.now()
        hyper = ((params.get("method") or {}).get("supervised") or {}).get("hyperparameters") \
            or params.get("hyperparameters") or {}
        epochs = hyper.get("n_epochs")
        job_id = new_id("ftjob-")
        obj = {"object": "fine_tuning.job", "id": job_id, "model": params["model"], "created_at": int(now),
               "finished_at": None, "fine_tuned_model": None, "organization_id": "org-emulator", "result_files": [],
               "status": "validating_files", "validation_file": params.get("validation_file"),
               "training_file": params["training_file"], "hyperparameters": {
                   "n_epochs": epochs if isinstance(epochs, int) else "auto", "batch_size": "auto",
                   "learning_rate_multiplier": "auto"},
               "trained_tokens": None, "error": None, "seed": params.get("seed") or 42, "estimated_finish": None,
               "integrations": [], "metadata": dict(params.get("metadata") or {}), "suffix": params.get("suffix"),
               "method": {"type": "supervised"}}
        with self.lock:
            self.jobs[job_id] = JobRecord(obj, now, training, epochs if isinstance(epochs, int) else None)
            self.order.append(job_id)
            self.created.append(copy(obj))
        return copy(obj)

    def view(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            record = self.jobs[job_id]
            self._tick(record)
            return copy(record.obj)

    def listing(self, after: str | None, limit: int, metadata: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            ids = self.order[::-1]
            if after in ids:
                ids = ids[ids.index(after) + 1:]
            ids = [i for i in ids if all(self.jobs[i].obj["metadata"].get(k) == v for k, v in metadata.items())]
            page = [self.view(i) for i in ids[:limit]]
        return {"object": "list", "data": page, "has_more": len(ids) > limit}

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        with self.lock:
            record = self.jobs[job_id]
            self._tick(record)
            if record.obj["status"] not in STAGES:
                return None
            record.obj.update(status="cancelled", finished_at=int(self.clock.now()))
            return copy(record.obj)

    def _tick(self, record: JobRecord) -> None:
        obj = record.obj
        while obj["status"] in STAGES:
            due = record.stage_started + float(getattr(self.timing, obj["status"]))
            if self.clock.now() < due:
                return
            if obj["status"] == "validating_files":
                problem, tokens, examples = _validate(record.training, obj["model"])
                if problem:
                    obj.update(status="failed", finished_at=int(due), error={
                        "code": "invalid_training_file", "message": f"The training file is invalid: {problem}",
                        "param": "training_file"})
                    return
                obj["hyperparameters"]["n_epochs"] = record.epochs or default_epochs(examples)
                obj["trained_tokens"] = tokens * obj["hyperparameters"]["n_epochs"]
            index = STAGES.index(obj["status"])
            if index + 1 < len(STAGES):
                obj["status"] = STAGES[index + 1]
            else:
                suffix = obj.get("suffix") or ""
                obj.update(status="succeeded", finished_at=int(due),
                           fine_tuned_model=f"ft:{obj['model']}:emulator:{suffix}:{obj['id'][-8:]}")
            record.stage_started = due


def _validate(content: bytes, model: str) -> tuple[str | None, int, int]:
    """What is wrong with a training file (or None), its tokens and examples."""
    counter = RequestCounter(model, None)
    tokens = examples = 0
    for number, raw in enumerate(content.decode("utf-8", "replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError:
            return f"line {number} is not valid JSON", 0, 0
        messages = item.get("messages") if isinstance(item, dict) else None
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str) for m in messages):
            return f"line {number} has no valid `messages`", 0, 0
        if not any(m["role"] == "assistant" for m in messages):
            return f"line {number} has no assistant message", 0, 0
        tokens += counter.count(messages)
        examples += 1
    if examples < MIN_EXAMPLES:
        return f"it has {examples} examples; at least {MIN_EXAMPLES} are required", 0, 0
    return None, tokens, examples
