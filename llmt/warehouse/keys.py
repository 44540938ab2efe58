"""The canonical request key, defined here in Python; every engine's SQL reproduces it exactly.

A request's key is ``sha256(template_hash || input_hash)[:32]`` (hex). ``template_hash`` covers everything
that shapes the request except the row (pipeline/spec.py); ``input_hash`` is the SHA-256 (hex) of the
*canonical text* of the row's referenced columns, taken as one struct of those columns in name order:

    {s9:review_id:i42,s11:review_text:s14:Battery died.}

The canonical text of a value says its kind in its first character, so that values that a prompt renders
differently never share a text (the number 1, the text "1" and the decimal 1.0 are three texts):

| value | canonical text | e.g. |
|---|---|---|
| NULL | `n` | `n` |
| text (also UUID, JSON, enums) | `s` + UTF-8 byte length + `:` + the text | `s6:héllo` (é is two bytes) |
| integer of any width | `i` + decimal digits | `i-42` |
| decimal | `d` + its plain text at its scale (no exponent; zero without sign) | `d1.50` |
| double, float | `f` + Python's ``repr`` of the double (a float widened to double first) | `f0.1`, `f1e+300` |
| boolean | `b1` or `b0` | |
| date | `D` + ISO date | `D1969-12-31` |
| timestamp | `T` + ISO date and time, 6 fraction digits | `T2024-01-02T03:04:05.000000` |
| timestamp with time zone | `Z` + the instant in UTC, as a timestamp | `Z2024-01-02T03:04:05.000000` |
| list, array | `[` + items joined by `,` + `]` | `[i1,n,i3]` |
| struct | `{` + `name:value` joined by `,`, names as text, in the struct's order + `}` | `{s1:a:i1}` |

Texts carry their length, so nothing inside them needs escaping and no engine's JSON escaping matters. The
same values give the same key on DuckDB, PostgreSQL and Spark; tests/test_keys_conformance.py feeds tricky
values (NULLs, empty texts, Unicode, newlines, -0.0, 1e300, dates before 1970, time zones, nested lists) to
this module and to each engine's SQL and compares the hashes. A value of another type (BLOB, INTERVAL, TIME,
MAP, ...) is keyed by the engine's own text of it (`x` + byte length + `:` + text): deterministic on one
engine, not shared between engines.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

KEY_CHARS = 32  # a request key is the first 32 hex digits of its SHA-256


def canonical_text(value: Any) -> str:
    """The canonical text of a value as a database driver hands it to Python."""
    if value is None:
        return "n"
    if isinstance(value, bool):
        return "b1" if value else "b0"
    if isinstance(value, int):
        return f"i{value}"
    if isinstance(value, Decimal):
        return "d" + format(value.copy_abs() if value == 0 else value, "f")
    if isinstance(value, float):
        return "f" + repr(value)
    if isinstance(value, str):
        return f"s{len(value.encode())}:{value}"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            utc = value.astimezone(dt.UTC).replace(tzinfo=None)
            return "Z" + utc.isoformat(timespec="microseconds")
        return "T" + value.isoformat(timespec="microseconds")
    if isinstance(value, dt.date):
        return "D" + value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_text(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{canonical_text(str(k))}:{canonical_text(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no canonical text for a value of type {type(value).__name__}")


def input_hash(row: Mapping[str, Any]) -> str:
    """The input hash of a row: its referenced columns (``row``), in name order, as one struct."""
    return hashlib.sha256(canonical_text(dict(sorted(row.items()))).encode()).hexdigest()


def request_key(template_hash: str, input_hash_hex: str) -> str:
    return hashlib.sha256((template_hash + input_hash_hex).encode()).hexdigest()[:KEY_CHARS]
