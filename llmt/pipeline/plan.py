"""`llmt plan`: what a run would send and what it would cost. Reads the warehouse read-only (or, on a
project nobody has run yet, a throwaway in-memory copy of the LLM models' inputs); sends nothing and
writes nothing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

from llmt.compile import quote
from llmt.cost import PriceTable
from llmt.file_sources import load_file_source
from llmt.materialize import materialize_sql
from llmt.pipeline.escalate import escalation_reserve
from llmt.pipeline.render import count_exactly, iter_rows, render_lines, screen
from llmt.pipeline.spec import LlmSpec, send_mode
from llmt.pipeline.stage import OPEN_STATUSES, input_counts, keyed_select, pending_sql
from llmt.project import Node, Project
from llmt.warehouse.duckdb import execute
from llmt.warehouse.state import migrate

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


def plan_node(
    conn: duckdb.DuckDBPyConnection, project: Project, node: Node, spec: LlmSpec, prices: PriceTable, state: str,
    sample: int | None = None,
    mode: str | None = None,
) -> ModelPlan:
    view = quote(f"llmt_plan_{node.name}")
    select = project.render(node, False).strip().rstrip(";")
    execute(conn, f"CREATE OR REPLACE TEMP VIEW {view} AS {keyed_select(spec, select)}", node.rel_path)
    rows, answered, _ = input_counts(conn, state, view)
    pending = pending_sql(state, view, spec.columns, spec.max_attempts, None)
    max_out, override = int(spec.params["max_output_tokens"]), mode
    limits = prices.price(spec.model).limits(max_out)
    tiers = {False: _Tier(), True: _Tier()}  # by long-context or not
    too_long: list[tuple[str, int]] = []
    largest = 0
    cursor = conn.execute(pending + (f" LIMIT {int(sample)}" if sample is not None else ""))
    for _key, _line, n in screen(render_lines(iter_rows(cursor), spec.columns, spec), limits, too_long, exact=True):
        tier = tiers[limits.long_above is not None and n > limits.long_above]
        tier.requests += 1
        tier.tokens += n
        largest = max(largest, n)
    requests = tiers[False].requests + tiers[True].requests
    row = conn.execute(
        f"SELECT avg(completion_tokens), count(*) FROM {quote(state)}.answers WHERE node = ?", [node.name]
    ).fetchone()
    if row and row[1]:
        per_request, source = float(row[0] or 0), f"average of {row[1]} stored answers"
    else:
        per_request, source = max_out * EXPECTED_SHARE_DEFAULT, "no answers yet: half of max_output_tokens"
    open_rows = conn.execute(
        f"SELECT model, n_requests, input_tokens, input_tokens_exact, path, n_requests * max_output_tokens "
        f"FROM {quote(state)}.shards WHERE node = ? AND status IN {OPEN_STATUSES}", [node.name],
    ).fetchall()
    # `llmt run` may have recorded an upper bound of a shard's input tokens: the plan counts its file exactly
    recount = [Path(path) for *_, exact, path, _ in open_rows if not exact and Path(path).is_file()]
    exact_counts = dict(zip(recount, (tokens for tokens, _ in count_exactly(recount)), strict=True))
    open_usd = sum(prices.estimate(m, requests=int(n or 0), prompt=exact_counts.get(Path(path), int(tokens or 0)),
                                   completion=int(out or 0), batch=True)
                   for m, n, tokens, _, path, out in open_rows)

    def cost(per_request_out: float, batch: bool) -> float:
        return sum(prices.estimate(spec.model, requests=t.requests, prompt=t.tokens,
                                   completion=round(per_request_out * t.requests), batch=batch) for t in tiers.values())

    mode = send_mode(spec, requests, override)
    batch = mode == "batch"
    reserve = escalation_reserve(conn, state, view, prices, spec, rows, requests, too_long, override,
                                 node.rel_path)
    bound = reserve(largest) if reserve else None
    escalation_usd = bound.usd if bound else 0.0
    return ModelPlan(
        model=node.name, llm_model=spec.model, rows=rows, answered_rows=answered, new_rows=rows - answered,
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


def build_inputs(conn: duckdb.DuckDBPyConnection, project: Project, names: list[str], state: str) -> list[str]:
    """Build the SQL models the LLM models ``names`` read from, in ``conn`` (a throwaway in-memory database),
    with empty llmt state beside them. Returns the LLM models that read another LLM model's output (there is
    none to read: they cannot be planned before it has run)."""
    migrate(conn, state)
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(project.schema)}")
    def after_llm(name: str) -> bool:
        return any(project.nodes[a].is_llm for a in project.graph.ancestors(name))

    needed = {a for name in names for a in project.graph.ancestors(name)}
    for key in sorted({k for name in {*needed, *names} for k in project.nodes[name].sources}):
        if project.sources[key].files:
            load_file_source(conn, project.dir, project.sources[key])
    for name in project.graph.order():
        if name in needed and not project.nodes[name].is_llm and not after_llm(name):
            materialize_sql(conn, project, project.nodes[name], True)
    return [name for name in names if after_llm(name)]
