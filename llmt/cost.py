"""Prices, cost estimates and budgets.

Prices come from `llmt/data/prices.yml` (USD per 1M tokens, with the date they were taken, and each
model's token limits) and can be overridden or extended in project.yml (`llm: {prices: {model: {...}}}`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import yaml

from llmt.errors import ConfigError, NodeError
from llmt.project.config import ModelPrice

PER_TOKEN = 1e-6
DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")  # a dated snapshot: gpt-4o-mini-2024-07-18


@dataclass(frozen=True)
class Rates:
    """USD per 1M tokens."""

    input: float
    cached_input: float
    output: float


@dataclass(frozen=True)
class RequestLimits:
    """What a model accepts: at most ``limit`` input tokens a request (None: no limit known); more than
    ``long_above``: long-context prices."""

    limit: int | None = None
    long_above: int | None = None


@dataclass(frozen=True)
class Price:
    """A model's live (standard) prices and token limits (None: not known)."""

    rates: Rates
    batch_discount: float
    context_window: int | None = None
    max_input: int | None = None
    max_output: int | None = None
    long_above: int | None = None  # more input tokens than this: the whole request at `long_rates`
    long_rates: Rates | None = None
    training: float | None = None  # fine-tuning it: USD per 1M training tokens
    training_example_tokens: int | None = None  # the most tokens one of its training examples may have

    def factor(self, batch: bool) -> float:
        return 1.0 - self.batch_discount if batch else 1.0

    def limits(self, max_output_tokens: int) -> RequestLimits:
        """What a request asking for ``max_output_tokens`` may carry (its input and the output it asks for
        within the context window, its input within `max_input`)."""
        limits = [] if self.max_input is None else [self.max_input]
        if self.context_window is not None:
            limits.append(self.context_window - max_output_tokens)
        return RequestLimits(min(limits) if limits else None, self.long_above)


@dataclass(frozen=True)
class PriceTable:
    models: dict[str, Price]
    batch_discount: float
    taken: str

    def price(self, model: str) -> Price:
        """The price listed for ``model``, or for it without a date suffix; an unknown model is an error."""
        found = self.models.get(model) or self.models.get(DATE_SUFFIX.sub("", model))
        if found is None:
            fine_tuned = ("A fine-tuned model has prices of its own: declare them. " if model.startswith("ft:")
                          else "")
            raise ConfigError(
                f"no price for model `{model}` (prices of {self.taken} list {len(self.models)} models; a name "
                "matches only exactly or with a date suffix such as -2024-07-18)",
                where="project.yml",
                hint=f"{fine_tuned}Declare its own prices (USD per 1M tokens, live) and context window under "
                f"`llm: prices:` in project.yml:\n  llm:\n    prices:\n      {model}: {{input: <USD>, cached_input: "
                "<USD>, output: <USD>, context_window: <tokens>}\n(zero is fine for a model that costs nothing).",
            )
        return found

    def base(self, model: str) -> Price | None:
        """The price of the model ``model`` fine-tunes (itself, or a fine-tuned model's base: ft:<base>:...), or
        None when it is not listed."""
        name = model.split(":")[1] if model.startswith("ft:") and model.count(":") >= 2 else model
        return self.models.get(name) or self.models.get(DATE_SUFFIX.sub("", name))

    def check(self, model: str, max_output_tokens: int, where: str) -> None:
        """A known model, asked for no more output than it can give."""
        most = self.price(model).max_output
        if most is not None and max_output_tokens > most:
            raise ConfigError(
                f"max_output_tokens {max_output_tokens} is more than `{model}` can give ({most}, prices of "
                f"{self.taken})", where=where,
                hint=f"Lower max_output_tokens to {most} or less (or declare the model's limits under `llm: prices:`).",
            )

    def cost(self, model: str, *, prompt: int, completion: int, cached: int = 0, batch: bool) -> float:
        """What one request costs given its usage (more than the model's long-context threshold of prompt
        tokens: the whole request at long-context prices)."""
        p = self.price(model)
        return _usd(_rates(p, prompt, 1), prompt, completion, cached, p.factor(batch))

    def estimate(self, model: str, *, requests: int, prompt: int, completion: int, batch: bool) -> float:
        """What ``requests`` requests with ``prompt`` input and ``completion`` output tokens in all cost, when
        they are all over the long-context threshold or all under it (their average says which): shards and
        plans keep the two apart."""
        p = self.price(model)
        return _usd(_rates(p, prompt, requests), prompt, completion, 0, p.factor(batch))

    def cost_sql(self, model: str, *, batch: bool) -> tuple[str, list[float]]:
        """`cost` as a SQL expression over the columns prompt_tokens, completion_tokens and cached_tokens,
        with its parameters: the same arithmetic in the same order, so the same doubles."""
        p = self.price(model)
        r, long = p.rates, p.long_rates
        if long is None or p.long_above is None:
            rate, params = "?::DOUBLE PRECISION", [r.input, r.cached_input, r.output]
        else:
            rate = "(CASE WHEN prompt_tokens > ? THEN ?::DOUBLE PRECISION ELSE ?::DOUBLE PRECISION END)"
            params = [p.long_above, long.input, r.input, p.long_above, long.cached_input, r.cached_input,
                      p.long_above, long.output, r.output]
        sql = (f"(greatest(prompt_tokens - cached_tokens, 0) * {rate} + cached_tokens * {rate} "
               f"+ completion_tokens * {rate}) * ?::DOUBLE PRECISION * ?::DOUBLE PRECISION")
        return sql, [*params, PER_TOKEN, p.factor(batch)]

    def cache_savings(self, model: str, cached: int, batch: bool) -> float:
        p = self.price(model)
        return cached * (p.rates.input - p.rates.cached_input) * PER_TOKEN * p.factor(batch)


def _rates(price: Price, prompt: int, requests: int) -> Rates:
    """The rates of ``requests`` requests of ``prompt`` input tokens in all, all of one tier."""
    if price.long_rates is not None and price.long_above is not None and prompt > price.long_above * requests:
        return price.long_rates
    return price.rates


def _usd(rates: Rates, prompt: int, completion: int, cached: int, factor: float) -> float:
    uncached = max(prompt - cached, 0)
    usd = (uncached * rates.input + cached * rates.cached_input + completion * rates.output) * PER_TOKEN
    return usd * factor


@cache
def _shipped() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, when PyYAML has it: ten times quicker
    data: dict[str, Any] = yaml.load((files("llmt") / "data" / "prices.yml").read_text(encoding="utf-8"), loader)
    return data


def price_table(overrides: Mapping[str, ModelPrice] | None = None) -> PriceTable:
    """The shipped prices with a project's (``llm: prices:``) over them, key by key."""
    data = _shipped()
    default = float(data["batch_discount"])
    merged = {name: ModelPrice.model_validate(value).model_dump(exclude_none=True)
              for name, value in data["models"].items()}
    for name, value in (overrides or {}).items():
        merged[name] = {**merged.get(name, {}), **value.model_dump(exclude_unset=True)}
    return PriceTable({name: _price(name, value, default) for name, value in merged.items()}, default,
                      str(data["taken"]))


def _price(name: str, value: dict[str, Any], default_discount: float) -> Price:
    missing = [k for k in ("input", "cached_input", "output") if value.get(k) is None]
    if missing:
        raise ConfigError(
            f"the price of `{name}` needs {', '.join(missing)} (USD per 1M tokens, live), got {value}",
            where="project.yml (llm: prices:)",
            hint=f"Declare `{name}: {{input: <USD>, cached_input: <USD>, output: <USD>}}`.",
        )
    long = value.get("long_context")
    return Price(
        Rates(float(value["input"]), float(value["cached_input"]), float(value["output"])),
        float(value.get("batch_discount", default_discount)), value.get("context_window"), value.get("max_input"),
        value.get("max_output"), long["above"] if long else None,
        Rates(float(long["input"]), float(long["cached_input"]), float(long["output"])) if long else None,
        value.get("training"), value.get("training_example_tokens"),
    )


@dataclass(frozen=True)
class Budget:
    """A limit in USD and where it comes from (for the message)."""

    usd: float
    source: str  # e.g. "--max-cost", "budget_usd of model `x`"


def check_budget(node: str, estimate: float, committed: float, budgets: list[Budget], note: str = "") -> None:
    """Refuse to submit when the upper bound of new work plus open work exceeds any budget (``note``: what the
    estimate includes besides the work itself)."""
    for budget in budgets:
        if committed + estimate > budget.usd + 1e-12:
            raise BudgetExceeded(
                f"`{node}` would submit work worth up to ${estimate:.4f} (upper bound: every request using "
                f"max_output_tokens){note} on top of ${committed:.4f} already committed, over the ${budget.usd:.4f} "
                f"budget ({budget.source}). Nothing was submitted.",
                where=node,
                hint="Raise the budget (--max-cost, or budget_usd in the model's config or under `llm:`), lower "
                "max_output_tokens, or narrow the work: --select, or --sample N to try N requests first. "
                "`llmt plan` shows the estimate.",
            )


class BudgetExceeded(NodeError):
    """Over budget: nothing was submitted."""
