"""The provider interface, shaped like the OpenAI Batch API lifecycle.

A provider knows nothing of SQL or the warehouse. The pipeline drives it step by step and
records its intent in the state tables between steps (shard written -> file uploaded ->
batch created -> batch finished -> output collected), so that a crash at any point is
resumed without creating a batch twice.

Requests are lines of the OpenAI batch input format::

    {"custom_id": "<request key>", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": ..., "messages": [...], "response_format": {"type": "json_schema", ...}}}

Results are lines of the OpenAI batch output/error file format::

    {"id": "batch_req_...", "custom_id": "...",
     "response": {"status_code": 200, "request_id": "...", "body": {<chat.completion>}},
     "error": null}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmt.errors import ProviderError


class BatchNotFound(ProviderError):
    """The provider does not know a batch llmt recorded (another API key, organization or base URL?)."""


TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
MAX_REQUESTS_PER_BATCH = 50_000  # the Batch API's limits of one batch: requests, and bytes of its input file
MAX_BYTES_PER_BATCH = 190 * 1024 * 1024  # (OpenAI's limit is 200 MB per input file)
REALTIME = "realtime"  # the provider column of shards sent in realtime


@dataclass(frozen=True)
class Shard:
    """One batch input file written by the pipeline."""

    shard_id: str
    node: str  # the llmt model the requests belong to
    model: str  # the LLM model; one model per batch
    path: Path  # JSONL in the batch input format
    n_requests: int
    metadata: dict[str, str] = field(default_factory=dict)  # project, node, shard_id, run_id
    endpoint: str = "/v1/chat/completions"  # every request of a batch goes to one endpoint (or /v1/embeddings)


@dataclass(frozen=True)
class BatchLineError:
    """A batch-level validation error (``batch.errors.data``)."""

    code: str
    message: str
    line: int | None = None


@dataclass(frozen=True)
class BatchInfo:
    """What the provider knows of one remote batch."""

    batch_id: str
    status: str  # validating, failed, in_progress, finalizing, completed, expired, cancelling, cancelled
    input_file_id: str | None = None
    output_file_id: str | None = None  # None also for the empty string some servers send
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: tuple[BatchLineError, ...] = ()
    created_at: int | None = None
    expires_at: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class BatchProvider(ABC):
    """A Batch-API-like provider. Implementations: ``fake`` (offline) and ``openai``."""

    name: str = "batch"

    @abstractmethod
    def upload(self, shard: Shard) -> str:
        """Upload the shard's input file; return the remote file id."""

    @abstractmethod
    def find_batch(self, shard: Shard) -> BatchInfo | None:
        """The batch already created for this shard (by its metadata), if any."""

    @abstractmethod
    def create_batch(self, shard: Shard, file_id: str) -> BatchInfo:
        """Create the batch for an uploaded shard, carrying ``shard.metadata``."""

    @abstractmethod
    def retrieve(self, batch_id: str) -> BatchInfo:
        """Current state of a batch; BatchNotFound when the provider does not know it."""

    @abstractmethod
    def download(self, file_id: str, dest: Path) -> bool:
        """Write a result file to ``dest``; False when the file no longer exists. Called from several threads
        at once (a group of ended batches is downloaded in parallel)."""

    @abstractmethod
    def cancel(self, batch_id: str) -> BatchInfo:
        """Ask for cancellation; returns the batch as it is now."""

    @abstractmethod
    def check(self) -> str:
        """A cheap call that needs the provider's credentials (`llmt debug`): what it found, or a ProviderError
        saying what is wrong. Nothing is created or paid for."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class RealtimeProvider(ABC):
    """Sends one request body to the chat completions endpoint and answers with a result line in
    the batch output format, so that realtime answers are classified and stored exactly like batch
    ones. Errors the server returns become lines (`response.status_code`, `body.error`); a request
    that never got an answer becomes a line with an `error` (`code`, `message`)."""

    name: str = "realtime"

    @abstractmethod
    def complete(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """One result line for one request. Thread-safe: called from several threads at once."""

    def embed(self, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """One result line for one request to the embeddings endpoint (its body: model, input, dimensions).
        Thread-safe."""
        raise ProviderError(f"the {self.name} provider does not answer embeddings", where=self.name,
                            hint="Use the openai or fake provider for embedding models.")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
