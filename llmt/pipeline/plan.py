"""`llmt plan`: what a run would send and what it would cost. Reads the warehouse read-only;
sends nothing and writes nothing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

from llmt.compile import quote
from llmt.cost import PriceTable
from llmt.pipeline.render import count_exactly, iter_rows, render_lines
from llmt.pipeline.spec import LlmSpec
from llmt.pipeline.stage import OPEN_STATUSES, input_counts, keyed_select, pending_sql
from llmt.project import Node, Project
from llmt.warehouse.duckdb import execute

EXPECTED_SHARE_DEFAULT = 0.5  # expected output when a model has no answers yet: half of max_output_tokens


@dataclass
class ModelPlan:
    model: str
    llm_model: str
    rows: int
    answered_rows: int
    new_rows: int  # rows without an answer (new or changed inputs, or a changed request)
    requests: int  # after de-duplication, minus requests in flight or out of attempts
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
    usd_expected: float
    usd_max: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


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
    requests, tokens = 0, 0
    cursor = conn.execute(pending + (f" LIMIT {int(sample)}" if sample is not None else ""))
    for _key, _line, n in render_lines(iter_rows(cursor), spec.columns, spec):
        requests += 1
        tokens += n
    max_out = int(spec.params["max_output_tokens"])
    row = conn.execute(
        f"SELECT avg(completion_tokens), count(*) FROM {quote(state)}.answers WHERE node = ?", [node.name]
    ).fetchone()
    if row and row[1]:
        per_request, source = float(row[0] or 0), f"average of {row[1]} stored answers"
    else:
        per_request, source = max_out * EXPECTED_SHARE_DEFAULT, "no answers yet: half of max_output_tokens"
    expected_out = round(per_request * requests)
    open_rows = conn.execute(
        f"SELECT input_tokens, input_tokens_exact, path, n_requests * max_output_tokens "
        f"FROM {quote(state)}.shards WHERE node = ? AND status IN {OPEN_STATUSES}", [node.name],
    ).fetchall()
    # `llmt run` may have recorded an upper bound of a shard's input tokens: the plan counts its file exactly
    recount = [Path(path) for _, exact, path, _ in open_rows if not exact and Path(path).is_file()]
    kept = [int(tokens or 0) for tokens, exact, path, _ in open_rows if exact or Path(path) not in recount]
    open_n, open_in = len(open_rows), sum(kept) + sum(count_exactly(recount))
    open_out = sum(int(out or 0) for *_, out in open_rows)

    def cost(out: int, batch: bool) -> float:
        return prices.cost(spec.model, prompt=tokens, completion=out, batch=batch)

    mode = mode or spec.execution.mode
    if mode == "auto":
        mode = "realtime" if requests < spec.execution.realtime_below else "batch"
    batch = mode == "batch"

    return ModelPlan(
        model=node.name, llm_model=spec.model, rows=rows, answered_rows=answered, new_rows=rows - answered,
        requests=requests, input_tokens=tokens, output_tokens_max=requests * max_out,
        output_tokens_expected=expected_out, expected_from=source,
        batch_usd_expected=cost(expected_out, True), batch_usd_max=cost(requests * max_out, True),
        live_usd_expected=cost(expected_out, False), live_usd_max=cost(requests * max_out, False),
        open_batches=open_n,
        open_usd_max=prices.cost(spec.model, prompt=open_in, completion=open_out, batch=True),
        mode=mode, usd_expected=cost(expected_out, batch), usd_max=cost(requests * max_out, batch),
    )
