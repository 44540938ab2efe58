"""Eval metrics per answer field, by the field's kind in the output schema:

| kind | metrics |
|---|---|
| enum (a string with `enum`) | accuracy, macro_f1 |
| string, boolean | accuracy (strings compare trimmed and case-insensitively) |
| integer, number | mae (mean absolute error), accuracy (exact) |
| array | jaccard (mean per-row |A∩B| / |A∪B| of the items; two empty lists score 1) |

Thresholds (in properties, `evals: {field: {min_accuracy: 0.8}}`): min_accuracy, min_macro_f1,
max_mae, min_jaccard.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from llmt.testing.derived import unwrap_field

Pair = tuple[Any, Any]  # (expected, answered)

METRICS: dict[str, tuple[str, ...]] = {
    "enum": ("accuracy", "macro_f1"), "string": ("accuracy",), "boolean": ("accuracy",),
    "number": ("mae", "accuracy"), "list": ("jaccard",),
}
THRESHOLDS: dict[str, tuple[str, str]] = {  # key -> (metric, direction)
    "min_accuracy": ("accuracy", "min"), "min_macro_f1": ("macro_f1", "min"),
    "max_mae": ("mae", "max"), "min_jaccard": ("jaccard", "min"),
}


def field_kind(prop: dict[str, Any]) -> str | None:
    """enum | string | boolean | number | list, or None when the field cannot be scored."""
    _, schema = unwrap_field(prop)
    if any(v is not None for v in schema.get("enum", [])):
        return "enum"
    types = schema.get("type")
    kinds = [t for t in (types if isinstance(types, list) else [types]) if t not in ("null", None)]
    if len(kinds) != 1:
        return None
    return {"string": "string", "boolean": "boolean", "integer": "number", "number": "number",
            "array": "list"}.get(kinds[0])


def parse_label(kind: str, value: Any) -> Any:
    """A labelled value as written in CSV (text) or JSONL (typed); the text `null` stands for null."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.lower() == "null":
        return None
    if kind == "number":
        return float(text)
    if kind == "boolean":
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{value!r} is not true or false")
        return text.lower() in ("true", "1", "yes")
    if kind == "list":
        if text.startswith("["):
            items = json.loads(text)
            if not isinstance(items, list):
                raise ValueError(f"{value!r} is not a list")
            return items
        return [item.strip() for item in text.split(";") if item.strip()]
    return text


def _text(value: Any) -> str:
    return "null" if value is None else str(value).strip().casefold()


def _same(kind: str, expected: Any, answered: Any) -> bool:
    if kind == "number" and expected is not None and answered is not None:
        return abs(float(expected) - float(answered)) < 1e-9
    if kind == "boolean":
        return expected is answered or expected == answered
    return _text(expected) == _text(answered)


def accuracy(kind: str, pairs: list[Pair]) -> float:
    return sum(_same(kind, e, a) for e, a in pairs) / len(pairs)


def macro_f1(pairs: list[Pair]) -> float:
    labels = {_text(e) for e, _ in pairs} | {_text(a) for _, a in pairs}
    scores = []
    for label in sorted(labels):
        tp = sum(_text(e) == label and _text(a) == label for e, a in pairs)
        fp = sum(_text(a) == label and _text(e) != label for e, a in pairs)
        fn = sum(_text(e) == label and _text(a) != label for e, a in pairs)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(scores) / len(scores)


def mae(pairs: list[Pair]) -> float | None:
    errors = [abs(float(e) - float(a)) for e, a in pairs if e is not None and a is not None]
    return sum(errors) / len(errors) if errors else None


def jaccard(pairs: list[Pair]) -> float:
    scores = []
    for e, a in pairs:
        want, got = {_text(x) for x in e or []}, {_text(x) for x in a or []}
        scores.append(len(want & got) / len(want | got) if want | got else 1.0)
    return sum(scores) / len(scores)


def scores(kind: str, pairs: list[Pair]) -> dict[str, float | None]:
    """Every metric of ``kind`` over (expected, answered) pairs (answered rows with a label)."""
    if not pairs:
        return dict.fromkeys(METRICS[kind])
    compute: dict[str, Callable[[], float | None]] = {
        "accuracy": lambda: accuracy(kind, pairs), "macro_f1": lambda: macro_f1(pairs),
        "mae": lambda: mae(pairs), "jaccard": lambda: jaccard(pairs),
    }
    return {metric: compute[metric]() for metric in METRICS[kind]}


def mismatch(kind: str, expected: Any, answered: Any) -> bool:
    if kind == "list":
        return {_text(x) for x in expected or []} != {_text(x) for x in answered or []}
    return not _same(kind, expected, answered)
