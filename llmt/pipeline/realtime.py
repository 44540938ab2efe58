"""Realtime mode: send a shard's requests to the chat completions (or embeddings) endpoint with bounded
concurrency and request/token rate limits, storing every answer as soon as it arrives.

A realtime shard is recorded like a batch shard (provider `realtime`; its attempts and answers carry the
kind of the target's provider) before anything is sent, and
attempts are stored in small transactions as requests complete, so Ctrl-C or a kill keeps every
answer already stored; the shard is then closed (`interrupted`) and a re-run sends only the rest.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmt.crash import crash_point
from llmt.pipeline.collect import Attempt, classify, store
from llmt.pipeline.context import Limits
from llmt.tokens import RequestCounter
from llmt.validate import AnswerValidator
from llmt.warehouse.collecting import Source
from llmt.warehouse.store import ShardRow

if TYPE_CHECKING:
    from llmt.pipeline.context import RunContext

GRACE_SECONDS = 10.0  # on Ctrl-C, how long to wait for requests already sent


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
               ) -> dict[str, int]:
    """Send every request of a recorded realtime shard; returns outcome counts. ``kind``: the kind of the
    target's provider (fake or openai), recorded with every attempt and answer; ``replace``: new answers
    replace stored ones (--reask); ``asker``: how a request is sent (default: to chat completions)."""
    ask = asker or chat_asker(run, row)
    limits, reporter = run.providers.limits, run.reporter
    limiter = RateLimiter(limits)
    counts: dict[str, int] = {}

    def save(done: list[Asked]) -> None:
        attempts = [a for f in done for a in f.result()]
        with run.warehouse.transaction():
            store(run.warehouse, attempts, row.shard_id, Source(row.run_id, row.node, row.model, False, kind),
                  replace)
        crash_point("realtime_store")
        for a in attempts:
            counts[a.outcome] = counts.get(a.outcome, 0) + 1

    requests = _requests(Path(row.path))
    pool = ThreadPoolExecutor(max_workers=limits.concurrency, thread_name_prefix="llmt-realtime")
    running: set[Asked] = set()
    with _ctrl_c_sets(stop := threading.Event()):
        try:
            with reporter.progress(f"{row.node}: realtime", row.n_requests) as bar:
                for key, body in requests:
                    if stop.is_set():
                        break
                    running.add(pool.submit(ask, key, body, limiter))
                    if len(running) >= limits.concurrency * 2:
                        done, running = _settle(running)
                        save(done)
                        bar.advance(len(done))
                while running and not stop.is_set():
                    done, running = _settle(running)
                    save(done)
                    bar.advance(len(done))
            if stop.is_set():
                raise KeyboardInterrupt
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            wait(running, timeout=GRACE_SECONDS)  # requests already on the wire: their answers are paid for
            finished = [f for f in running if f.done() and not f.cancelled() and f.exception() is None]
            if finished:
                save(finished)  # keep every answer already received
            run.store.update_shard(row.shard_id, status="interrupted")
            raise
    pool.shutdown(wait=True)
    run.store.update_shard(row.shard_id, status="collected")
    return counts


@contextmanager
def _ctrl_c_sets(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C asks the sender to stop between two stores, instead of interrupting a write (DuckDB
    would abort the query it is running, and answers already received would be lost)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _settle(running: set[Asked]) -> tuple[list[Asked], set[Asked]]:
    done, rest = wait(running, return_when=FIRST_COMPLETED)
    return list(done), set(rest)
