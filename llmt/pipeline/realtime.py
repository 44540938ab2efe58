"""Realtime mode: send a shard's requests to the chat completions (or embeddings) endpoint with bounded
concurrency and request/token rate limits, storing the answers as they arrive.

A realtime shard is recorded like a batch shard (provider `realtime`; its attempts and answers carry the
kind of the target's provider) before anything is sent. Its requests go from other threads while the model's
step waits, as for a batch (the run's other models go on meanwhile); attempts are stored on the run's thread,
in small transactions, as requests complete, so Ctrl-C or a kill keeps every answer already stored; the shard
is then closed (`interrupted`) and a re-run sends only the rest.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmt.console import OpenBatch
from llmt.crash import crash_point
from llmt.pipeline.batches import Wait
from llmt.pipeline.collect import Attempt, classify, store
from llmt.pipeline.context import Limits
from llmt.tokens import RequestCounter
from llmt.validate import AnswerValidator
from llmt.warehouse.collecting import Source
from llmt.warehouse.store import ShardRow

if TYPE_CHECKING:
    from llmt.pipeline.context import RunContext

GRACE_SECONDS = 10.0  # on Ctrl-C, how long to wait for requests already sent
SAVE_EVERY = 0.2  # seconds: how often the answers that came back are stored (and the live view shown)


class RateLimiter:
    """Token buckets for requests and tokens per minute; `acquire` blocks until both allow."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.lock = threading.Lock()
        self.requests = float(limits.requests_per_minute or 0)
        self.tokens = float(limits.tokens_per_minute or 0)
        self.stamp = time.monotonic()

    def acquire(self, tokens: int) -> None:
        rpm, tpm = self.limits.requests_per_minute, self.limits.tokens_per_minute
        while True:
            with self.lock:
                now = time.monotonic()
                elapsed, self.stamp = now - self.stamp, now
                if rpm:
                    self.requests = min(float(rpm), self.requests + elapsed * rpm / 60)
                if tpm:
                    self.tokens = min(float(tpm), self.tokens + elapsed * tpm / 60)
                need_r = 0.0 if not rpm or self.requests >= 1 else (1 - self.requests) * 60 / rpm
                cost = min(tokens, tpm) if tpm else 0  # a request bigger than the bucket waits for a full one
                need_t = 0.0 if not tpm or self.tokens >= cost else (cost - self.tokens) * 60 / tpm
                if need_r == 0 and need_t == 0:
                    if rpm:
                        self.requests -= 1
                    if tpm:
                        self.tokens -= cost
                    return
            time.sleep(max(need_r, need_t))


def _requests(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for raw in handle:
            line = json.loads(raw)
            yield str(line["custom_id"]), line["body"]


# Sends one request (its custom_id and body) through the provider, within the rate limits, and returns the attempts
# its answer makes: one for a chat completion, one per input of an embeddings request
Asker = Callable[[str, dict[str, Any], RateLimiter], list[Attempt]]
Asked = Future[list[Attempt]]


def chat_asker(run: RunContext, row: ShardRow) -> Asker:
    """How a chat completions shard's requests are sent and their answers classified."""
    validator = AnswerValidator(json.loads(row.response_schema), row.node)
    provider, prices = run.providers.realtime, run.prices
    counter: RequestCounter | None = None
    max_out = 0

    def ask(key: str, body: dict[str, Any], limiter: RateLimiter) -> list[Attempt]:
        nonlocal counter, max_out
        if counter is None:
            counter = RequestCounter(str(body["model"]), body.get("response_format"))
            max_out = int(body.get("max_completion_tokens") or 0)
        limiter.acquire(counter.count(body.get("messages") or []) + max_out)
        attempt = classify(provider.complete(key, body), validator)
        attempt.request_key = key  # the line's custom_id is ours; never trust an echo
        attempt.cost_usd = prices.cost(row.model, prompt=attempt.prompt_tokens,
                                       completion=attempt.completion_tokens, cached=attempt.cached_tokens, batch=False)
        return [attempt]

    return ask


def send_shard(run: RunContext, row: ShardRow, kind: str, replace: bool = False, asker: Asker | None = None
               ) -> Generator[Wait, object, dict[str, int]]:
    """Send every request of a recorded realtime shard; returns outcome counts. The requests go from other
    threads (`_Sender`) while this step waits (the run's other models go on meanwhile), and what came back is
    stored here, on the run's thread, every SAVE_EVERY seconds. ``kind``: the kind of the target's provider (fake
    or openai), recorded with every attempt and answer; ``replace``: new answers replace stored ones (--reask);
    ``asker``: how a request is sent (default: to chat completions)."""
    sender = _Sender(asker or chat_asker(run, row), Path(row.path), run.providers.limits)
    counts: dict[str, int] = {}
    answered = 0

    def save(done: list[Asked]) -> None:
        nonlocal answered
        if not done:
            return
        attempts = [a for f in done for a in f.result()]
        with _ctrl_c_sets(stop := threading.Event()), run.warehouse.transaction():
            store(run.warehouse, attempts, row.shard_id, Source(row.run_id, row.node, row.model, False, kind),
                  replace)
        crash_point("realtime_store")
        for a in attempts:
            counts[a.outcome] = counts.get(a.outcome, 0) + 1
        answered += len(done)
        if stop.is_set():  # Ctrl-C while storing: honoured once the answers are stored
            raise KeyboardInterrupt

    started = time.time()
    feeding = sender.start()
    try:
        while not (feeding.done() and sender.all_taken()):
            # the warehouse stays held (as in the steps that store), and the live view shows the shard
            yield Wait([], time.monotonic() + SAVE_EVERY, jobs=[sender.wake()], held=True,
                       shown=OpenBatch(row.node, row.shard_id, "realtime", answered, row.n_requests,
                                       time.time() - started))
            save(sender.take())
            if feeding.done():
                feeding.result()  # (an error of the sender's thread: the request file unreadable)
        sender.close()
    except BaseException:  # an error, Ctrl-C, or the run stopping this model
        sender.stop()  # requests already on the wire are waited for: their answers are paid for
        finished = [f for f in sender.take() if not f.cancelled() and f.exception() is None]
        if finished:
            save(finished)  # keep every answer already received
        run.store.update_shard(row.shard_id, status="interrupted")
        raise
    run.store.update_shard(row.shard_id, status="collected")
    return counts


class _Sender:
    """A shard's requests sent from a thread of its own, on ``limits.concurrency`` threads, with at most twice
    that many on the wire or answered and not yet taken (so memory stays flat); `take` hands over those that
    came back, and `wake` says when that many are waiting to be taken (so that sending never stalls), or the
    last ones."""

    def __init__(self, ask: Asker, path: Path, limits: Limits) -> None:
        self.ask, self.path = ask, path
        self.limiter = RateLimiter(limits)
        self.concurrency = limits.concurrency
        self.room = threading.Semaphore(limits.concurrency * 2)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.sent: set[Asked] = set()  # not taken yet
        self.back = 0  # of those, how many came back
        self.fed = False  # every request was sent
        self.woken: Future[None] = Future()
        self.feeder = ThreadPoolExecutor(1, thread_name_prefix="llmt-realtime-feed")
        self.pool = ThreadPoolExecutor(max_workers=limits.concurrency, thread_name_prefix="llmt-realtime")

    def start(self) -> Future[None]:
        """Send every request (the future is done when the last one was sent, or sending stopped)."""
        return self.feeder.submit(self._send_all)

    def _send_all(self) -> None:
        try:
            for key, body in _requests(self.path):
                self.room.acquire()
                if self.stopping.is_set():
                    break
                future = self.pool.submit(self.ask, key, body, self.limiter)
                with self.lock:
                    self.sent.add(future)
                future.add_done_callback(self._came_back)
        finally:
            with self.lock:
                self.fed = True
                self._wake_when_due()

    def _came_back(self, _: Asked) -> None:
        with self.lock:
            self.back += 1
            self._wake_when_due()

    def _due(self) -> bool:
        return self.back >= self.concurrency or (self.fed and self.back >= len(self.sent))

    def _wake_when_due(self) -> None:
        if self._due() and not self.woken.done():
            self.woken.set_result(None)

    def wake(self) -> Future[None]:
        """Done when as many requests as run at once came back and wait to be taken, or the last ones."""
        with self.lock:
            if self.woken.done() and not self._due():
                self.woken = Future()
            return self.woken

    def all_taken(self) -> bool:
        with self.lock:
            return self.fed and not self.sent

    def take(self) -> list[Asked]:
        """The requests that came back since the last time (each once), making room for as many more."""
        with self.lock:
            done = [f for f in self.sent if f.done()]
            self.sent.difference_update(done)
            self.back -= len(done)
        for _ in done:
            self.room.release()
        return done

    def stop(self) -> None:
        """Send nothing more, and wait up to GRACE_SECONDS for the requests already sent."""
        self.stopping.set()
        self.room.release()  # (the feeder may be waiting for room)
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            sent = list(self.sent)
        wait(sent, timeout=GRACE_SECONDS)
        self.feeder.shutdown(wait=False)

    def close(self) -> None:
        """After every request came back."""
        self.pool.shutdown()
        self.feeder.shutdown()


@contextmanager
def _ctrl_c_sets(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C while answers are stored sets ``stop`` instead of interrupting the write (DuckDB would abort the
    query it is running, and answers already received would be lost); the caller honours it after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
