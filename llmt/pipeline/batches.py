"""Drive shards through the provider, recording intent before every remote side effect.

    written --upload--> uploaded --find or create batch--> submitted --poll, collect--> collected

A crash at any point is resumed by the next command: a written shard is uploaded again (a stray
file costs nothing), an uploaded shard first looks for a batch already created for it (by its
metadata) before creating one, and collection is idempotent.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from llmt.cost import PriceTable
from llmt.crash import crash_point
from llmt.pipeline.collect import collect_files
from llmt.pipeline.context import RunContext
from llmt.pipeline.embed_lines import collect_embedding_files, schema_dimensions
from llmt.providers.base import BatchInfo, BatchNotFound, Shard
from llmt.providers.embeddings import ENDPOINT as EMBEDDINGS
from llmt.validate import AnswerValidator
from llmt.warehouse.collecting import Finished, Source
from llmt.warehouse.store import ShardRow

CHAT = "/v1/chat/completions"  # where a shard's requests go, unless it says otherwise
# Ended shards of a model are collected together, up to this many requests at a time: one statement per step
# for all of them is quicker than one per shard (and a transaction this large writes its rows straight to the
# database file), while the distinct answers held for validation (~180 bytes each) stay bounded
COLLECT_REQUESTS = 1_000_000
DOWNLOADS_AT_ONCE = 4  # a group's result files are downloaded this many at a time


class Batches:
    """The batch lifecycle of one run's shards: submit, wait, collect, cancel."""

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.store = run.store
        self.provider = run.providers.batch
        self.cancelled_by_user: set[str] = set()  # models a collected batch of which `llmt cancel` cancelled

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
    def submit(self, row: ShardRow) -> None:
        """Bring a shard to `submitted` (or abandon it when its file is gone before upload)."""
        spec = self._spec(row)
        resumed = row.status == "uploaded"  # an earlier process may have created its batch already
        if row.status == "written":
            if not spec.path.is_file():
                self._update(row, status="abandoned", error="shard file missing before upload")
                return
            file_id = self.provider.upload(spec)
            crash_point("after_upload")
            self._update(row, file_id=file_id, status="uploaded")
        if row.status == "uploaded":
            # listing batches can take many pages: only a shard uploaded by an earlier process can have one
            found = self.provider.find_batch(spec) if resumed else None
            info = found if found is not None else self.provider.create_batch(spec, str(row.file_id))
            crash_point("after_create")
            self._update(row, batch_id=info.batch_id, batch_status=info.status, status="submitted")

    def wait(self, rows: list[ShardRow], timeout: float | None, poll: float) -> dict[str, BatchInfo]:
        """Poll submitted shards until their batches end (or the timeout), with a bar per batch fed by
        its request counts. Polling backs off from ``poll`` to a minute; no connection is held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = [r for r in rows if r.batch_id is not None]
        done: dict[str, BatchInfo] = {}
        delay = poll
        items = [(f"{r.node} {r.batch_id}", r.n_requests) for r in pending]
        self.run.warehouse.release()  # never hold the database while a provider works
        with self.run.reporter.bars(items) as bars:
            while True:
                changed: list[tuple[ShardRow, str]] = []
                for row, bar in zip(pending, bars, strict=True):
                    if row.shard_id in done:
                        continue
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
                    bar.update(info.completed + info.failed)
                    if info.status != row.batch_status:
                        changed.append((row, info.status))
                    if info.terminal:
                        done[row.shard_id] = info
                self.store.record_statuses([(row.shard_id, status) for row, status in changed])  # one write a round
                for row, status in changed:
                    row.batch_status = status
                if len(done) == len(pending) or (deadline is not None and time.monotonic() >= deadline):
                    return done
                self.run.warehouse.release()  # a status change was just recorded: do not hold the file while sleeping
                pause = delay if deadline is None else min(delay, max(deadline - time.monotonic(), 0.0))
                time.sleep(pause)
                delay = min(delay * 1.5, 60.0)

    def collect(self, ended: list[tuple[ShardRow, BatchInfo]], work_dir: Path, replace: bool = False) -> dict[str, int]:
        """Download the results of ended batches, classify them, store attempts and answers (``replace``: new
        answers replace stored ones, --reask) and mark the shards collected: shards of one model together, up to
        COLLECT_REQUESTS requests a transaction. Returns outcome counts."""
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
            totals.update(counts)
        return dict(totals)

    def _download_all(self, group: list[tuple[ShardRow, BatchInfo]], work_dir: Path) -> list[list[Path]]:
        """Each shard's downloaded result files. Several at a time: one HTTP stream is slower than the disk."""
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

    def drive(self, rows: list[ShardRow], *, wait: bool, timeout: float | None, poll: float,
              work_dir: Path, replace: bool = False) -> dict[str, int]:
        """Submit, wait for and collect the given shards; returns outcome counts."""
        for row in rows:
            self.submit(row)
        submitted = [r for r in rows if r.status == "submitted"]
        infos = self.wait(submitted, timeout if wait else 0.0, poll) if submitted else {}
        return self.collect([(row, infos[row.shard_id]) for row in submitted if row.shard_id in infos], work_dir,
                            replace)

    def describe(self, rows: list[ShardRow]) -> list[dict[str, Any]]:
        """What `llmt status` shows of open shards; reads the provider, collects nothing."""
        now = time.time()
        out = []
        for row in rows:
            entry: dict[str, Any] = {
                "node": row.node, "shard_id": row.shard_id, "batch_id": row.batch_id, "status": row.status,
                "requests": row.n_requests, "completed": None, "failed": None, "age_s": None, "expires_in_s": None,
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
