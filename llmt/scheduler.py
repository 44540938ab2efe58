"""How a run proceeds: the selected nodes by readiness, not one after another.

A node is ready when every selected node it depends on (directly or through others) has finished. SQL models are
built as soon as they are ready (or skipped when nothing they read changed: model_state.py); an LLM model whose
inputs are ready starts its run (`NodeRun.steps`), which goes as far as it can — stage, render, record, submit —
and then waits for its batches. Every model's waits are in one `InFlight`: shards are submitted together, open
batches of all models polled together, and a model goes on (collects, sends its next round, escalates, builds its
output) as soon as its batches ended; when it finishes, its children become ready. Steps run one at a time on
this thread, so the warehouse has one writer, never held while waiting, and each model's budget gate sees what
every other model committed.

With ``threads`` above 1 on an engine with several writers (PostgreSQL: `Warehouse.worker`), SQL models that are
ready are built on up to that many worker connections at once (`Builders`), each in its own transaction, while
the main thread goes on with the other models' steps; the main connection keeps the state's lock meanwhile, and
each build's fingerprint is recorded on this thread when it ends. On DuckDB (one writer) they are built one at a
time here: DuckDB parallelizes inside each statement instead.

A failed node skips its descendants only; with ``fail_fast`` the first failure stops the run: no node starts
after it, builds under way on workers are waited for, and nothing remote is cancelled (open batches are
collected by the next run).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from llmt.console import Reporter
from llmt.crash import crash_point
from llmt.errors import LlmtError
from llmt.model_state import Build, ModelState
from llmt.pipeline.batches import Batches, InFlight, Steps, Wait
from llmt.pipeline.context import RunContext
from llmt.pipeline.embed import EmbeddingRun
from llmt.pipeline.llm import LlmOptions, LlmResult, NodeRun
from llmt.project import Project
from llmt.providers.base import BatchInfo
from llmt.warehouse.base import Warehouse


@dataclass
class NodeResult:
    name: str
    materialized: str
    status: str  # dbt's: success | warn (an LLM model with failed rows, or stopped) | error | skipped
    seconds: float = 0.0
    message: str = ""
    rows: int | None = None
    llm: LlmResult | None = None
    unchanged: bool = False  # success without a build: nothing it reads changed since it was built
    resource_type: str = "model"  # or seed

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "unique_id": f"{self.resource_type}.{self.name}", "name": self.name, "resource_type": self.resource_type,
            "materialized": self.materialized,
            "status": self.status, "execution_time": round(self.seconds, 3), "message": self.message,
            "rows": self.rows, "unchanged": self.unchanged,
        }
        if self.llm is not None:
            out["llm"] = self.llm.as_dict()
        return out


@dataclass
class NodeHooks:
    """Run around each node by `llmt build` (its tests). A message returned by `before` skips the node;
    one returned by `after` (e.g. "failed test `x`") skips the node's descendants and says why."""

    before: Callable[[str], str | None]
    after: Callable[[str, NodeResult], str | None]


@dataclass
class Started:
    """A model under way: its steps, and its result so far (an LLM model's run, or a build on a worker)."""

    steps: Steps[LlmResult | None]
    result: NodeResult
    t0: float
    job: Future[int | None] | None = None  # a SQL model's build on a worker


class Builders:
    """Worker connections that build SQL models, up to one each at a time (--threads); opened when first used."""

    def __init__(self, main: Warehouse, workers: list[Warehouse]) -> None:
        self.main, self.workers = main, workers
        self.idle: queue.SimpleQueue[Warehouse] = queue.SimpleQueue()
        for wh in workers:
            self.idle.put(wh)
        self.pool = ThreadPoolExecutor(len(workers), thread_name_prefix="llmt-build")

    @staticmethod
    def of(wh: Warehouse, threads: int) -> Builders | None:
        """``threads`` workers of ``wh``; None when one writer builds (threads 1, or an engine with one writer)."""
        first = wh.worker() if threads > 1 else None
        if first is None:
            return None
        return Builders(wh, [first, *(w for w in (wh.worker() for _ in range(threads - 1)) if w is not None)])

    def submit(self, build: Build) -> Future[int | None]:
        self.main.hold()  # the workers take no lock: they write under the main connection's, kept meanwhile
        return self.pool.submit(self._build, build)

    def _build(self, build: Build) -> int | None:
        wh = self.idle.get()
        try:
            with wh.transaction():
                return build.run(wh)
        finally:
            self.idle.put(wh)

    def release(self) -> None:
        """Let go of the connections (none of them is building)."""
        for wh in self.workers:
            wh.release()

    def close(self) -> None:
        """After the builds under way (those not started are not started)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        for wh in self.workers:
            wh.close()


@dataclass
class Callbacks:
    """What the scheduler asks of the runner: an LLM model's run and its verdict, and what to do with each
    finished node's result."""

    llm_run: Callable[[str], NodeRun | EmbeddingRun]  # an LLM model's run, or an embedding model's
    judge: Callable[[NodeResult], None]
    finished: Callable[[NodeResult], None]
    hooks: NodeHooks | None = None


class Scheduler:
    def __init__(self, project: Project, names: list[str], state: ModelState, context: RunContext | None,
                 options: LlmOptions, calls: Callbacks, reporter: Reporter) -> None:
        self.project, self.state, self.options, self.calls = project, state, options, calls
        self.todo = list(names)  # not started yet, in DAG order
        position = {n: i for i, n in enumerate(names)}
        # what each node waits for: the selected nodes upstream of it, in DAG order
        self.upstream = {n: sorted(project.graph.ancestors(n) & position.keys(), key=position.__getitem__)
                         for n in names}
        self.batches = Batches(context) if context is not None else None
        self.flight = InFlight(state.wh, reporter, options.poll_interval, self.batches)
        self.builders = Builders.of(state.wh, options.threads or 1)
        self.threads = options.threads or 1
        self.running: dict[str, Started] = {}
        self.done: set[str] = set()
        self.blocked: dict[str, str] = {}  # node -> why its descendants are skipped ("failed", ...)
        self.stopped_by: str | None = None  # the failed node that stopped the run (--fail-fast)
        self.vetoed = False  # a hook skipped a node or its descendants (`llmt build`: a test failed)

    def run(self) -> None:
        """Every node to its end (or until --fail-fast stops the run)."""
        while True:
            self._start_ready()
            if self.stopped_by is not None or not self.running:
                break
            if self.builders is not None and not self._building():
                self.builders.release()  # only LLM models wait: no connection held meanwhile
            for name, got in self.flight.round():
                self._advance(name, got)
        if self.stopped_by is not None:
            self._stop(f"--fail-fast: `{self.stopped_by}` failed")

    def _start_ready(self) -> None:
        """Start every node whose upstream nodes have all finished (and what becomes ready as they finish)."""
        progress = True
        while progress and self.stopped_by is None:
            progress = False
            for name in list(self.todo):
                if all(u in self.done for u in self.upstream[name]) and not self._waits_for_a_worker(name):
                    self.todo.remove(name)
                    progress = True
                    self._start(name)
                    if self.stopped_by is not None:
                        return

    def _start(self, name: str) -> None:
        node = self.project.nodes[name]
        result = NodeResult(name, node.materialized, "success")
        why = None
        blocked = [u for u in self.upstream[name] if u in self.blocked]
        if blocked:
            self.blocked[name] = self.blocked[blocked[0]]
            why = f"upstream `{blocked[0]}` {self.blocked[name]}"
        elif self.calls.hooks is not None and (why := self.calls.hooks.before(name)):
            self.blocked[name] = "was skipped"
            self.vetoed = True
        if why:
            result.status, result.message = "skipped", f"skipped: {why}"
            self._finish(name, result, None)
            return
        t0 = time.monotonic()
        try:
            self.state.load_sources(node)  # when their files changed
            if node.sends:  # an LLM or embedding model
                self.running[name] = Started(self.calls.llm_run(name).steps(), result, t0)
                self._advance(name, None)
                return
            build = self.state.plan(node)  # unless nothing it reads changed
            if build.unchanged:
                result.rows, result.unchanged = build.rows, True
                result.message = "unchanged since its last build: not built again"
            elif self.builders is not None:
                self.state.before_elsewhere(build)
                job = self.builders.submit(build)
                self.running[name] = Started(self._built_elsewhere(build, job, result), result, t0, job)
                self._advance(name, None)
                return
            else:
                result.rows = self.state.build(build)
        except LlmtError as exc:
            if exc.exit_code == 2:  # a usage or config error: stop, exit code 2
                raise
            result.status, result.message = "error", exc.render()
        self._finish(name, result, t0)

    def _built_elsewhere(self, build: Build, job: Future[int | None], result: NodeResult) -> Steps[None]:
        """A SQL model's build on a worker: waited for (the main connection kept, with the state's lock), then
        its fingerprint recorded here."""
        yield Wait([], jobs=[job], held=True)
        result.rows = job.result()
        crash_point("after_build")
        self.state.record(build, result.rows)

    def _building(self) -> int:
        """How many SQL models are being built on workers."""
        return sum(started.job is not None for started in self.running.values())

    def _waits_for_a_worker(self, name: str) -> bool:
        """Whether SQL model ``name`` must wait for a worker to be free (--threads)."""
        node = self.project.nodes[name]
        return self.builders is not None and not node.sends and self._building() >= self.threads

    def _advance(self, name: str, got: dict[str, BatchInfo] | Exception | None) -> None:
        """Resume an LLM model's steps with what it waited for (or the error that ends its wait), up to its next
        wait or its end."""
        started = self.running[name]
        result = started.result
        try:
            if got is None:
                wait = next(started.steps)
            elif isinstance(got, Exception):
                wait = started.steps.throw(got)
            else:
                wait = started.steps.send(got)
        except StopIteration as stop:
            del self.running[name]
            if isinstance(stop.value, LlmResult):
                result.llm = stop.value
                result.rows = result.llm.rows
                self.calls.judge(result)
        except LlmtError as exc:
            del self.running[name]
            if exc.exit_code == 2:
                raise
            result.status, result.message = "error", exc.render()
        else:
            self.flight.add(name, wait)
            return
        self._finish(name, result, started.t0)

    def _finish(self, name: str, result: NodeResult, t0: float | None) -> None:
        if t0 is not None:
            result.seconds = time.monotonic() - t0
        self.calls.finished(result)
        if result.status == "error":
            self.blocked[name] = "failed"
            if self.options.fail_fast and self.stopped_by is None:
                self.stopped_by = name
        elif (result.status in ("success", "warn") and self.calls.hooks is not None
              and (veto := self.calls.hooks.after(name, result))):
            self.blocked[name] = veto
            self.vetoed = True
        self.done.add(name)

    def _stop(self, why: str) -> None:
        """End the run early: the models under way stop where they wait (their batches stay open), and the
        nodes not started are skipped; builds under way on workers end first (and are reported)."""
        builds = {name: started.job for name, started in self.running.items() if started.job is not None}
        for job in builds.values():
            job.exception()  # (waits for its end; unlike futures.wait, safe to leave by Ctrl-C)
        for name in builds:
            self.flight.drop(name)
            self._advance(name, {})
        for name, started in list(self.running.items()):
            started.steps.close()
            del self.running[name]
            started.result.status, started.result.message = "skipped", f"stopped: {why}"
            self._finish(name, started.result, started.t0)
        for name in self.todo:
            node = self.project.nodes[name]
            self._finish(name, NodeResult(name, node.materialized, "skipped", message=f"skipped: {why}"), None)
        self.todo = []

    def close(self) -> None:
        """After an error or Ctrl-C: every model under way stops where it is (a build on a worker, at its end)."""
        if self.builders is not None:
            self.builders.close()  # before the main connection, whose lock they work under, is let go
        for started in self.running.values():
            started.steps.close()
        self.running.clear()
        self.flight.close()
