"""Drive shards through the provider, recording intent before every remote side effect.

    written --upload--> uploaded --find or create batch--> submitted --poll, collect--> collected

A crash at any point is resumed by the next command: a written shard is uploaded again (a stray
file costs nothing), an uploaded shard first looks for a batch already created for it (by its
metadata) before creating one, and collection is idempotent.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Collection, Generator, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from llmt.console import Board, OpenBatch, Reporter
from llmt.cost import PriceTable
from llmt.crash import crash_point
from llmt.pipeline.context import RunContext
from llmt.providers.base import BatchInfo, BatchNotFound, Shard
from llmt.providers.embeddings import ENDPOINT as EMBEDDINGS
from llmt.warehouse.base import Warehouse
from llmt.warehouse.store import ShardRow

if TYPE_CHECKING:
    from concurrent.futures import Future

CHAT = "/v1/chat/completions"  # where a shard's requests go, unless it says otherwise
# Ended shards of a model are collected together, up to this many requests at a time: one statement per step
# for all of them is quicker than one per shard (and a transaction this large writes its rows straight to the
# database file), while the distinct answers held for validation (~180 bytes each) stay bounded
COLLECT_REQUESTS = 1_000_000
DOWNLOADS_AT_ONCE = 4  # a group's result files are downloaded this many at a time
CALLS_AT_ONCE = 8  # uploads, creates and polls of several shards at a time
MAX_POLL = 60.0  # seconds: the longest pause between two polls

T = TypeVar("T")
R = TypeVar("R")


def shard_ids(round_id: str, node: str) -> Iterator[str]:
    """The ids of the shards one round of a model writes: `<round_id>-<node>-0001`, `-0002`, ..."""
    n = 0
    while True:
        n += 1
        yield f"{round_id}-{node}-{n:04d}"


class Batches:
    """The batch lifecycle of one run's shards: submit, wait, collect, cancel."""

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.store = run.store
        self.provider = run.providers.batch
        self.cancelled_by_user: set[str] = set()  # models a collected batch of which `llmt cancel` cancelled
        self.collected: set[str] = set()  # shards collected by this process
        self.collected_runs: set[str] = set()  # earlier runs whose shards this one collected

    def flight(self, poll: float) -> InFlight:
        """Where the waits of this run's models are polled together (``poll``: seconds between polls at first)."""
        return InFlight(self.run.warehouse, self.run.reporter, poll, self)

    def open_shards(self, node: str | None = None) -> list[ShardRow]:
        """This provider's shards not collected yet (of one model, or all)."""
        return self.store.open_shards(self.provider.name, node)

    def remove_unrecorded_files(self, work_dir: Path) -> None:
        """Delete shard files a killed run wrote but never recorded (they were never uploaded)."""
        if not work_dir.is_dir():
            return
        known = self.store.shard_ids()
        for path in work_dir.glob("*.jsonl"):
            if not path.name.endswith((".output.jsonl", ".errors.jsonl")) and path.stem not in known:
                path.unlink()
        for path in work_dir.glob("*.keys"):  # a recorded shard's keys are in the state tables already
            path.unlink()

    def _update(self, shard: ShardRow, **values: Any) -> None:
        self.store.update_shard(shard.shard_id, **values)
        for key, value in values.items():
            setattr(shard, key, value)

    def _spec(self, row: ShardRow) -> Shard:
        meta = {"tool": "llmt", "project": self.run.project, "node": row.node, "shard_id": row.shard_id,
                "run_id": row.run_id}
        return Shard(row.shard_id, row.node, row.model, Path(row.path), row.n_requests, meta,
                     row.endpoint or CHAT)

    # -- lifecycle --------------------------------------------------------------------------
    def submit(self, rows: list[ShardRow]) -> dict[str, Exception]:
        """Bring shards to `submitted` (a shard whose file is gone before upload is abandoned): their files are
        uploaded several at a time, then their batches created in order; each call's outcome is recorded here, on
        the caller's thread, before the next call for that shard. Returns the error of each shard that could not
        be submitted."""
        errors: dict[str, Exception] = {}
        for row in rows:
            if row.status == "written" and not Path(row.path).is_file():
                self._update(row, status="abandoned", error="shard file missing before upload")
        # an earlier process may have created the batch of a shard it uploaded: only those are looked for
        # (listing batches can take many pages)
        resumed = {r.shard_id for r in rows if r.status == "uploaded"}

        def upload(row: ShardRow) -> str:
            file_id = self.provider.upload(self._spec(row))
            crash_point("after_upload")
            return file_id

        for row, file_id in self._calls(upload, [r for r in rows if r.status == "written"], errors):
            self._update(row, file_id=file_id, status="uploaded")

        def create(row: ShardRow) -> BatchInfo:
            spec = self._spec(row)
            found = self.provider.find_batch(spec) if row.shard_id in resumed else None
            info = found if found is not None else self.provider.create_batch(spec, str(row.file_id))
            crash_point("after_create")
            return info

        for row in rows:  # in order, one at a time (creating is quick; uploading is what takes long)
            if row.status == "uploaded" and row.shard_id not in errors:
                try:
                    info = create(row)
                except Exception as exc:
                    errors[row.shard_id] = exc
                    continue
                self._update(row, batch_id=info.batch_id, batch_status=info.status, status="submitted")
        return errors

    def _calls(self, call: Callable[[ShardRow], T], rows: list[ShardRow], errors: dict[str, Exception]
               ) -> Iterator[tuple[ShardRow, T]]:
        """``call`` for each shard, several at a time; yields each shard with its result as they come (errors
        into ``errors``)."""
        if not rows:
            return
        from concurrent.futures import ThreadPoolExecutor, as_completed  # (here: a no-op calls the provider never)

        pool = ThreadPoolExecutor(min(CALLS_AT_ONCE, len(rows)), thread_name_prefix="llmt-provider")
        try:
            futures = {pool.submit(call, row): row for row in rows}
            for future in as_completed(futures):
                row = futures[future]
                try:
                    yield row, future.result()
                except Exception as exc:
                    errors[row.shard_id] = exc
        finally:  # on Ctrl-C, what has not started is not started
            pool.shutdown(cancel_futures=True)

    def poll(self, rows: list[ShardRow]) -> tuple[dict[str, BatchInfo], dict[str, Exception]]:
        """Each submitted shard's batch as the provider has it now (several asked at a time); the statuses that
        changed are recorded in one write. Returns the batches and the errors, by shard."""
        infos: dict[str, BatchInfo] = {}
        errors: dict[str, Exception] = {}

        def retrieve(row: ShardRow) -> BatchInfo:
            try:
                info = self.provider.retrieve(str(row.batch_id))
            except BatchNotFound as exc:
                raise BatchNotFound(
                    f"batch {row.batch_id} of model `{row.node}` is not found at the provider ({exc.message})",
                    where=f"shard {row.shard_id}",
                    hint="Did the API key, organization or base_url change? Switch back to collect it; "
                    f"if it is gone for good, `llmt cancel -s {row.node}` forgets it and the next run "
                    "sends its rows again.",
                ) from None
            crash_point("waiting")
            return info

        for row, info in self._calls(retrieve, rows, errors):
            infos[row.shard_id] = info
        changed = [(row, infos[row.shard_id].status) for row in rows
                   if row.shard_id in infos and infos[row.shard_id].status != row.batch_status]
        self.store.record_statuses([(row.shard_id, status) for row, status in changed])
        for row, status in changed:
            row.batch_status = status
        return infos, errors

    def wait(self, rows: list[ShardRow], timeout: float | None, poll: float) -> dict[str, BatchInfo]:
        """Poll submitted shards until their batches end (or the timeout); returns the ended ones."""
        if not rows:
            return {}
        flight = self.flight(poll)
        try:
            flight.add("", Wait(rows, None if timeout is None else time.monotonic() + timeout))
            while not (ready := flight.round()):
                pass
        finally:
            flight.close()
        got = ready[0][1]
        if isinstance(got, Exception):
            raise got
        return got

    def collect(self, ended: list[tuple[ShardRow, BatchInfo]], work_dir: Path, replace: bool = False) -> dict[str, int]:
        """Download the results of ended batches, classify them, store attempts and answers (``replace``: new
        answers replace stored ones, --reask) and mark the shards collected: shards of one model together, up to
        COLLECT_REQUESTS requests a transaction. Returns outcome counts."""
        # (imported here: most runs, a no-op's among them, have nothing to collect)
        from llmt.pipeline.collect import collect_files
        from llmt.pipeline.embed_lines import collect_embedding_files, schema_dimensions
        from llmt.validate import AnswerValidator
        from llmt.warehouse.collecting import Finished, Source

        totals: Counter[str] = Counter()
        for group in _groups(ended):
            node, model, schema = group[0][0].node, group[0][0].model, group[0][0].response_schema
            downloaded = self._download_all(group, work_dir)
            finished = [Finished(row.shard_id, paths, info.status,
                                 ",".join(sorted({e.code for e in info.errors})) or None)
                        for (row, info), paths in zip(group, downloaded, strict=True)]
            crash_point("after_download")
            source = Source(self.run.run_id, node, model, batch=True, provider=self.provider.name)
            with self.run.warehouse.transaction():
                if group[0][0].endpoint == EMBEDDINGS:
                    counts = collect_embedding_files(
                        self.run.warehouse, self.store.shard_keys, finished, source,
                        partial(_embedding_cost, self.run.prices, model),
                        schema_dimensions(json.loads(schema)), replace)
                else:
                    counts = collect_files(
                        self.run.warehouse, finished=finished, validator=AnswerValidator(json.loads(schema), node),
                        source=source, cost=self.run.prices.cost_sql(model, batch=True), replace=replace,
                    )
                self.store.mark_collected([(f.shard_id, f.batch_status, _describe_errors(info) or f.batch_error)
                                           for f, (_, info) in zip(finished, group, strict=True)])
                # a batch cancelled by `llmt cancel` while this run was under way: the user's instruction to stop
                # (a cancel of an earlier day, collected only now, is not; nor one the provider did on its own)
                cancelled = self.store.cancelled_by_user([f.shard_id for f in finished], self.run.run_id)
            if cancelled:
                self.cancelled_by_user.add(node)
            for row, _ in group:
                row.status = "collected"
                self.collected.add(row.shard_id)
                if row.run_id != self.run.run_id:
                    self.collected_runs.add(row.run_id)
            totals.update(counts)
        return dict(totals)

    def _download_all(self, group: list[tuple[ShardRow, BatchInfo]], work_dir: Path) -> list[list[Path]]:
        """Each shard's downloaded result files. Several at a time: one HTTP stream is slower than the disk."""
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(min(DOWNLOADS_AT_ONCE, len(group)), thread_name_prefix="llmt-download")
        try:
            return list(pool.map(lambda ended: self._download(ended[0], ended[1], work_dir), group))
        finally:  # on an error or Ctrl-C, what has not started is not started
            pool.shutdown(cancel_futures=True)

    def _download(self, row: ShardRow, info: BatchInfo, work_dir: Path) -> list[Path]:
        paths = []
        for kind, file_id in (("output", info.output_file_id), ("errors", info.error_file_id)):
            if file_id:
                dest = work_dir / f"{row.shard_id}.{kind}.jsonl"
                if self.provider.download(file_id, dest):
                    paths.append(dest)
        return paths

    def describe(self, rows: list[ShardRow]) -> list[dict[str, Any]]:
        """What `llmt status` shows of open shards; reads the provider, collects nothing."""
        now = time.time()
        out = []
        for row in rows:
            entry: dict[str, Any] = {
                "node": row.node, "run_id": row.run_id, "shard_id": row.shard_id, "batch_id": row.batch_id,
                "status": row.status, "requests": row.n_requests, "completed": None, "failed": None, "age_s": None,
                "expires_in_s": None,
            }
            if row.batch_id is not None:
                info = self.provider.retrieve(row.batch_id)
                entry.update(status=info.status, completed=info.completed, failed=info.failed)
                if info.created_at:
                    entry["age_s"] = int(now - info.created_at)
                if info.expires_at:
                    entry["expires_in_s"] = int(info.expires_at - now)
            out.append(entry)
        return out

    def cancel(self, rows: list[ShardRow], timeout: float | None, poll: float,
               work_dir: Callable[[str], Path]) -> dict[str, int]:
        """Cancel open shards: never-submitted ones are abandoned (their rows become pending again);
        submitted batches are cancelled and their partial output is collected. The user's request is recorded
        first, so that a run waiting on these batches stops instead of sending their rows again."""
        self.store.request_cancel([r.shard_id for r in rows])
        for row in rows:
            if row.status == "uploaded":  # its batch may exist (a create whose answer was lost): cancel that too
                found = self.provider.find_batch(self._spec(row))
                if found is not None:
                    self._update(row, batch_id=found.batch_id, batch_status=found.status, status="submitted")
            if row.status in ("written", "uploaded"):
                self._update(row, status="abandoned", error="cancelled before submission")
            elif row.batch_id is not None:
                try:
                    self.provider.cancel(row.batch_id)
                except BatchNotFound:  # gone for good (or another account): forget it, its rows go again
                    self._update(row, status="abandoned", error="batch not found at the provider")
        submitted = [r for r in rows if r.status == "submitted"]
        infos = self.wait(submitted, timeout, poll)
        totals: Counter[str] = Counter()
        for node in dict.fromkeys(r.node for r in submitted):
            ended = [(r, infos[r.shard_id]) for r in submitted if r.node == node and r.shard_id in infos]
            totals.update(self.collect(ended, work_dir(node)))
        return dict(totals)


def _embedding_cost(prices: PriceTable, model: str, tokens: int) -> float:
    """What ``tokens`` embedded input tokens cost in a batch."""
    return prices.cost(model, prompt=tokens, completion=0, batch=True)


def _groups(ended: list[tuple[ShardRow, BatchInfo]]) -> list[list[tuple[ShardRow, BatchInfo]]]:
    """Ended shards of one model (and schema) grouped, each group up to COLLECT_REQUESTS requests (or one shard)."""
    by_model: dict[tuple[str, str, str], list[list[tuple[ShardRow, BatchInfo]]]] = {}
    for row, info in ended:
        groups = by_model.setdefault((row.node, row.model, row.response_schema), [[]])
        if groups[-1] and sum(r.n_requests for r, _ in groups[-1]) + row.n_requests > COLLECT_REQUESTS:
            groups.append([])
        groups[-1].append((row, info))
    return [group for groups in by_model.values() for group in groups]


def _describe_errors(info: BatchInfo) -> str | None:
    """Batch-level errors with their line numbers, for `_llmt.shards.error`."""
    parts = [f"{e.code}" + (f" (line {e.line})" if e.line is not None else "") + f": {e.message}"
             for e in info.errors[:20]]
    return "; ".join(parts)[:2000] or None


@dataclass
class Wait:
    """What a step of a model's run waits for: its shards' batches to end (those not submitted yet are submitted
    first), until ``until`` (a `time.monotonic()` instant; None: no limit); without shards, a pause until
    ``until``, or ``jobs`` running on other threads. The step goes on with the batches that ended, by shard id
    (none for jobs: it asks its futures)."""

    shards: list[ShardRow]
    until: float | None = None
    # the shards are other models' (which submit and collect them): waited for until collected, or until no model
    # of the run waits for them any more
    foreign: bool = False
    # work on other threads (a SQL model's build on a worker connection, a shard's realtime requests): the step
    # goes on when one is done (or at ``until``)
    jobs: Collection[Future[Any]] = ()
    # the jobs write under this command's hold on the warehouse (or the step stores what they bring, often): its
    # connection is not let go while they run
    held: bool = False
    shown: OpenBatch | None = None  # how the live view shows the jobs (a shard's realtime requests)


Steps = Generator[Wait, dict[str, BatchInfo], R]


class InFlight:
    """The waits of every model of a run: their shards submitted together, their open batches polled together
    with backoff (from ``poll`` seconds up to a minute, back to ``poll`` when new batches are added), shown in one
    live view, and the jobs other threads do for them, without holding the warehouse while nothing can go on.
    ``batches``: None when no model of the run sends anything (only jobs are waited for)."""

    def __init__(self, warehouse: Warehouse, reporter: Reporter, poll: float, batches: Batches | None) -> None:
        self.warehouse, self.reporter, self.poll, self.batches = warehouse, reporter, poll, batches
        self.waits: dict[str, Wait] = {}
        self.infos: dict[str, BatchInfo] = {}  # the last poll of each open batch
        self.delay = poll
        self.next_poll = 0.0  # when the open batches are polled next (`time.monotonic()`)
        self.view: AbstractContextManager[Board] | None = None
        self.board: Board | None = None
        # set when a job is done: what the sleep between two rounds waits on (an Event, unlike futures.wait, is
        # safe to leave by Ctrl-C)
        self.woken = threading.Event()
        self.hooked: weakref.WeakSet[Future[Any]] = weakref.WeakSet()  # the jobs that set it (each once)

    def add(self, owner: str, wait: Wait) -> None:
        self.waits[owner] = wait
        for job in wait.jobs:
            if job not in self.hooked:
                self.hooked.add(job)
                job.add_done_callback(lambda _: self.woken.set())
        if wait.shards and not wait.foreign:
            self.delay, self.next_poll = self.poll, 0.0

    def drop(self, owner: str) -> None:
        self.waits.pop(owner, None)

    def open(self) -> list[ShardRow]:
        """The shards waited for that have not ended."""
        return [r for w in self.waits.values() if not w.foreign for r in w.shards
                if r.status == "submitted" and not (r.shard_id in self.infos and self.infos[r.shard_id].terminal)]

    def round(self) -> list[tuple[str, dict[str, BatchInfo] | Exception]]:
        """Submit the shards not submitted yet, poll the open batches when it is time, and return the owners that
        can go on: with the batches of theirs that ended (all, or as many as had when their time was up), or with
        the error that stops them. When none can, waits (with the warehouse released) and returns none."""
        assert self.waits, "nothing to wait for"
        self.woken.clear()  # (before the jobs are looked at: one done from now on ends the sleep)
        failed: dict[str, Exception] = {}
        fresh = [r for w in self.waits.values() if not w.foreign for r in w.shards
                 if r.status in ("written", "uploaded")]
        if fresh:
            assert self.batches is not None
            # uploads may take long: the view stays, the other models' batches in it beside these
            self._show([*self._shown(), *(OpenBatch(row.node, row.shard_id, "uploading", 0, row.n_requests, None)
                                          for row in fresh)])
            failed.update(self.batches.submit(fresh))
        self._release()  # never hold the database while a provider works
        now = time.monotonic()
        if now >= self.next_poll and (open_ := self.open()):
            assert self.batches is not None
            polled, errors = self.batches.poll(open_)
            self.infos.update(polled)
            failed.update(errors)
            now = time.monotonic()
            self.next_poll, self.delay = now + self.delay, min(self.delay * 1.5, MAX_POLL)
        owned = {r.shard_id for w in self.waits.values() if not w.foreign for r in w.shards}
        ready: list[tuple[str, dict[str, BatchInfo] | Exception]] = []
        for owner, wait in list(self.waits.items()):
            if wait.jobs:
                if any(job.done() for job in wait.jobs) or (wait.until is not None and now >= wait.until):
                    del self.waits[owner]
                    ready.append((owner, {}))
                continue
            if wait.foreign:
                collected = self.batches.collected if self.batches is not None else set()
                if all(r.shard_id in collected or r.shard_id not in owned for r in wait.shards) or (
                        wait.until is not None and now >= wait.until):
                    del self.waits[owner]
                    ready.append((owner, {}))
                continue
            error = next((failed[r.shard_id] for r in wait.shards if r.shard_id in failed), None)
            ended = {r.shard_id: self.infos[r.shard_id] for r in wait.shards
                     if r.shard_id in self.infos and self.infos[r.shard_id].terminal}
            ended_all = bool(wait.shards) and len(ended) == sum(r.status == "submitted" for r in wait.shards)
            if error is not None or ended_all or (wait.until is not None and now >= wait.until):
                del self.waits[owner]
                for row in wait.shards:
                    self.infos.pop(row.shard_id, None)
                ready.append((owner, error if error is not None else ended))
        if ready:  # (the live view stays: a step that needs the terminal makes it pause)
            return ready
        self._sleep(now)
        return []

    def _sleep(self, now: float) -> None:
        """Show the open batches and wait for the next poll, the first job done, or the first wait whose time is
        up."""
        shown = self._shown()
        if shown or self.board is not None:
            self._show(shown)
        self._release()  # a status change was just recorded: not held while sleeping
        pause = max(self.next_poll - now, 0.0) if self.open() else float(1 << 30)
        for wait in self.waits.values():
            if wait.until is not None:
                pause = min(pause, max(wait.until - now, 0.0))
        self.woken.wait(pause)

    def _shown(self) -> list[OpenBatch]:
        """What the live view shows: the open batches, and the jobs that say how to show them."""
        return [*(_open_batch(row, self.infos.get(row.shard_id)) for row in self.open()),
                *(wait.shown for wait in self.waits.values() if wait.shown is not None)]

    def _release(self) -> None:
        """Let go of the warehouse, unless a job writes under this command's hold on it."""
        if not any(wait.held for wait in self.waits.values()):
            self.warehouse.release()

    def _show(self, batches: list[OpenBatch]) -> None:
        if self.board is None:
            self.view = self.reporter.board()
            self.board = self.view.__enter__()
        self.board.show(batches)

    def _close_view(self) -> None:
        if self.view is not None:
            view, self.view, self.board = self.view, None, None
            view.__exit__(None, None, None)

    def finish(self, steps: Steps[R]) -> R:
        """Run one model's steps to their end, waiting in place."""
        try:
            wait = next(steps)
            while True:
                self.add("", wait)
                while not (ready := self.round()):
                    pass
                got = ready[0][1]
                wait = steps.throw(got) if isinstance(got, Exception) else steps.send(got)
        except StopIteration as stop:
            return cast(R, stop.value)
        finally:
            steps.close()  # (after an error or Ctrl-C: the step under way ends now, as in the scheduler)
            self.close()

    def close(self) -> None:
        self._close_view()


def _open_batch(row: ShardRow, info: BatchInfo | None) -> OpenBatch:
    age = None if info is None or not info.created_at else time.time() - info.created_at
    return OpenBatch(row.node, str(row.batch_id), info.status if info else str(row.batch_status),
                     info.completed + info.failed if info else 0, row.n_requests, age)
