"""Run one LLM model: resume open shards, stage inputs, send only the rows without an answer
(retrying retryable outcomes up to max_attempts), then rebuild the output and errors tables."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llmt.cost import Budget, BudgetExceeded, check_budget
from llmt.crash import crash_point
from llmt.errors import LlmtError, NodeError
from llmt.pipeline.batches import Batches, Steps, Wait, shard_ids
from llmt.pipeline.context import ModelPlace, RunContext
from llmt.pipeline.rekey import upgrade_keys
from llmt.pipeline.spec import LlmSpec, escalation_spec, send_mode
from llmt.pipeline.stage import stage_inputs
from llmt.project import Project
from llmt.providers.base import MAX_REQUESTS_PER_BATCH, REALTIME, BatchInfo
from llmt.warehouse.base import Column, TempTable
from llmt.warehouse.outputs import Output, build_output, failed_reasons
from llmt.warehouse.staging import input_counts, pending_keys, pending_rows_sql, stage_table
from llmt.warehouse.store import NewShard, ShardRow

# What renders, sends and collects requests (pipeline/render.py, realtime.py, collect.py, escalate.py) is imported
# where it is used: a run whose rows all have their answer (a no-op) needs none of it.
if TYPE_CHECKING:
    from llmt.pipeline.escalate import EscalationBound
    from llmt.pipeline.render import WrittenShard

# Rounds in which requests came back unanswered through no fault of their own (expired, missing, 429/5xx, a
# full batch queue: they use up no attempt) are followed by a pause, doubling from twice the poll interval up
# to MAX_PAUSE seconds; after this many such rounds a run leaves the rest pending for the next run.
MAX_UNLUCKY_ROUNDS = 10
MAX_PAUSE = 300.0


@dataclass
class LlmOptions:
    full_refresh: bool = False
    wait: bool = True
    retry_failed: bool = False
    timeout: float | None = None
    poll_interval: float = 2.0
    max_requests_per_batch: int = MAX_REQUESTS_PER_BATCH
    max_cost: float | None = None  # --max-cost: the run's budget in USD
    sample: int | None = None  # --sample N: send at most N requests per model (no retries)
    mode: str | None = None  # --mode: batch | realtime | auto for every model
    canary: bool = True  # --no-canary turns it off
    reask: bool = False  # --reask: ask again for rows that already have an answer (pays again)
    max_failed_share: float | None = None  # --max-failed-share: overrides the project's and the models'
    fail_fast: bool = False  # --fail-fast: the first failed node stops the run
    threads: int | None = None  # --threads (dbt's): SQL models built at once on engines with several writers
    # asked before --reask pays again for a model's stored answers (the question); False stops the run. None:
    # nobody to ask (the library; the CLI asks on a terminal and refuses without one unless --yes)
    confirm: Callable[[str], bool] | None = None


@dataclass
class LlmResult:
    rows: int = 0
    cached: int = 0  # rows answered from stored answers (no request)
    deduplicated: int = 0  # rows needing an answer that share their request with another row
    requests: int = 0  # requests sent in this run (after de-duplication)
    answered: int = 0  # requests answered ok in this run
    retried: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)  # output rows by _llmt_status
    cost_usd: float = 0.0  # actual spend of this run's attempts (billed failures included)
    estimate_usd: float = 0.0  # upper bound of what this run submitted
    saved_dedup_usd: float = 0.0
    saved_cache_usd: float = 0.0
    usage: dict[str, int] = field(default_factory=dict)  # prompt, completion, cached tokens
    open_batches: int = 0  # still running when the node finished (--no-wait, --timeout)
    reasked: int = 0  # --reask: requests sent again although their answer was stored
    unlucky: int = 0  # attempts of this run that came back unanswered through no fault of their own
    stopped: str | None = None  # why sending stopped with rows still pending (a user's cancel, provider trouble)
    failed_reasons: dict[str, int] = field(default_factory=dict)  # failed rows by reason (`<model>__errors`)

    def add_outcomes(self, counts: dict[str, int]) -> None:
        """Count attempts' outcomes (e.g. what a collect or a realtime send gave) into ``outcomes``."""
        for key, n in counts.items():
            self.outcomes[key] = self.outcomes.get(key, 0) + n

    def as_dict(self) -> dict[str, object]:
        return {
            "rows": self.rows, "cached": self.cached, "deduplicated": self.deduplicated,
            "requests": self.requests, "answered": self.answered, "retried": self.retried,
            "failed": self.status.get("failed", 0), "pending": self.status.get("pending", 0),
            "stale": self.status.get("stale", 0), "outcomes": self.outcomes,
            "cost_usd": round(self.cost_usd, 6), "estimate_usd": round(self.estimate_usd, 6),
            "saved_dedup_usd": round(self.saved_dedup_usd, 6), "saved_cache_usd": round(self.saved_cache_usd, 6),
            "usage": self.usage, "open_batches": self.open_batches, "reasked": self.reasked,
            "failed_reasons": self.failed_reasons, "stopped": self.stopped,
        }


class CanaryFailed(NodeError):
    """The canary's error rate was too high: nothing was submitted in batch."""


class ReaskDeclined(LlmtError):
    """The user said no to paying again for stored answers (--reask): nothing was re-asked."""


Step = Generator[Wait, dict[str, BatchInfo], None]  # a part of a model's run that may wait


class NodeRun:
    """One LLM model in one run: `steps()` yields wherever it waits for batches (or pauses), so that a scheduler
    can interleave the steps of several models on one thread; `run()` goes to the end, waiting in place."""

    def __init__(self, run: RunContext, batches: Batches, place: ModelPlace, spec: LlmSpec, options: LlmOptions,
                 budgets: Budgets, pinned: Callable[[], list[object]] = list, *,
                 deadline: float | None = None) -> None:
        """``deadline``: a `time.monotonic()` instant after which it waits no longer (default: --timeout from
        now)."""
        self.ctx, self.batches, self.place, self.spec = run, batches, place, spec
        self.wh, self.store, self.reporter = run.warehouse, run.store, run.reporter
        self.options, self.budgets, self.pinned = options, budgets, pinned
        self.name = place.name
        self.stage = stage_table(self.wh, place.name)
        self.work_dir = place.work_dir
        self.result = LlmResult()
        self.since = run.run_id if options.retry_failed or options.reask else None
        self.deadline = deadline if deadline is not None or options.timeout is None else (
            time.monotonic() + options.timeout)
        self.rounds = 0  # rounds sent (shard ids are numbered by it)
        self.retrying = False  # after the first round of a send, requests sent again count as retries
        self.spent_before = 0.0  # spend of this run that the budget of what is being sent now does not count
        self.columns: list[Column] = []  # the select's columns, once staged

    def run(self) -> LlmResult:
        """The model's run to its end, waiting in place (one model alone)."""
        return self.batches.flight(self.options.poll_interval).finish(self.steps())

    def steps(self) -> Steps[LlmResult]:
        try:
            return (yield from self._steps())
        finally:
            self.budgets.held.pop(self.name, None)

    def _steps(self) -> Steps[LlmResult]:
        result = self.result
        # 1. finish what an earlier run left in flight (e.g. --no-wait) before sending anything new
        self.batches.remove_unrecorded_files(self.work_dir)
        self.store.close_realtime(REALTIME, self.name)  # a killed process's realtime shards
        leftover = self.batches.open_shards(self.name)
        if leftover:
            self.reporter.info(f"  {self.name}: resuming {len(leftover)} open batch(es)")
            yield from self._drive(leftover)
        # 2. stage inputs with request keys (duplicate keys roll everything back); after an upgrade of the
        # request key, the answers stored under the older keys are first copied under the current ones
        escalated = escalation_spec(self.spec)
        with self.wh.transaction():
            rekeyed = upgrade_keys(self.wh, self.store, self.place, [self.spec, escalated], self.pinned)
            self.columns = stage_inputs(self.wh, self.store, self.place, self.spec)
            result.rows, result.cached, result.deduplicated = input_counts(self.wh, self.store, self.stage, self.name)
        if rekeyed:
            self.reporter.info(f"  {self.name}: {rekeyed} stored answer(s) re-keyed for this llmt's request keys")
        # 3. send what has no answer, in the model's mode, after a canary for a large batch (when every row's
        # request has its answer, the usual nightly run, nothing is pending: no pending query is run; with
        # --reask an answer of an earlier run does not count)
        if self.options.reask and not self._stopped():
            self._confirm_reask()
        if (result.cached < result.rows or self.options.reask) and not self._stopped():
            yield from self._send_all(self.spec, self.stage, self.options.sample, self.budgets.model)
        # 4. the cascade: what the primary model failed or was unsure about goes to a stronger model
        if escalated is not None and self.options.wait and not self._out_of_time() and not self._stopped():
            yield from self._escalate(escalated)
        # 5. requests of this model that another model of the run has in flight (identical requests are sent
        # once): their answers are waited for, until the model that sent them has collected them
        if self.options.wait and not self._out_of_time():
            shared = self.store.open_shards_sharing(self.stage, self.name, self.batches.provider.name)
            if shared:
                yield Wait(shared, self.deadline, foreign=True)
        result.answered = result.outcomes.get("ok", 0)
        result.open_batches = len(self.batches.open_shards(self.name))
        if self.options.reask:
            result.cached = self.store.answered_outside_run(self.stage, self.ctx.run_id)
        # 6. the output table follows the input; answers come from the store
        self._rebuild()
        return result

    def _rebuild(self) -> None:
        """The output and errors tables from the stored answers; the reasons of failed rows, when there are any."""
        result = self.result
        result.status = rebuild_output(self.ctx, self.place, self.spec, self.columns, self.since,
                                       self.options.full_refresh)
        if result.status.get("failed"):
            result.failed_reasons = failed_reasons(self.wh, self.place.schema, self.name)

    def _stopped(self) -> bool:
        """Whether `llmt cancel` cancelled a batch of this model while this run waited on it: the user's
        instruction to stop, so its rows stay pending (the next `llmt run` sends them)."""
        if self.name in self.batches.cancelled_by_user:
            self.result.stopped = "cancelled by `llmt cancel`"
            return True
        return False

    # -- sending ------------------------------------------------------------------------------
    def _send_all(self, spec: LlmSpec, source: str, limit: int | None, own_budget: list[Budget]) -> Step:
        """Rounds until nothing is pending. Each round uses up an attempt of every request whose outcome was its
        own (so those end); requests that came back unanswered through no fault of their own are sent again
        after a pause that doubles, for at most MAX_UNLUCKY_ROUNDS such rounds (and within --timeout)."""
        pending: TempTable | None = self._pending(spec, source)
        if pending is None or not pending.rows:
            if pending is not None:
                self.wh.drop_temp(pending)
            return
        mode = self._mode(spec, pending.rows)
        execution = spec.execution
        if (mode == "batch" and self.options.canary and execution.canary_above is not None
                and pending.rows > execution.canary_above):
            yield from self._canary(spec, source, own_budget, pending)
            pending = None  # the canary sent some
        unlucky_rounds = 0
        self.retrying = False
        while True:
            room = None if limit is None else limit - self.result.requests - self.result.retried
            unlucky_before = self.result.unlucky
            if room is not None and room <= 0:
                if pending is not None:
                    self.wh.drop_temp(pending)
                return
            if not (yield from self._round(spec, source, mode, room, own_budget, pending)):
                return
            pending = None  # the round changed what is pending
            self.retrying = True
            if (self._stopped() or not self.options.wait or self.options.sample is not None
                    or self._out_of_time()):
                return
            unlucky = self.result.unlucky - unlucky_before
            if unlucky:
                unlucky_rounds += 1
                if unlucky_rounds >= MAX_UNLUCKY_ROUNDS:
                    self.result.stopped = (f"provider trouble in {unlucky_rounds} rounds (expired, missing, rate "
                                           "limits, server errors)")
                    return
                pause = min(self.options.poll_interval * 2 ** unlucky_rounds, MAX_PAUSE)
                self.reporter.info(
                    f"  {self.name}: {unlucky} request(s) came back unanswered through no fault of their own "
                    f"(expired, cancelled, missing, rate-limited, server error or a full batch queue: no attempt "
                    f"used); sending them again in {pause:g}s")
                until = time.monotonic() + pause
                yield Wait([], until if self.deadline is None else min(until, self.deadline))
                if self._out_of_time():
                    return

    def _mode(self, spec: LlmSpec, total: int) -> str:
        return send_mode(spec, total, self.options.mode)

    def _pending(self, spec: LlmSpec, source: str) -> TempTable:
        """The request keys pending now, counted (the round that follows reads them)."""
        return pending_keys(self.wh, source, spec.max_attempts, self.since, self.options.reask)

    def _round(self, spec: LlmSpec, source: str, mode: str, limit: int | None, own_budget: list[Budget],
               keys: TempTable | None = None) -> Generator[Wait, dict[str, BatchInfo], int]:
        """Render, check the budget, record and send one round; returns how many requests it sent. ``keys``:
        the keys pending now, when they were just found (this round drops them)."""
        if keys is None:
            keys = self._pending(spec, source)
        pending = pending_rows_sql(self.wh, source, spec.columns, keys, staged=source == self.stage)
        total = min(keys.rows, limit if limit is not None else 1 << 62)
        if total == 0:
            self.wh.drop_temp(keys)
            return 0
        if limit is not None:  # --sample, the canary: the first by request key (a re-run continues with the rest)
            pending = f"SELECT * FROM ({pending}) AS p ORDER BY _llmt_request_key LIMIT {int(limit)}"
        from llmt.pipeline.realtime import send_shard
        from llmt.pipeline.render import render_pending, write_shards
        from llmt.tokens import MEMO_FILE, TokenMemo

        memo = TokenMemo(self.ctx.target_dir / MEMO_FILE)
        max_out = int(spec.params["max_output_tokens"])
        limits = self.ctx.prices.price(spec.model).limits(max_out)
        too_long: list[tuple[str, int]] = []
        try:
            with self.reporter.progress(f"{self.name}: rendering", total) as bar:
                shards = write_shards(
                    render_pending(self.wh, pending, spec.columns, spec, memo), self.work_dir,
                    shard_ids(f"{self.ctx.run_id}r{self.rounds}", self.name), exact=False,
                    max_requests=self.options.max_requests_per_batch, limits=limits, too_long=too_long,
                    advance=bar.advance,
                )
        finally:
            self.wh.drop_temp(keys)
        memo.save()
        batch = mode == "batch"
        crash_point("after_write")
        budgeted = bool(self.budgets.run or own_budget)
        reserve = (self._escalation_reserve(keys.rows - len(too_long), too_long) if spec is self.spec and budgeted
                   else None)
        try:
            estimate = self._check_budgets(spec, shards, batch, own_budget, reserve)
        except BudgetExceeded:
            for sh in shards:
                sh.path.unlink()
                sh.keys_path.unlink()
            raise
        if too_long:
            self._record_too_long(spec, too_long, mode)
        sent = sum(sh.n_requests for sh in shards)
        if self.retrying:
            self.result.retried += sent
        else:
            self.result.requests += sent
        self.result.estimate_usd += estimate
        self.rounds += 1
        self.store.record_shards(
            [NewShard(sh.shard_id, sh.path, sh.keys_path, sh.n_requests, sh.input_tokens, sh.exact) for sh in shards],
            self.ctx.run_id, self.name, spec.model, self.batches.provider.name if batch else REALTIME,
            spec.strict_schema, max_out)
        for sh in shards:
            sh.keys_path.unlink()
        crash_point("after_record")
        if self.options.reask and not self.retrying:
            self.result.reasked += self.store.stored_of_shards([sh.shard_id for sh in shards])
        if batch:
            yield from self._drive(self.batches.open_shards(self.name))
        else:
            for row in self.store.shards([sh.shard_id for sh in shards]):
                self.result.add_outcomes((yield from send_shard(self.ctx, row, spec.provider, self.options.reask)))
            self._add_spend()
        return sent

    def _confirm_reask(self) -> None:
        """Before --reask pays again for the stored answers of this model's rows: what that costs (what they cost
        when first asked, at the price of the model's mode), and the user's yes (``options.confirm``)."""
        if self.options.confirm is None:
            return
        stored, prompt, completion = self.store.answered_usage(self.stage)
        if not stored:
            return
        asked = stored if self.options.sample is None else min(stored, self.options.sample)
        batch = self._mode(self.spec, asked) == "batch"
        cost = self.ctx.prices.cost(self.spec.model, prompt=prompt, completion=completion, batch=batch)
        cost *= asked / stored
        question = (f"{self.name}: --reask asks {self.spec.model} again for {asked} stored answer(s) and replaces "
                    f"them: about ${cost:.4f} at {'batch' if batch else 'live'} prices (what they cost when first "
                    "asked). Continue?")
        if not self.options.confirm(question):
            raise ReaskDeclined(f"--reask of `{self.name}` was not confirmed: nothing was asked again",
                                where=self.place.where,
                                hint="Run without --reask to send only the rows without an answer.")

    def _check_budgets(self, spec: LlmSpec, shards: list[WrittenShard], batch: bool, own_budget: list[Budget],
                       reserve: Callable[[int], EscalationBound] | None = None) -> float:
        """The upper bound of what the shards may cost, checked against the budgets (with what is already
        committed and spent, and what ``reserve`` holds back for the escalation that follows, given the largest
        request). Input tokens are first bounded by bytes; only when that bound breaks a budget are they
        counted exactly (and those of other open batches), and checked again."""
        max_out = int(spec.params["max_output_tokens"])
        prices = self.ctx.prices

        def check() -> float:
            estimate = sum(prices.estimate(spec.model, requests=sh.n_requests, prompt=sh.input_tokens,
                                           completion=sh.n_requests * max_out, batch=batch) for sh in shards)
            held = reserve(max((sh.largest for sh in shards), default=0)) if reserve else None
            bound = estimate + (held.usd if held else 0.0)
            note = (f" (with up to ${held.usd:.4f} held back for escalating up to {held.requests} row(s) to "
                    f"{held.model})" if held and held.requests else "")
            others = sum(usd for name, usd in self.budgets.held.items() if name != self.name)
            check_budget(self.name, bound, committed_usd(self.ctx) + self.store.run_usage(self.ctx.run_id).cost_usd
                         + others, self.budgets.run,
                         note + (f" (other models of this run hold ${others:.4f} back for their escalations)"
                                 if others else ""))
            check_budget(self.name, bound, committed_usd(self.ctx, self.name) + self.result.cost_usd
                         - self.spent_before, own_budget, note)
            if held:
                self.budgets.held[self.name] = held.usd
            return estimate

        try:
            return check()
        except BudgetExceeded:
            inexact = [sh for sh in shards if not sh.exact]
            recounted = count_open_exactly(self.ctx)
            if not inexact and not recounted:
                raise
        from llmt.pipeline.render import count_exactly

        for sh, (tokens, largest) in zip(inexact, count_exactly([sh.path for sh in inexact]), strict=True):
            sh.input_tokens, sh.largest, sh.exact = tokens, largest, True
        return check()

    def _escalation_reserve(self, pending: int, too_long: list[tuple[str, int]]
                            ) -> Callable[[int], EscalationBound] | None:
        """What the primary model's rounds hold back for the escalation that follows them (when it does: the
        run waits for the primary model's answers)."""
        if not self.options.wait:
            return None
        from llmt.pipeline.escalate import escalation_reserve

        return escalation_reserve(self.wh, self.stage, self.columns, self.ctx.prices, self.spec, self.result.rows,
                                  pending, too_long, self.options.mode, self.place.where)

    def _record_too_long(self, spec: LlmSpec, rows: list[tuple[str, int]], mode: str) -> None:
        """Requests the model cannot take (over its context window): a final `too_long` attempt each, nothing
        sent, nothing billed."""
        price, max_out = self.ctx.prices.price(spec.model), int(spec.params["max_output_tokens"])

        def why(tokens: int) -> str:
            if price.context_window is not None and tokens + max_out > price.context_window:
                return (f"{tokens} input tokens + max_output_tokens {max_out} > context window "
                        f"{price.context_window} of {spec.model}")
            return f"{tokens} input tokens > the {price.max_input} input tokens {spec.model} accepts"

        from llmt.pipeline.collect import Attempt, store
        from llmt.warehouse.collecting import Source

        attempts = [Attempt(key, "too_long", detail=why(tokens)) for key, tokens in rows]
        with self.wh.transaction():
            store(self.wh, attempts, f"{self.ctx.run_id}r{self.rounds}-{self.name}-too-long",
                  Source(self.ctx.run_id, self.name, spec.model, mode == "batch", spec.provider))
        self.result.add_outcomes({"too_long": len(rows)})
        self.reporter.warn(f"{self.name}: {len(rows)} request(s) too long for {spec.model}'s context window: "
                           f"not sent, listed in {self.name}__errors (too_long)")

    def _drive(self, rows: list[ShardRow]) -> Step:
        """Submit the shards, wait for their batches to end (with --no-wait: a look at them) and collect those
        that ended."""
        ended = yield Wait(rows, self.deadline if self.options.wait else time.monotonic())
        self.result.add_outcomes(self.batches.collect([(r, ended[r.shard_id]) for r in rows if r.shard_id in ended],
                                                      self.work_dir, self.options.reask))
        self._add_spend()

    def _add_spend(self) -> None:
        """The model's actual spend and usage in this run, what de-duplication and caching saved, and how many of
        its attempts came back unanswered through no fault of their own."""
        result, usage = self.result, self.store.run_usage(self.ctx.run_id, self.name)
        result.unlucky = usage.unlucky
        result.cost_usd = usage.cost_usd
        result.usage = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                        "cached_tokens": usage.cached_tokens}
        if usage.model is not None:
            result.saved_cache_usd = self.ctx.prices.cache_savings(usage.model, usage.cached_tokens, batch=True)
        sent = result.requests + result.retried
        result.saved_dedup_usd = result.deduplicated * result.cost_usd / sent if sent else 0.0

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    # -- canary and cascade -----------------------------------------------------------------
    def _canary(self, spec: LlmSpec, source: str, own_budget: list[Budget], keys: TempTable) -> Step:
        """A few requests in realtime first: a broken prompt or schema fails in seconds."""
        execution = spec.execution
        before = dict(self.result.outcomes)
        sent = yield from self._round(spec, source, "realtime", execution.canary_size, own_budget, keys)
        counts = {k: n - before.get(k, 0) for k, n in self.result.outcomes.items() if n - before.get(k, 0)}
        failed = sent - counts.get("ok", 0)
        rate = failed / sent if sent else 0.0
        self.reporter.info(f"  {self.name}: canary of {sent} request(s): {failed} failed ({rate:.0%})")
        if rate > execution.canary_max_error_rate:
            details = "; ".join(f"{k}: {n}" for k, n in sorted(counts.items()) if k != "ok")
            self._rebuild()  # so that the hint's `<model>__errors` exists (and the output shows what was answered)
            state = self.wh.state_schema
            raise CanaryFailed(
                f"the canary of `{self.name}` failed: {failed} of {sent} realtime requests failed ({rate:.0%}, "
                f"more than canary_max_error_rate {execution.canary_max_error_rate:.0%}): {details}. "
                "No batch was submitted.",
                where=self.place.where,
                hint=f"`llmt show {self.name}__errors` lists the rows that used up their attempts; every "
                f"attempt's reason is in {state}.attempts (`select outcome, detail from {state}.attempts "
                f"where run_id = '{self.ctx.run_id}'`). Fix the prompt or schema, or skip the check with "
                "--no-canary.",
            )

    def _escalate(self, escalated: LlmSpec) -> Step:
        from llmt.pipeline.escalate import eligible_sql

        esc = self.spec.execution.escalate
        assert esc is not None
        source = f"({eligible_sql(self.wh, self.stage, self.columns, self.spec, escalated, self.place.where)})"
        pending = self._pending(escalated, source)
        eligible = pending.rows
        self.wh.drop_temp(pending)
        if eligible == 0:
            return
        cap = int(esc.max_share * self.result.rows)
        if eligible > cap:
            self.reporter.warn(f"{self.name}: {eligible} row(s) qualify for escalation to {esc.model}; "
                               f"max_share {esc.max_share:g} allows {cap}")
        own = [Budget(esc.budget_usd, f"escalate.budget_usd of model `{self.name}`")] if esc.budget_usd else []
        self.budgets.held.pop(self.name, None)  # what was held back for it is now committed shard by shard
        self.spent_before = self.result.cost_usd  # the escalation's own budget counts its spend only
        self.reporter.info(f"  {self.name}: escalating {min(eligible, cap)} row(s) to {esc.model}")
        before = self.result.requests + self.result.retried
        yield from self._send_all(escalated, source, before + cap, own)


@dataclass
class Budgets:
    run: list[Budget] = field(default_factory=list)  # --max-cost, project budget_usd: all models of a run
    model: list[Budget] = field(default_factory=list)  # the model's own budget_usd
    # USD each model of the run holds back for its escalation (shared by the models of a run): counted against
    # the run's budgets of the others as if committed, until its escalation commits shard by shard
    held: dict[str, float] = field(default_factory=dict)


def committed_usd(run: RunContext, node: str | None = None) -> float:
    """Spend committed and not yet known: the upper bound of open batches (all models, or one), shard by shard
    (a shard's requests are all over a long-context threshold or all under it)."""
    return sum(run.prices.estimate(m, requests=n, prompt=i, completion=o, batch=True)
               for m, n, i, o, _, _ in run.store.open_work(node))


def count_open_exactly(run: RunContext) -> bool:
    """Replace the upper bounds of open shards' input tokens by exact counts (from their files); True when any
    changed."""
    rows = [(shard_id, Path(path)) for shard_id, path in run.store.inexact_open_shards() if Path(path).is_file()]
    if not rows:
        return False
    from llmt.pipeline.render import count_exactly

    counts = count_exactly([path for _, path in rows])
    with run.warehouse.transaction():
        for (shard_id, _), (tokens, _largest) in zip(rows, counts, strict=True):
            run.store.update_shard(shard_id, input_tokens=tokens, input_tokens_exact=True)
    return True


def model_place(project: Project, name: str, batches_dir: Path) -> ModelPlace:
    """Where a project's LLM model reads and writes."""
    node = project.nodes[name]
    return ModelPlace(name, node.rel_path, project.render(node, False), node.schema, batches_dir / name)


def rebuild_output(run: RunContext, place: ModelPlace, spec: LlmSpec, columns: list[Column] | None = None,
                   since: str | None = None, full_refresh: bool = False) -> dict[str, int]:
    """Rebuild the output and errors tables from the staged inputs and stored answers."""
    wh = run.warehouse
    with wh.transaction():
        if columns is None:
            columns = [c for c in wh.describe(f"SELECT * FROM {stage_table(wh, place.name)}")
                       if not c.name.startswith("_llmt_")]
        if full_refresh and wh.relation_kind(place.schema, place.name) == "table":
            wh.execute(f"DROP TABLE {wh.relation(place.schema, place.name)}")  # rebuilt from stored answers: free
        escalated = escalation_spec(spec)
        output = Output(place.name, place.schema, columns, spec.columns, spec.unique_key, spec.max_attempts,
                        spec.template_hash, spec.provider, spec.output_columns,
                        escalated.template_hash if escalated is not None else None, spec.docs)
        return build_output(wh, run.store, output, since)
