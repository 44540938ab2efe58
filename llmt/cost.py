"""Prices, cost estimates and budgets.

Prices come from `llmt/data/prices.yml` (USD per 1M tokens, with the date they were taken) and
can be overridden or extended in project.yml (`llm: {prices: {model: {...}}}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import duckdb
import yaml

from llmt.errors import ConfigError, NodeError

PER_TOKEN = 1e-6


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens at live (standard) prices."""

    input: float
    cached_input: float
    output: float


@dataclass(frozen=True)
class PriceTable:
    models: dict[str, Price]
    batch_discount: float
    taken: str

    def price(self, model: str) -> Price:
        """The price of the longest listed prefix of ``model``; an unknown model is an error."""
        matches = [name for name in self.models if model == name or model.startswith(name + "-")]
        if not matches:
            raise ConfigError(
                f"no price for model `{model}` (prices taken {self.taken})",
                where="project.yml",
                hint=f"Add it under `llm: prices:` in project.yml, e.g. `{model}: "
                "{input: 0.15, cached_input: 0.075, output: 0.60}` (USD per 1M tokens, live prices).",
            )
        return self.models[max(matches, key=len)]

    def factor(self, batch: bool) -> float:
        return 1.0 - self.batch_discount if batch else 1.0

    def cost(self, model: str, *, prompt: int, completion: int, cached: int = 0, batch: bool) -> float:
        """What a request costs given its usage."""
        p = self.price(model)
        uncached = max(prompt - cached, 0)
        usd = (uncached * p.input + cached * p.cached_input + completion * p.output) * PER_TOKEN
        return usd * self.factor(batch)

    def cost_sql(self, model: str, *, batch: bool) -> tuple[str, list[float]]:
        """`cost` as a SQL expression over the columns prompt_tokens, completion_tokens and cached_tokens,
        with its parameters: the same arithmetic in the same order, so the same doubles."""
        p = self.price(model)
        sql = ("(greatest(prompt_tokens - cached_tokens, 0) * ?::DOUBLE + cached_tokens * ?::DOUBLE "
               "+ completion_tokens * ?::DOUBLE) * ?::DOUBLE * ?::DOUBLE")
        return sql, [p.input, p.cached_input, p.output, PER_TOKEN, self.factor(batch)]

    def cache_savings(self, model: str, cached: int, batch: bool) -> float:
        p = self.price(model)
        return cached * (p.input - p.cached_input) * PER_TOKEN * self.factor(batch)


@cache
def _shipped() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((files("llmt") / "data" / "prices.yml").read_text(encoding="utf-8"))
    return data


def price_table(overrides: dict[str, dict[str, float]] | None = None) -> PriceTable:
    data = _shipped()
    models = {name: Price(**value) for name, value in data["models"].items()}
    for name, value in (overrides or {}).items():
        base = models.get(name)
        try:
            models[name] = Price(**{**(base.__dict__ if base else {}), **value})
        except TypeError:
            raise ConfigError(
                f"the price of `{name}` needs input, cached_input and output (USD per 1M tokens), got {value}",
                where="project.yml (llm: prices:)",
            ) from None
    return PriceTable(models, float(data["batch_discount"]), str(data["taken"]))


@dataclass(frozen=True)
class Budget:
    """A limit in USD and where it comes from (for the message)."""

    usd: float
    source: str  # e.g. "--max-cost", "budget_usd of model `x`"


def check_budget(node: str, estimate: float, committed: float, budgets: list[Budget]) -> None:
    """Refuse to submit when the upper bound of new work plus open work exceeds any budget."""
    for budget in budgets:
        if committed + estimate > budget.usd + 1e-12:
            raise BudgetExceeded(
                f"`{node}` would submit work worth up to ${estimate:.4f} (upper bound: every request using "
                f"max_output_tokens) on top of ${committed:.4f} already committed, over the ${budget.usd:.4f} "
                f"budget ({budget.source}). Nothing was submitted.",
                where=node,
                hint="Raise the budget (--max-cost, or budget_usd in the model's config or under `llm:`), lower "
                "max_output_tokens, or narrow the work: --select, or --sample N to try N requests first. "
                "`llmt plan` shows the estimate.",
            )


class BudgetExceeded(NodeError):
    """Over budget: nothing was submitted."""


def node_last_run_cost_usd(conn: duckdb.DuckDBPyConnection, state_schema: str, node: str) -> float:
    """What the model's most recent run with attempts spent (billed failures included)."""
    row = conn.execute(
        f'SELECT coalesce(sum(cost_usd), 0) FROM "{state_schema}".attempts WHERE node = ? AND run_id = '
        f'(SELECT arg_max(run_id, created_at) FROM "{state_schema}".attempts WHERE node = ?)', [node, node],
    ).fetchone()
    return float(row[0]) if row else 0.0
