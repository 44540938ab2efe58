"""Fault injection for the emulator, configured per test through ``emu.faults``.

HTTP faults are queued and consumed by the next matching requests::

    emu.faults.rate_limit_next(2, retry_after=0.01)               # two 429s with Retry-After
    emu.faults.server_error_next(1, path="/v1/batches")           # one 500
    emu.faults.drop_after_commit_next(1, path="/v1/batches")      # commit the create, then hang up
    emu.faults.slow_next(1, delay=0.3)                            # answer late

Batch faults apply to the next batches created, in order::

    emu.faults.fail_next_batch("token_limit_exceeded")
    emu.faults.next_batch(expire_after=3)        # expires with 3 answers, the rest batch_expired
    emu.faults.next_batch(stall_after=2)         # stays in_progress with 2 answers (cancel it)
    emu.faults.next_batch(all_lines_status=500)  # completed, every line an HTTP 500
    emu.faults.next_batch(cancel_after=2)        # the provider cancels it on its own after 2 answers
    emu.faults.next_batch(drop_lines=2, shuffle=True, output_missing=True)
    emu.faults.chaos = Chaos(seed=7, expire=0.2, drop=0.05, batch_size=20)  # every batch not scripted rolls

Requests can be held in the server until the test lets them go (e.g. one process's polls, by its API key)::

    hold = emu.faults.hold(path="/v1/batches/", method="GET", api_key="sk-run")
    emu.wait_for(lambda: hold.held > 0)
    hold.release()

Per-line outcomes: ``emu.faults.lines = FaultPlan(refused=0.1)`` (rolled per batch and
custom_id, exactly as the fake provider does) and ``emu.faults.line_outcome("id", "refused")``
to force the outcome of one request (consumed once it is answered).
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from llmt.providers.synth import FAULT_KINDS, FaultPlan


@dataclass
class HttpFault:
    """One queued HTTP-level fault."""

    kind: str  # status | drop_before | drop_after | slow
    times: int
    method: str | None = None
    path: str | None = None  # a prefix of the request path, e.g. "/v1/batches"
    status: int = 500
    retry_after: float | None = None
    delay: float = 0.0
    body: dict[str, Any] | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or path.startswith(self.path))


@dataclass
class BatchScript:
    """What happens to one batch beyond the normal walk to ``completed``."""

    fail_code: str | None = None  # fails while validating with this batch error code
    fail_message: str | None = None
    expire_after: int | None = None  # answers this many requests, then expires
    stall_after: int | None = None  # answers this many requests, then waits (for a cancel)
    all_lines_status: int | None = None  # every line becomes an HTTP error with this status
    cancel_after: int | None = None  # answers this many requests, then the provider cancels it (not the user)
    shuffle: bool = False  # output lines in a different order than the input
    drop_lines: int = 0  # this many answered requests never appear in any file
    drop_share: float = 0.0  # each answered request's line is left out of the files with this probability ...
    seed: int = 0  # ... rolled from this seed
    output_missing: bool = False  # the output file 404s although the batch names it


@dataclass
class Chaos:
    """Seeded random batch faults for batches nobody scripted: each expires part-way with probability
    ``expire`` (after a random number of requests below ``batch_size``), and each of its answered lines goes
    missing with probability ``drop``."""

    seed: int
    expire: float = 0.0
    drop: float = 0.0
    batch_size: int = 1
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def script(self) -> BatchScript:
        expire_after = self.rng.randrange(self.batch_size) if self.rng.random() < self.expire else None
        return BatchScript(expire_after=expire_after, drop_share=self.drop, seed=self.rng.getrandbits(32))


@dataclass
class Hold:
    """Requests that wait in the server until :meth:`release` (see `FaultInjector.hold`)."""

    method: str | None
    path: str | None
    api_key: str | None
    held: int = 0  # requests that have been held so far
    released: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, path: str, api_key: str) -> bool:
        return (not self.released.is_set() and self.method in (None, method)
                and (self.path is None or path.startswith(self.path)) and self.api_key in (None, api_key))

    def wait(self, stopping: threading.Event) -> None:
        self.held += 1
        while not (self.released.wait(0.01) or stopping.is_set()):
            pass

    def release(self) -> None:
        self.released.set()


TOKEN_LIMIT_MESSAGE = (
    "Enqueued token limit reached for {model} in organization org-emulator. Limit: 90,000 enqueued "
    "tokens. Please try again once some in_progress batches have been completed."
)


def rate_limit_body() -> dict[str, Any]:
    return {
        "error": {
            "message": "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. "
            "Please try again in 20ms.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }


@dataclass
class FaultInjector:
    http: list[HttpFault] = field(default_factory=list)
    batches: deque[BatchScript] = field(default_factory=deque)
    lines: FaultPlan | None = None
    forced: dict[str, deque[str]] = field(default_factory=dict)
    realtime: deque[str] = field(default_factory=deque)
    shuffle_output: bool = False  # every batch's output in a different order than its input
    chaos: Chaos | None = None  # random faults for the batches not scripted with next_batch
    holds: list[Hold] = field(default_factory=list)
    empty_file_ids: bool = False  # Azure style: "" instead of null for absent file ids
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- HTTP faults

    def add(self, fault: HttpFault) -> HttpFault:
        with self._lock:
            self.http.append(fault)
        return fault

    def rate_limit_next(
        self, n: int = 1, *, retry_after: float = 0.01, path: str | None = None, method: str | None = None
    ) -> HttpFault:
        return self.add(HttpFault("status", n, method, path, 429, retry_after, body=rate_limit_body()))

    def server_error_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        path: str | None = None,
        method: str | None = None,
        retry_after: float | None = None,
    ) -> HttpFault:
        """``retry_after`` (not sent by OpenAI on 5xx) only makes the SDK's backoff short in tests."""
        return self.add(HttpFault("status", n, method, path, status, retry_after))

    def drop_after_commit_next(
        self, n: int = 1, *, path: str | None = "/v1/batches", method: str | None = "POST"
    ) -> HttpFault:
        """The server does the work (e.g. creates the batch), then closes without answering."""
        return self.add(HttpFault("drop_after", n, method, path))

    def drop_next(self, n: int = 1, *, path: str | None = None, method: str | None = None) -> HttpFault:
        """The server hangs up before doing anything."""
        return self.add(HttpFault("drop_before", n, method, path))

    def slow_next(self, n: int = 1, *, delay: float, path: str | None = None, method: str | None = None) -> HttpFault:
        """The server waits ``delay`` seconds, then does the work and answers."""
        return self.add(HttpFault("slow", n, method, path, delay=delay))

    def take(self, method: str, path: str) -> list[HttpFault]:
        """The faults for this request (at most one of each kind), consuming them."""
        taken: dict[str, HttpFault] = {}
        with self._lock:
            for fault in self.http:
                if fault.times > 0 and fault.kind not in taken and fault.matches(method, path):
                    fault.times -= 1
                    taken[fault.kind] = fault
            self.http = [f for f in self.http if f.times > 0]
        return list(taken.values())

    def hold(self, *, path: str | None = None, method: str | None = None, api_key: str | None = None) -> Hold:
        """Hold matching requests (of one API key, when given) in the server until ``release()``."""
        hold = Hold(method, path, api_key)
        with self._lock:
            self.holds.append(hold)
        return hold

    def holding(self, method: str, path: str, api_key: str) -> Hold | None:
        with self._lock:
            return next((h for h in self.holds if h.matches(method, path, api_key)), None)

    # -- batch faults

    def next_batch(self, **script: Any) -> BatchScript:
        plan = BatchScript(**script)
        with self._lock:
            self.batches.append(plan)
        return plan

    def fail_next_batch(self, code: str = "token_limit_exceeded", message: str | None = None) -> BatchScript:
        return self.next_batch(fail_code=code, fail_message=message)

    def script_for_new_batch(self) -> BatchScript:
        with self._lock:
            script = (self.batches.popleft() if self.batches else
                      self.chaos.script() if self.chaos is not None else BatchScript())
        if self.shuffle_output:
            script.shuffle = True
        return script

    # -- per-line outcomes

    def line_outcome(self, custom_id: str, kind: str, times: int = 1) -> None:
        """Force the outcome of a request (one of FAULT_KINDS) the next ``times`` it is answered."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown outcome {kind!r}; one of {FAULT_KINDS}")
        with self._lock:
            self.forced.setdefault(custom_id, deque()).extend([kind] * times)

    def realtime_next(self, kind: str, times: int = 1) -> None:
        """Force the outcome of the next realtime (chat completion or embeddings) requests."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown outcome {kind!r}; one of {FAULT_KINDS}")
        with self._lock:
            self.realtime.extend([kind] * times)

    def forced_kind(self, custom_id: str) -> str | None:
        with self._lock:
            queue = self.forced.get(custom_id)
            return queue.popleft() if queue else None

    def realtime_kind(self) -> str | None:
        with self._lock:
            return self.realtime.popleft() if self.realtime else None
