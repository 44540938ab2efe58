"""`llmt plan`: what a run would send and what it would cost, for LLM and embedding models. Reads the warehouse
read-only (or, on a project nobody has run yet, a throwaway in-memory copy of the models' inputs); sends nothing
and writes nothing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from llmt.cost import PriceTable
from llmt.file_sources import load_file_sources
from llmt.materialize import materialize_sql
from llmt.pipeline.context import ModelPlace
from llmt.pipeline.embed import EmbeddingSpec, check_columns
from llmt.pipeline.escalate import escalation_reserve
from llmt.pipeline.render import count_exactly, first_per_key, render_lines, screen
from llmt.pipeline.spec import KEY_VERSION, LlmSpec, send_mode
from llmt.pipeline.stage import inputs_of
from llmt.project import Project
from llmt.tokens import encoding, encoding_name
from llmt.warehouse.base import Warehouse
from llmt.warehouse.staging import Inputs, input_counts, keyed_select, pending_keys, pending_rows_sql
from llmt.warehouse.store import StateStore

EXPECTED_SHARE_DEFAULT = 0.5  # expected output when a model has no answers yet: half of max_output_tokens


@dataclass
class ModelPlan:
    model: str
    llm_model: str
    rows: int
    answered_rows: int
    new_rows: int  # rows without an answer (new or changed inputs, or a changed request)
    requests: int  # after de-duplication, minus requests in flight or out of attempts, or too long
    too_long: int  # requests over the model's context window: not sent, recorded as `too_long`
    input_tokens: int
    output_tokens_max: int
    output_tokens_expected: int
    expected_from: str  # how the expected output was estimated
    batch_usd_expected: float
    batch_usd_max: float
    live_usd_expected: float
    live_usd_max: float
    open_batches: int
    open_usd_max: float
    mode: str  # how `llmt run` would send them (auto resolved); its price is the estimate
    escalation_model: str | None  # `escalate:`: its upper bound (see escalate.escalation_bound)
    escalation_mode: str | None
    escalation_requests_max: int
    escalation_input_tokens_max: int
    escalation_output_tokens_max: int
    escalation_usd_max: float
    usd_expected: float  # the model's own requests at the price of `mode` (escalation not included)
    usd_max: float  # the model's own requests at the price of `mode`, plus the escalation's bound

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Tier:
    """Requests all under the model's long-context threshold, or all over it."""

    requests: int = 0
    tokens: int = 0


def plan_node(wh: Warehouse, store: StateStore, place: ModelPlace, spec: LlmSpec, prices: PriceTable,
              sample: int | None = None, mode: str | None = None) -> ModelPlan:
    select = place.select.strip().rstrip(";")
    described = wh.describe(select, where=place.where)
    view = wh.quote(f"llmt_plan_{place.name}")
    wh.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS {keyed_select(wh, inputs_of(spec, place), described)}",
               where=place.where)
    rows, answered, _ = input_counts(wh, store, view)
    keys = pending_keys(wh, view, spec.max_attempts, None)
    pending = pending_rows_sql(wh, view, spec.columns, keys, staged=False)
    max_out, override = int(spec.params["max_output_tokens"]), mode
    limits = prices.price(spec.model).limits(max_out)
    tiers = {False: _Tier(), True: _Tier()}  # by long-context or not
    too_long: list[tuple[str, int]] = []
    largest = 0
    sampled = wh.stream(pending + (f" LIMIT {int(sample)}" if sample is not None else ""))
    lines = render_lines(first_per_key(wh, sampled), spec.columns, spec)
    for _key, _line, n in screen(lines, limits, too_long, exact=True):
        tier = tiers[limits.long_above is not None and n > limits.long_above]
        tier.requests += 1
        tier.tokens += n
        largest = max(largest, n)
    wh.drop_temp(keys)
    requests = tiers[False].requests + tiers[True].requests
    average, stored = store.average_completion(place.name)
    if stored:
        per_request, source = average, f"average of {stored} stored answers"
    else:
        per_request, source = max_out * EXPECTED_SHARE_DEFAULT, "no answers yet: half of max_output_tokens"
    open_rows = store.open_work(place.name)
    # `llmt run` may have recorded an upper bound of a shard's input tokens: the plan counts its file exactly
    recount = [Path(path) for *_, exact, path in open_rows if not exact and Path(path).is_file()]
    exact_counts = dict(zip(recount, (tokens for tokens, _ in count_exactly(recount)), strict=True))
    open_usd = sum(prices.estimate(m, requests=n, prompt=exact_counts.get(Path(path), tokens), completion=out,
                                   batch=True)
                   for m, n, tokens, out, _, path in open_rows)

    def cost(per_request_out: float, batch: bool) -> float:
        return sum(prices.estimate(spec.model, requests=t.requests, prompt=t.tokens,
                                   completion=round(per_request_out * t.requests), batch=batch) for t in tiers.values())

    mode = send_mode(spec, requests, override)
    batch = mode == "batch"
    reserve = escalation_reserve(wh, view, described, prices, spec, rows, requests, too_long, override,
                                 place.where)
    bound = reserve(largest) if reserve else None
    escalation_usd = bound.usd if bound else 0.0
    return ModelPlan(
        model=place.name, llm_model=spec.model, rows=rows, answered_rows=answered, new_rows=rows - answered,
        requests=requests, too_long=len(too_long), input_tokens=tiers[False].tokens + tiers[True].tokens,
        output_tokens_max=requests * max_out, output_tokens_expected=round(per_request * requests),
        expected_from=source,
        batch_usd_expected=cost(per_request, True), batch_usd_max=cost(max_out, True),
        live_usd_expected=cost(per_request, False), live_usd_max=cost(max_out, False),
        open_batches=len(open_rows), open_usd_max=open_usd, mode=mode,
        escalation_model=bound.model if bound else None, escalation_mode=bound.mode if bound else None,
        escalation_requests_max=bound.requests if bound else 0,
        escalation_input_tokens_max=bound.input_tokens if bound else 0,
        escalation_output_tokens_max=bound.output_tokens if bound else 0, escalation_usd_max=escalation_usd,
        usd_expected=cost(per_request, batch), usd_max=cost(max_out, batch) + escalation_usd,
    )


def plan_embedding(wh: Warehouse, store: StateStore, place: ModelPlace, spec: EmbeddingSpec, prices: PriceTable,
                   sample: int | None = None, mode: str | None = None) -> ModelPlan:
    """What `llmt run` would send for an embedding model: its inputs without a stored embedding, counted exactly
    (empty ones and those over the model's token limit are not sent), at the price of its mode."""
    select = place.select.strip().rstrip(";")
    described = wh.describe(select, where=place.where)
    check_columns(spec, place.where, described)
    view = wh.quote(f"llmt_plan_{place.name}")
    inputs = Inputs(place.name, select, [spec.column], spec.unique_key, spec.template_hash, KEY_VERSION, place.where)
    wh.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS {keyed_select(wh, inputs, described)}", where=place.where)
    rows, answered, _ = input_counts(wh, store, view)
    keys = pending_keys(wh, view, spec.max_attempts, None)
    pending = pending_rows_sql(wh, view, [spec.column], keys, staged=False)
    encode, limit = encoding(encoding_name(spec.model)).encode_ordinary, prices.price(spec.model).limits(0).limit
    requests = tokens = too_long = 0
    for _key, text in wh.stream(pending + (f" LIMIT {int(sample)}" if sample is not None else "")):
        n = len(encode(text)) if text else 0
        if n and (limit is None or n <= limit):
            requests, tokens = requests + 1, tokens + n
        too_long += bool(limit is not None and n > limit)
    wh.drop_temp(keys)
    open_rows = store.open_work(place.name)
    open_usd = sum(prices.estimate(m, requests=n, prompt=t, completion=0, batch=True) for m, n, t, *_ in open_rows)
    batch_usd, live_usd = (prices.estimate(spec.model, requests=requests, prompt=tokens, completion=0, batch=b)
                           for b in (True, False))
    chosen = send_mode(spec, requests, mode)
    usd = batch_usd if chosen == "batch" else live_usd
    return ModelPlan(
        model=place.name, llm_model=spec.model, rows=rows, answered_rows=answered, new_rows=rows - answered,
        requests=requests, too_long=too_long, input_tokens=tokens, output_tokens_max=0, output_tokens_expected=0,
        expected_from="an embedding has no output tokens", batch_usd_expected=batch_usd, batch_usd_max=batch_usd,
        live_usd_expected=live_usd, live_usd_max=live_usd, open_batches=len(open_rows), open_usd_max=open_usd,
        mode=chosen, escalation_model=None, escalation_mode=None, escalation_requests_max=0,
        escalation_input_tokens_max=0, escalation_output_tokens_max=0, escalation_usd_max=0.0, usd_expected=usd,
        usd_max=usd)


def build_inputs(wh: Warehouse, project: Project, names: list[str]) -> list[str]:
    """Build the SQL models the LLM (or embedding) models ``names`` read from, in ``wh`` (a throwaway in-memory
    database), with empty llmt state beside them. Returns those that read another LLM or embedding model's output
    (there is none to read: they cannot be planned before it has run)."""
    def after_llm(name: str) -> bool:
        return any(project.nodes[a].sends for a in project.graph.ancestors(name))

    needed = {a for name in names for a in project.graph.ancestors(name)}
    read = [k for name in {*needed, *names} for k in project.nodes[name].sources]
    load_file_sources(wh, StateStore(wh), project, read)
    for name in project.graph.order():
        if name in needed and not project.nodes[name].sends and not after_llm(name):
            materialize_sql(wh, project, project.nodes[name], True, None)  # (a new database: nothing is there)
    return [name for name in names if after_llm(name)]
