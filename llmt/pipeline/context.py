"""What the stages of one command's run are given: a run context (the run, its warehouse and state store, its
provider, prices and reporter) and, for each LLM model, where it reads and writes. Stages get these values;
they never reach back into the project or forge its objects to point the pipeline somewhere else."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llmt.console import Reporter
from llmt.cost import PriceTable
from llmt.errors import ConfigError
from llmt.providers.base import BatchProvider, RealtimeProvider
from llmt.warehouse.base import Warehouse
from llmt.warehouse.store import StateStore


@dataclass(frozen=True)
class Limits:
    """How realtime requests are paced (the target's provider options)."""

    concurrency: int = 8
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None  # input tokens + max output tokens, as OpenAI counts them


@dataclass
class Providers:
    """The target's provider: its batch side, and its realtime side (made on first use: batch-only runs never
    need it), with the realtime rate limits."""

    batch: BatchProvider
    make_realtime: Callable[[], RealtimeProvider] | None
    limits: Limits
    _realtime: RealtimeProvider | None = field(default=None, init=False)

    @property
    def realtime(self) -> RealtimeProvider:
        if self._realtime is None:
            if self.make_realtime is None:
                raise ConfigError("this provider has no realtime mode", hint="Use mode: batch.")
            self._realtime = self.make_realtime()
        return self._realtime

    def close(self) -> None:
        self.batch.close()
        if self._realtime is not None and id(self._realtime) != id(self.batch):  # the fake provider serves both
            self._realtime.close()


@dataclass
class RunContext:
    run_id: str
    project: str  # the project's name (carried by every batch's metadata)
    warehouse: Warehouse
    store: StateStore
    providers: Providers
    prices: PriceTable
    reporter: Reporter
    target_dir: Path  # the project's target/ (token counts)
    batches_dir: Path  # where this target's batch files go, a folder per model


@dataclass(frozen=True)
class ModelPlace:
    """Where one LLM model's run reads and writes."""

    name: str
    where: str  # its file, for errors
    select: str  # its inputs
    schema: str  # where its output and `<model>__errors` tables are built
    work_dir: Path  # its batch files
    reads: str | None = None  # a fingerprint of what its select reads (model_state.py): staging is skipped while
    # it is the one the inputs were staged with
