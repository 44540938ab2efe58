"""Fine-tuning data: chat-format training examples and OpenAI's rules for them.

An example is one line of JSON: ``{"messages": [{"role": "system", ...}, {"role": "user", ...},
{"role": "assistant", "content": <the validated JSON answer>}]}``. The rules a file must meet (OpenAI's
fine-tuning guide and its data-preparation cookbook): every line a JSON object whose `messages` is a list of
messages with a `role` among system, user and assistant and a text `content`, at least one of them the
assistant's; at least MIN_EXAMPLES examples in the training file (and one in a validation file); no example twice;
and each within the base model's token limit for a training example (`training_example_tokens` in the prices, or
else its context window: longer ones are truncated by the trainer). Tokens are counted exactly, as the chat
endpoint counts a request's messages (tokens.py: the cookbook's rule). Training is billed for the training file's
tokens (each example's up to the limit) times the epochs; when the epochs are left to OpenAI ("auto"), the
cookbook's rule gives them: 3, or more for a small file and fewer for a large one (`default_epochs`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmt.cost import PriceTable
from llmt.errors import UsageError
from llmt.tokens import RequestCounter

MIN_EXAMPLES = 10
ROLES = ("system", "user", "assistant")
# the cookbook's rule for the epochs OpenAI chooses ("auto"): about TARGET_EPOCHS passes, more (up to
# MAX_DEFAULT_EPOCHS) when that is fewer than MIN_TARGET_EXAMPLES examples seen, fewer (at least one) when more
# than MAX_TARGET_EXAMPLES
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES, MAX_DEFAULT_EPOCHS = 3, 100, 25_000, 25
VALIDATION_BUCKETS = 10_000  # an example's share of the validation split is decided in these steps


def example(system: str | None, user: str, answer: str) -> dict[str, Any]:
    """One training example: the request's messages, and the answer as the assistant's."""
    messages = [] if system is None else [{"role": "system", "content": system}]
    return {"messages": [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def line(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"


def problem(data: Any) -> str | None:
    """What breaks the format rules in one parsed line, or None."""
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not messages:
        return "no `messages` list"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"message {i + 1} has no role among {', '.join(ROLES)}"
        if not isinstance(message.get("content"), str) or not message["content"]:
            return f"message {i + 1} ({message['role']}) has no text content"
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant message"
    return None


def in_validation(key: str, share: float) -> bool:
    """Whether the example of request ``key`` goes to the validation file (a stable choice by its key)."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % VALIDATION_BUCKETS
    return bucket < round(share * VALIDATION_BUCKETS)


def default_epochs(examples: int) -> int:
    """The epochs OpenAI's "auto" gives a training file of ``examples`` examples (the cookbook's rule)."""
    if examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // max(examples, 1))
    if examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // examples)
    return TARGET_EPOCHS


@dataclass
class Limits:
    """What the base model allows and costs: the most tokens of an example, and USD per 1M training tokens."""

    model: str
    example_tokens: int | None
    training_usd: float | None
    limit_from: str  # where the example limit comes from, for messages

    @classmethod
    def of(cls, prices: PriceTable, model: str) -> Limits:
        base = prices.base(model)
        if base is None:
            return cls(model, None, None, "unknown")
        if base.training_example_tokens is not None:
            return cls(model, base.training_example_tokens, base.training, "its training example limit")
        return cls(model, base.context_window, base.training, "its context window")


@dataclass
class Tally:
    """Examples of one file: their count, tokens, and the tokens billed per epoch."""

    examples: int = 0
    tokens: int = 0
    billed: int = 0  # each example's tokens up to the limit (the trainer truncates the rest)
    largest: int = 0

    def add(self, tokens: int, limit: int | None) -> None:
        self.examples += 1
        self.tokens += tokens
        self.billed += tokens if limit is None else min(tokens, limit)
        self.largest = max(self.largest, tokens)


@dataclass
class Estimate:
    """The training files' tokens and what training on them costs."""

    base_model: str
    training: Tally
    validation: Tally
    epochs: int
    epochs_auto: bool
    training_tokens: int  # billed: the training file's tokens (each up to the limit) times the epochs
    usd: float | None  # None: no training price known for the base model
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"base_model": self.base_model, "training_examples": self.training.examples,
                "validation_examples": self.validation.examples, "training_file_tokens": self.training.tokens,
                "validation_file_tokens": self.validation.tokens, "largest_example_tokens":
                    max(self.training.largest, self.validation.largest), "epochs": self.epochs,
                "epochs_auto": self.epochs_auto, "training_tokens": self.training_tokens,
                "estimate_usd": None if self.usd is None else round(self.usd, 6), "notes": self.notes}


def estimate(limits: Limits, training: Tally, validation: Tally, epochs: int | None) -> Estimate:
    chosen = epochs if epochs is not None else default_epochs(training.examples)
    billed = training.billed * chosen
    notes = []
    if limits.training_usd is None:
        notes.append(f"no training price for `{limits.model}`: declare `training:` (USD per 1M training tokens) for "
                     "it under `llm: prices:` in project.yml for an estimate")
    if limits.example_tokens is None:
        notes.append(f"no token limit known for `{limits.model}`: examples were not checked against one")
    usd = None if limits.training_usd is None else billed * limits.training_usd * 1e-6
    return Estimate(limits.model, training, validation, chosen, epochs is None, billed, usd, notes)


def counter(model: str) -> RequestCounter:
    """Counts an example's tokens as the chat endpoint counts a request's messages."""
    return RequestCounter(model, None)


def check_file(path: Path, limits: Limits, *, minimum: int) -> Tally:
    """Check a training or validation file against the rules; raise UsageError naming the file and line of what
    breaks them (the first few)."""
    count = counter(limits.model).count
    tally, seen, found = Tally(), set(), []
    try:
        lines: Iterable[str] = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", hint="Give the file `llmt export finetune` wrote.") from None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        why = problem(data) if data is not None else "not a line of JSON"
        if why is None:
            canonical = json.dumps(data, sort_keys=True, ensure_ascii=False)
            tokens = count(data["messages"])
            if canonical in seen:
                why = "the same example as an earlier line (duplicates are not allowed)"
            elif limits.example_tokens is not None and tokens > limits.example_tokens:
                why = f"{tokens} tokens, over the {limits.example_tokens} of {limits.limit_from} ({limits.model})"
            seen.add(canonical)
            tally.add(tokens, limits.example_tokens)
        if why is not None:
            found.append(f"{path}:{number}: {why}")
    if found:
        raise UsageError(f"{len(found)} line(s) break the fine-tuning format rules:\n  " + "\n  ".join(found[:5]),
                         hint="Export the file again with `llmt export finetune` (it writes only valid examples).")
    if tally.examples < minimum:
        raise UsageError(f"{path} has {tally.examples} example(s); a fine-tuning job needs at least {minimum}",
                         hint="Export more rows (widen --where), or answer more rows first.")
    return tally


def unique(examples: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(key, example, whether an earlier one was the same) for each keyed example."""
    seen: set[str] = set()
    for key, data in examples:
        digest = hashlib.sha256(line(data).encode()).hexdigest()
        yield key, data, digest in seen
        seen.add(digest)
