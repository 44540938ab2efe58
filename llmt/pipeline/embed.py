"""Embedding models: a select's text column sent to the embeddings endpoint, the vectors written beside the
select's columns.

    {{ config(materialized='embedding', column='body', unique_key='article_id', model='text-embedding-3-small',
              dimensions=512) }}
    select article_id, title, body from {{ ref('stg_kb_articles') }}

They go through the machinery of LLM models: the inputs are staged with request keys (the template hash covers
the endpoint, the model, the dimensions and the kind of provider; the input hash is the canonical hash of the
text column), only keys without a stored answer are sent (a re-run sends nothing, an edited text one input),
through the Batch API (pipeline/batches.py, many inputs a line: embed_lines.py) or in realtime, with budgets,
the ledger and `<model>__errors`; the output table is built from the stored answers like an LLM model's
(warehouse/outputs.py), its answer column `embedding` a fixed-size float vector (`Warehouse.vector_type`).

Inputs are counted exactly before anything is sent: an empty text is refused by the API (it is recorded as the
`http_error` 400 the API would give, without sending it) and a text over the model's token limit is `too_long`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from llmt.cost import BudgetExceeded, PriceTable, check_budget
from llmt.crash import crash_point
from llmt.errors import CompileError, ConfigError, LlmtError
from llmt.persist_docs import Docs, node_docs
from llmt.pipeline.batches import Batches, Steps, Wait, shard_ids
from llmt.pipeline.context import ModelPlace, RunContext
from llmt.pipeline.llm import (
    MAX_PAUSE,
    MAX_UNLUCKY_ROUNDS,
    Budgets,
    LlmOptions,
    LlmResult,
    ReaskDeclined,
    Step,
    committed_usd,
)
from llmt.pipeline.spec import KEY_VERSION, send_mode
from llmt.project import Node, Project
from llmt.project.config import EXECUTION_KEYS, Execution
from llmt.providers.base import REALTIME, BatchInfo
from llmt.providers.embeddings import DEFAULT_DIMENSIONS, ENDPOINT, FIXED_DIMENSIONS, MAX_INPUTS
from llmt.schema import META_PREFIX
from llmt.warehouse.base import Column
from llmt.warehouse.outputs import Output, build_output, failed_reasons
from llmt.warehouse.staging import Inputs, input_counts, pending_keys, pending_rows_sql, stage, stage_table
from llmt.warehouse.store import NewShard, ShardRow

# What writes, sends and collects requests (pipeline/embed_lines.py, realtime.py, collect.py) is imported where it
# is used: a run whose rows all have their vector (a no-op) needs none of it.
if TYPE_CHECKING:
    from llmt.pipeline.collect import Attempt
    from llmt.pipeline.embed_lines import EmbeddingShard, Screened
    from llmt.pipeline.realtime import Asker, RateLimiter

DEFAULT_MODEL = "text-embedding-3-small"
VECTOR = "embedding"  # the output column of the vectors (and the field of a stored answer)
NOT_FOR_EMBEDDINGS = ("prompt", "output_schema", "escalate")  # LLM model keys that make no sense here


@dataclass(frozen=True)
class EmbeddingSpec:
    """What one embedding model asks."""

    node: str
    model: str
    column: str  # the text column embedded
    dimensions: int  # the vector's length
    send_dimensions: bool  # whether requests ask for it (models before text-embedding-3 take no `dimensions`)
    unique_key: list[str]
    max_attempts: int
    per_request: int  # inputs a request (a batch line) at most
    provider: str  # the kind of provider that answers: part of the key
    template_hash: str
    execution: Execution = field(default_factory=Execution)
    docs: Docs = field(default_factory=Docs)

    def body(self) -> dict[str, Any]:
        """A request's body without its inputs."""
        body: dict[str, Any] = {"model": self.model, "encoding_format": "float"}
        if self.send_dimensions:
            body["dimensions"] = self.dimensions
        return body


def build_embedding_spec(project: Project, node: Node, provider: str | None = None) -> EmbeddingSpec:
    """The embedding model's spec for the target's provider kind (config errors name the model's file)."""
    where = node.rel_path
    own, defaults = node.config, project.config.llm.model_dump()
    for key in NOT_FOR_EMBEDDINGS:
        if key in own:
            raise ConfigError(f"`{key}` is an LLM model's config key: an embedding model has none", where=where,
                              hint="Remove it; an embedding model takes column=, model=, dimensions= and "
                              "inputs_per_request=.")
    if not node.unique_key:
        raise ConfigError("an embedding model needs a `unique_key` (the column(s) identifying an input row)",
                          where=where, hint="Add unique_key='your_id_column' to its config().")
    column = own.get("column")
    if not isinstance(column, str) or not column:
        raise ConfigError("an embedding model needs `column=`: the text column of its select to embed", where=where,
                          hint="Add column='body' (a column of the select) to its config().")
    model = str(own.get("model") or DEFAULT_MODEL)
    dimensions = own.get("dimensions", DEFAULT_DIMENSIONS.get(model))
    most = DEFAULT_DIMENSIONS.get(model)
    if dimensions is None:
        raise ConfigError(f"`dimensions` of `{model}` are not known to llmt", where=where,
                          hint="Give the length of its vectors: dimensions=<n> in the model's config().")
    if dimensions < 1 or (most is not None and dimensions > most):
        raise ConfigError(f"`dimensions` must be from 1 to {most or 'the model’s length'}, got {dimensions}",
                          where=where)
    if model in FIXED_DIMENSIONS and dimensions != most:
        raise ConfigError(f"`{model}` gives vectors of {most} dimensions and takes no `dimensions`", where=where,
                          hint="Remove dimensions=, or use text-embedding-3-small or -large.")
    per_request = own.get("inputs_per_request", MAX_INPUTS)
    if not 1 <= per_request <= MAX_INPUTS:
        raise ConfigError(f"`inputs_per_request` must be from 1 to {MAX_INPUTS}, got {per_request}", where=where)
    cfg = {**defaults, **own}
    try:
        execution = Execution.model_validate({k: cfg[k] for k in EXECUTION_KEYS if k in cfg and k != "escalate"})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"`{'.'.join(str(p) for p in err['loc'])}`: {err['msg']}", where=where) from None
    kind = provider or project.target.provider.type
    send_dimensions = "dimensions" in own and model not in FIXED_DIMENSIONS
    template = {"version": KEY_VERSION, "endpoint": ENDPOINT, "model": model, "encoding_format": "float",
                "dimensions": dimensions if send_dimensions else None, "provider": kind}
    template_hash = hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return EmbeddingSpec(
        node=node.name, model=model, column=column, dimensions=int(dimensions), send_dimensions=send_dimensions,
        unique_key=node.unique_key, max_attempts=int(cfg.get("max_attempts") or 1), per_request=int(per_request),
        provider=kind, template_hash=template_hash, execution=execution,
        docs=node_docs(node, {VECTOR: f"llmt: the embedding of `{column}` ({model}, {dimensions} dimensions)"}),
    )


def embedding_specs(project: Project, names: list[str], prices: PriceTable) -> dict[str, EmbeddingSpec]:
    """Compile-time checks of every selected embedding model (config, a known price for its model)."""
    specs = {n: build_embedding_spec(project, project.nodes[n]) for n in names if project.nodes[n].is_embedding}
    for name, spec in specs.items():
        prices.check(spec.model, 0, project.nodes[name].rel_path)
    return specs


def check_columns(spec: EmbeddingSpec, where: str, columns: list[Column]) -> None:
    """The embedded column, a text of the select; the unique key, in it; no clash with the output's columns."""
    types = {c.name: c.type for c in columns}
    names = ", ".join(types)
    if spec.column not in types:
        raise CompileError(f"`column='{spec.column}'` of embedding model `{spec.node}` is not in its select",
                           where=where, hint=f"Available columns: {names}.")
    if types[spec.column].family != "text":
        raise CompileError(f"column `{spec.column}` of `{spec.node}` is {types[spec.column].name}: an embedding "
                           "model embeds text", where=where, hint="Cast it to text in the select.")
    absent = [k for k in spec.unique_key if k not in types]
    if absent:
        raise ConfigError(f"unique_key column(s) {', '.join(absent)} are not in the select of `{spec.node}`",
                          where=where, hint=f"Available columns: {names}.")
    clash = [c for c in types if c == VECTOR or c.startswith(META_PREFIX)]
    if clash:
        raise CompileError(f"the select of `{spec.node}` has column(s) {', '.join(clash)}, which the output table "
                           f"defines (`{VECTOR}` and the `{META_PREFIX}` columns)", where=where,
                           hint="Rename the column in the select (e.g. `as input_<name>`).")


def embedding_output(run: RunContext, place: ModelPlace, spec: EmbeddingSpec, columns: list[Column] | None = None,
                     since: str | None = None, full_refresh: bool = False) -> dict[str, int]:
    """Rebuild the output and errors tables from the staged inputs and stored answers; status counts."""
    wh = run.warehouse
    with wh.transaction():
        if columns is None:
            columns = [c for c in wh.describe(f"SELECT * FROM {stage_table(wh, place.name)}")
                       if not c.name.startswith(META_PREFIX)]
        if full_refresh and wh.relation_kind(place.schema, place.name) == "table":
            wh.execute(f"DROP TABLE {wh.relation(place.schema, place.name)}")  # rebuilt from stored answers: free
        output = Output(place.name, place.schema, columns, [spec.column], spec.unique_key, spec.max_attempts,
                        spec.template_hash, spec.provider, [(VECTOR, wh.vector_type(spec.dimensions))], None,
                        spec.docs)
        return build_output(wh, run.store, output, since)


class EmbeddingRun:
    """One embedding model in one run: what NodeRun is to an LLM model (`steps()` yields wherever it waits, for
    the scheduler; `run()` goes to the end, waiting in place)."""

    def __init__(self, run: RunContext, batches: Batches, place: ModelPlace, spec: EmbeddingSpec,
                 options: LlmOptions, budgets: Budgets, *, deadline: float | None = None) -> None:
        self.ctx, self.batches, self.place, self.spec = run, batches, place, spec
        self.wh, self.store, self.options, self.budgets = run.warehouse, run.store, options, budgets
        self.name = place.name
        self.stage = stage_table(self.wh, place.name)
        self.result = LlmResult()
        self.since = run.run_id if options.retry_failed or options.reask else None
        self.deadline = deadline if deadline is not None or options.timeout is None else (
            time.monotonic() + options.timeout)
        self.rounds = 0
        self.columns: list[Column] = []

    def run(self) -> LlmResult:
        return self.batches.flight(self.options.poll_interval).finish(self.steps())

    def steps(self) -> Steps[LlmResult]:
        result = self.result
        self.batches.remove_unrecorded_files(self.place.work_dir)
        self.store.close_realtime(REALTIME, self.name)
        leftover = self.batches.open_shards(self.name)
        if leftover:
            self.ctx.reporter.info(f"  {self.name}: resuming {len(leftover)} open batch(es)")
            yield from self._drive(leftover)
        with self.wh.transaction():
            select = self.place.select.strip().rstrip(";")
            described = self.wh.describe(select, where=self.place.where)
            check_columns(self.spec, self.place.where, described)
            stage(self.wh, self.store, Inputs(self.name, select, [self.spec.column], self.spec.unique_key,
                                              self.spec.template_hash, KEY_VERSION, self.place.where,
                                              self.place.reads), described)
            self.columns = described
            result.rows, result.cached, result.deduplicated = input_counts(self.wh, self.store, self.stage, self.name)
        if self.options.reask:
            self._confirm_reask()
        if (result.cached < result.rows or self.options.reask) and not self._stopped():
            yield from self._send_all()
        result.answered = result.outcomes.get("ok", 0)
        result.open_batches = len(self.batches.open_shards(self.name))
        if self.options.reask:
            result.cached = self.store.answered_outside_run(self.stage, self.ctx.run_id)
        result.status = embedding_output(self.ctx, self.place, self.spec, self.columns, self.since,
                                         self.options.full_refresh)
        if result.status.get("failed"):
            result.failed_reasons = failed_reasons(self.wh, self.place.schema, self.name)
        return result

    def _stopped(self) -> bool:
        if self.name in self.batches.cancelled_by_user:
            self.result.stopped = "cancelled by `llmt cancel`"
            return True
        return False

    def _confirm_reask(self) -> None:
        """Before --reask pays again for stored embeddings: what they cost when first asked, and the user's yes."""
        if self.options.confirm is None:
            return
        stored, prompt, _ = self.store.answered_usage(self.stage)
        if stored and not self.options.confirm(
                f"{self.name}: --reask asks {self.spec.model} again for {stored} stored embedding(s) and replaces "
                f"them: about ${self.ctx.prices.cost(self.spec.model, prompt=prompt, completion=0, batch=True):.4f} "
                "(at batch prices). Continue?"):
            raise ReaskDeclined(f"--reask of `{self.name}` was not confirmed: nothing was asked again",
                                where=self.place.where, hint="Run without --reask to send only the new rows.")

    def _send_all(self) -> Step:
        """Rounds until nothing is pending; inputs that came back unanswered through no fault of their own are
        sent again after a pause that doubles, for at most MAX_UNLUCKY_ROUNDS such rounds (and within --timeout)."""
        unlucky_rounds = 0
        while True:
            unlucky_before = self.result.unlucky
            room = None if self.options.sample is None else self.options.sample - self.result.requests
            if (room is not None and room <= 0) or not (yield from self._round(room)):
                return
            if self._stopped() or not self.options.wait or self.options.sample is not None or self._out_of_time():
                return
            if self.result.unlucky > unlucky_before:
                unlucky_rounds += 1
                if unlucky_rounds >= MAX_UNLUCKY_ROUNDS:
                    self.result.stopped = f"provider trouble in {unlucky_rounds} rounds"
                    return
                pause = min(self.options.poll_interval * 2 ** unlucky_rounds, MAX_PAUSE)
                self.ctx.reporter.info(f"  {self.name}: {self.result.unlucky - unlucky_before} input(s) came back "
                                       f"unanswered through no fault of their own; sending them again in {pause:g}s")
                until = time.monotonic() + pause
                yield Wait([], until if self.deadline is None else min(until, self.deadline))
                if self._out_of_time():
                    return

    def _round(self, limit: int | None) -> Generator[Wait, dict[str, BatchInfo], int]:
        """Write, check the budget, record and send what is pending; returns how many inputs it sent."""
        spec, wh = self.spec, self.wh
        keys = pending_keys(wh, self.stage, spec.max_attempts, self.since, self.options.reask)
        if not keys.rows:
            wh.drop_temp(keys)
            return 0
        mode = send_mode(spec, keys.rows, self.options.mode)
        rows = pending_rows_sql(wh, self.stage, [spec.column], keys, staged=True) + " ORDER BY _llmt_request_key"
        if limit is not None:
            rows += f" LIMIT {int(limit)}"
        from llmt.pipeline.embed_lines import Screened, answer_schema, write_embedding_shards
        from llmt.pipeline.realtime import send_shard
        from llmt.tokens import encoding, encoding_name

        screened = Screened([], [])
        price = self.ctx.prices.price(spec.model)
        encode = encoding(encoding_name(spec.model)).encode_ordinary
        try:
            shards = write_embedding_shards(
                wh.stream(rows), self.place.work_dir, shard_ids(f"{self.ctx.run_id}r{self.rounds}", self.name),
                body=spec.body(), count=lambda text: len(encode(text)), limit=price.limits(0).limit or 1 << 62,
                per_request=spec.per_request, max_requests=self.options.max_requests_per_batch, screened=screened)
        finally:
            wh.drop_temp(keys)
        crash_point("after_write")
        batch = mode == "batch"
        try:
            self._check_budgets(shards, batch)
        except BudgetExceeded:
            for sh in shards:
                sh.path.unlink()
                sh.keys_path.unlink()
            raise
        self._record_screened(screened, mode)
        sent = sum(sh.inputs for sh in shards)
        self.result.requests += sent
        self.rounds += 1
        self.store.record_shards(
            [NewShard(sh.shard_id, sh.path, sh.keys_path, sh.n_requests, sh.input_tokens, True) for sh in shards],
            self.ctx.run_id, self.name, spec.model, self.batches.provider.name if batch else REALTIME,
            answer_schema(spec.dimensions), 0, ENDPOINT)
        for sh in shards:
            sh.keys_path.unlink()
        crash_point("after_record")
        if self.options.reask:
            self.result.reasked += self.store.stored_of_shards([sh.shard_id for sh in shards])
        if batch:
            yield from self._drive(self.batches.open_shards(self.name))
        else:
            for row in self.store.shards([sh.shard_id for sh in shards]):
                self.result.add_outcomes((yield from send_shard(
                    self.ctx, row, spec.provider, self.options.reask, embedding_asker(self.ctx, row, spec.dimensions))))
            self._add_spend()
        return sent + len(screened.empty) + len(screened.too_long)

    def _check_budgets(self, shards: list[EmbeddingShard], batch: bool) -> None:
        estimate = sum(self.ctx.prices.estimate(self.spec.model, requests=sh.inputs, prompt=sh.input_tokens,
                                                completion=0, batch=batch) for sh in shards)
        self.result.estimate_usd += estimate
        spent = self.store.run_usage(self.ctx.run_id)
        held = sum(usd for name, usd in self.budgets.held.items() if name != self.name)  # other models' escalations
        check_budget(self.name, estimate, committed_usd(self.ctx) + spent.cost_usd + held, self.budgets.run)
        check_budget(self.name, estimate, committed_usd(self.ctx, self.name) + self.result.cost_usd,
                     self.budgets.model)

    def _record_screened(self, screened: Screened, mode: str) -> None:
        """Inputs not sent: a final attempt each, nothing billed."""
        if not screened.empty and not screened.too_long:
            return
        from llmt.pipeline.collect import Attempt, store
        from llmt.warehouse.collecting import Source

        limit = self.ctx.prices.price(self.spec.model).limits(0).limit
        attempts = [Attempt(key, "http_error", status_code=400, error_code="empty_input",
                            detail="the text is empty (or NULL): the embeddings endpoint refuses it, so it was not "
                            "sent") for key in screened.empty]
        attempts += [Attempt(key, "too_long", detail=f"{tokens} tokens > the {limit} tokens {self.spec.model} takes")
                     for key, tokens in screened.too_long]
        with self.wh.transaction():
            store(self.wh, attempts, f"{self.ctx.run_id}r{self.rounds}-{self.name}-not-sent",
                  Source(self.ctx.run_id, self.name, self.spec.model, mode == "batch", self.spec.provider))
        self.result.add_outcomes({"http_error": len(screened.empty), "too_long": len(screened.too_long)})
        self.ctx.reporter.warn(f"{self.name}: {len(screened.empty)} empty input(s) and {len(screened.too_long)} "
                               f"over {self.spec.model}'s token limit: not sent, listed in {self.name}__errors")

    def _drive(self, rows: list[ShardRow]) -> Step:
        """Submit the shards, wait for their batches to end (with --no-wait: a look at them), collect those that
        ended."""
        ended = yield Wait(rows, self.deadline if self.options.wait else time.monotonic())
        self.result.add_outcomes(self.batches.collect(
            [(r, ended[r.shard_id]) for r in rows if r.shard_id in ended], self.place.work_dir, self.options.reask))
        self._add_spend()

    def _add_spend(self) -> None:
        usage = self.store.run_usage(self.ctx.run_id, self.name)
        self.result.unlucky, self.result.cost_usd = usage.unlucky, usage.cost_usd
        self.result.usage = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": 0, "cached_tokens": 0}

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


def embedding_asker(run: RunContext, row: ShardRow, dimensions: int) -> Asker:
    """How an embedding shard's requests are sent in realtime, and their answers made attempts."""
    from llmt.pipeline.embed_lines import line_attempts, line_inputs

    keys = sorted(run.store.shard_keys(row.shard_id))
    provider, prices = run.providers.realtime, run.prices

    def ask(custom_id: str, body: dict[str, Any], limiter: RateLimiter) -> list[Attempt]:
        inputs = line_inputs(custom_id, keys)
        if inputs is None:
            raise LlmtError(f"shard {row.shard_id} has a line llmt did not write ({custom_id!r})",
                            hint="This is a bug in llmt: please report it.")
        limiter.acquire(sum(len(text.encode("utf-8")) for text in body["input"]))  # bytes bound the tokens
        attempts = line_attempts(provider.embed(custom_id, body), inputs, dimensions)
        for attempt in attempts:
            attempt.cost_usd = prices.cost(row.model, prompt=attempt.prompt_tokens, completion=0, batch=False)
        return attempts

    return ask
