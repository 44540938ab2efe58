"""Output schemas: JSON Schema -> OpenAI strict schema, and the types of the output columns.

`load_schema` reads a file, `to_strict` normalizes it to OpenAI Structured Outputs strict mode
(or raises SchemaError naming the JSON path), and `json_structure` gives the typed output columns.
Answers are checked against a strict schema by `llmt.validate.AnswerValidator`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import yaml

from llmt.errors import SchemaError, did_you_mean
from llmt.textfile import read_text, yaml_error

# OpenAI's documented limits ("Supported schemas" in the Structured Outputs guide).
MAX_DEPTH = 10  # nested object levels; the root object is level 1
MAX_PROPERTIES = 5000  # object properties in the whole schema
MAX_ENUM_VALUES = 1000  # enum values in the whole schema
MAX_NAME_CHARS = 120_000  # property names + definition names + enum and const values
LARGE_ENUM, MAX_LARGE_ENUM_CHARS = 250, 15_000  # a string enum of > 250 values: <= 15,000 chars

META_PREFIX = "_llmt_"  # llmt's metadata columns of an output table: no answer field may start with it
TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")
STRING_FORMATS = ("date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid")

_NUMBER_KW = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_TYPED_KW: dict[str, frozenset[str]] = {
    **dict.fromkeys(("properties", "required", "additionalProperties"), frozenset({"object"})),
    **dict.fromkeys(("items", "minItems", "maxItems"), frozenset({"array"})),
    **dict.fromkeys(("pattern", "format", "minLength", "maxLength"), frozenset({"string"})),
    **dict.fromkeys(_NUMBER_KW, frozenset({"number", "integer"})),
}
_ANNOTATIONS = frozenset({"description", "title"})
_DEFS = ("$defs", "definitions")
_SUPPORTED = frozenset(_TYPED_KW) | _ANNOTATIONS | {"type", "enum", "const", "anyOf", "$ref", *_DEFS}
_DROPPED = frozenset({"$schema", "$id", "$comment"})  # metadata, left out of the strict schema
_MAP = 'Strict mode needs fixed keys: list them, or use an array of {"key": ..., "value": ...} objects.'
_IF = "Make the dependent properties optional (nullable) and explain the rule in `description`."
_ARRAY = "Remove it; describe the rule in `description` (arrays support items, minItems, maxItems)."
_UNSUPPORTED: dict[str, str] = {
    "default": "Strict mode has no defaults: remove `default` and say what to answer when unknown "
    "in `description`, or leave the property out of `required` so the model can answer null.",
    "allOf": "Merge the subschemas into one schema.",
    "oneOf": "Use `anyOf` instead (supported below the root).",
    "not": "Express the rule with `enum` or in `description`.",
    **dict.fromkeys(("if", "then", "else", "dependentRequired", "dependentSchemas", "dependencies"), _IF),
    **dict.fromkeys(("patternProperties", "propertyNames", "unevaluatedProperties"), _MAP),
    **dict.fromkeys(("minProperties", "maxProperties"), "Remove it: every property is always present."),
    **dict.fromkeys(("contains", "minContains", "maxContains", "uniqueItems"), _ARRAY),
    **dict.fromkeys(("unevaluatedItems", "additionalItems", "prefixItems"), _ARRAY),
    "examples": "Move the examples into `description`.",
    "nullable": 'Use "type": ["<type>", "null"] instead of the OpenAPI keyword `nullable`.',
}


def load_schema(path: Path) -> dict[str, Any]:
    """Read a schema file (.json, .yml or .yaml); raise SchemaError when it is malformed."""
    where, suffix = str(path), path.suffix.lower()
    if suffix not in (".json", ".yml", ".yaml"):
        raise SchemaError(f"unknown schema file type `{suffix}`", where=where, hint="Use .json or .yml.")
    try:
        text = read_text(path)
    except OSError as exc:
        raise SchemaError(f"cannot read schema file: {exc}", where=where, hint="Check the path.") from exc
    try:
        data = json.loads(text) if suffix == ".json" else yaml.load(text, Loader=_YamlLoader)
    except json.JSONDecodeError as exc:
        hint = "Fix the JSON syntax (no comments or trailing commas; use .yml for comments)."
        raise SchemaError(f"invalid JSON: {exc.msg}", where=f"{path}:{exc.lineno}", hint=hint) from exc
    except yaml.YAMLError as exc:
        found = yaml_error(exc, path, "invalid YAML")
        raise SchemaError(found.message, where=found.where, hint=found.hint) from exc
    if not isinstance(data, dict):
        hint = 'Start with {"type": "object", "properties": {...}}.'
        raise SchemaError(f"expected one JSON Schema object, found {_kind(data)}", where=where, hint=hint)
    return data


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and keeps dates as strings (as JSON would)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key_node, deep=True) for key_node, _ in node.value]
        for i, (key_node, _) in enumerate(node.value):
            if keys[i] in keys[:i]:
                problem = f"duplicate key `{keys[i]}`"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


# --- normalization to strict mode --------------------------------------------------------------


def to_strict(schema: dict[str, Any], *, where: str) -> dict[str, Any]:
    """Return a new schema in OpenAI strict mode, or raise SchemaError naming the JSON path."""
    if not isinstance(schema, dict) or schema.get("type") != "object" or {"anyOf", "$ref"} & schema.keys():
        what = 'the root must be an object schema ("type": "object", not anyOf or $ref)'
        _fail(where, "$", what, 'Wrap the answer: {"type": "object", "properties": {"answer": <schema>}}.')
    strict = _Normalizer(schema, where).node(schema, "$")
    _check_limits(strict, where)
    return strict


def _fail(where: str, path: str, what: str, hint: str) -> NoReturn:
    raise SchemaError(f"{path}: {what}", where=where, hint=hint)


class _Normalizer:
    def __init__(self, root: dict[str, Any], where: str) -> None:
        self.root, self.where = root, where

    def fail(self, path: str, what: str, hint: str) -> NoReturn:
        _fail(self.where, path, what, hint)

    def node(self, node: Any, path: str) -> dict[str, Any]:
        if not isinstance(node, dict):
            self.fail(path, f"expected a schema, found {_kind(node)}", 'Write e.g. {"type": "string"}.')
        types = self.types(node, path)
        for key in node:
            self.check_keyword(node, key, path, types)
        if not types and not {"anyOf", "$ref", "enum", "const"} & node.keys():
            self.fail(
                path, "the schema has no `type`", f"Add a type ({', '.join(TYPES)}), or enum/anyOf/$ref."
            )
        if "object" in types and not node.get("properties"):
            hint = "List the answer's properties; strict mode has no free-form objects."
            self.fail(path, "object has no `properties`", hint)
        if "array" in types and "items" not in node:
            self.fail(path, "array has no `items`", 'Add e.g. "items": {"type": "string"}.')
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "properties":
                out.update(self.object_keywords(node, path))
            elif key in _DEFS:
                if not isinstance(value, dict):
                    self.fail(f"{path}.{key}", "must map names to schemas", 'Use {"Name": {...}}.')
                out[key] = {name: self.node(sub, f"$.{key}{_segment(name)}") for name, sub in value.items()}
            elif key == "items":
                if not isinstance(value, dict):
                    self.fail(f"{path}.items", "must be one schema (no tuple form)", "Use one schema.")
                out[key] = self.node(value, f"{path}.items")
            elif key == "anyOf":
                if not isinstance(value, list) or not value:
                    self.fail(f"{path}.anyOf", "must be a non-empty list of schemas", "List the branches.")
                out[key] = [self.node(sub, f"{path}.anyOf[{i}]") for i, sub in enumerate(value)]
            elif key not in _DROPPED and key not in ("required", "additionalProperties"):
                out[key] = self.keyword(key, value, f"{path}.{key}", types)
        return out

    def check_keyword(self, node: dict[str, Any], key: Any, path: str, types: frozenset[str]) -> None:
        if not isinstance(key, str):
            self.fail(path, f"key {key!r} is not a string", "Quote it (YAML reads yes/no as booleans).")
        if key in _UNSUPPORTED:
            self.fail(path, f"`{key}` is not supported by OpenAI strict mode", _UNSUPPORTED[key])
        if key not in _SUPPORTED and key not in _DROPPED:
            hint = "Supported: " + ", ".join(sorted(_SUPPORTED)) + "." + did_you_mean(key, _SUPPORTED)
            self.fail(path, f"unknown keyword `{key}`", hint)
        if key in _DEFS and path != "$":
            self.fail(path, f"`{key}` is only supported at the root", "Move the definitions to the root.")
        needs = _TYPED_KW.get(key)
        if needs is not None and not needs & types:
            self.fail(path, f"`{key}` needs type {'/'.join(sorted(needs))}", f'Add "type": "{min(needs)}".')
        for composite in ("anyOf", "$ref"):
            if composite in node and key not in _ANNOTATIONS | _DROPPED | {composite}:
                hint = "Only `description` and `title` may sit beside it; move the rest inside."
                self.fail(path, f"`{composite}` cannot be combined with `{key}`", hint)

    def types(self, node: dict[str, Any], path: str) -> frozenset[str]:
        names = type_list(node)
        for name in names:
            if name not in TYPES:
                hint = f"Use one of {', '.join(TYPES)}." + did_you_mean(str(name), TYPES)
                self.fail(f"{path}.type", f"unknown type {json.dumps(name)}", hint)
        if "type" in node and (not names or len(set(names)) != len(names)):
            self.fail(f"{path}.type", "must be non-empty, without repeats", 'e.g. ["string", "null"].')
        if len([n for n in names if n != "null"]) > 1:
            hint = 'Only ["<type>", "null"] is allowed; use anyOf for a choice between types.'
            self.fail(f"{path}.type", f"several types {json.dumps(node['type'])}", hint)
        return frozenset(names)

    def object_keywords(self, node: dict[str, Any], path: str) -> dict[str, Any]:
        props, required = node["properties"], node.get("required", [])
        if not isinstance(props, dict) or not all(isinstance(name, str) for name in props):
            self.fail(f"{path}.properties", "must map property names to schemas", 'Use {"name": {...}}.')
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            self.fail(f"{path}.required", "must be a list of property names", 'e.g. ["name"].')
        for name in required:
            if name not in props:
                hint = "List only names from `properties`." + did_you_mean(name, props)
                self.fail(f"{path}.required", f"`{name}` is required but is not a property", hint)
        if node.get("additionalProperties", False) is not False:
            what = f"must be false, found {json.dumps(node['additionalProperties'])}"
            self.fail(f"{path}.additionalProperties", what, "Remove it (llmt sets it to false). " + _MAP)
        new = {}
        for name, sub in props.items():
            if path == "$" and name.lower().startswith(META_PREFIX):  # DuckDB's column names ignore case
                what = f"the property `{name}` uses the prefix `{META_PREFIX}` of llmt's metadata columns"
                self.fail(f"$.properties{_segment(name)}", what, "Rename it (each property becomes a column).")
            child = self.node(sub, f"{path}.properties{_segment(name)}")
            new[name] = child if name in required else self.nullable(child)
        return {"properties": new, "required": list(new), "additionalProperties": False}

    def keyword(self, key: str, value: Any, at: str, types: frozenset[str]) -> Any:
        if key in ("description", "title", "pattern") and not isinstance(value, str):
            self.fail(at, f"`{key}` must be a string", "Quote the value.")
        elif key == "format" and value not in STRING_FORMATS:
            hint = f"Use one of {', '.join(STRING_FORMATS)}." + did_you_mean(str(value), STRING_FORMATS)
            self.fail(at, f"format {json.dumps(value)} is not supported by OpenAI strict mode", hint)
        elif key in ("minItems", "maxItems", "minLength", "maxLength") and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            self.fail(at, f"`{key}` must be a non-negative integer", f'e.g. "{key}": 1.')
        elif key in _NUMBER_KW and (not _is_number(value) or (key == "multipleOf" and value <= 0)):
            self.fail(at, f"`{key}` must be a number (not the draft-4 boolean)", f'e.g. "{key}": 1.')
        elif key == "enum":
            if not isinstance(value, list) or not value:
                self.fail(at, "`enum` must be a non-empty list", 'e.g. "enum": ["positive", "negative"].')
            for i, item in enumerate(value):
                self.check_value(item, f"{at}[{i}]", types)
            if "null" in types and None not in value:  # as in OpenAI's examples: the type allows null
                return [*value, None]
        elif key == "const":
            self.check_value(value, at, types)
        elif key == "$ref" and (not isinstance(value, str) or resolve_ref(self.root, value) is None):
            hint = 'Use a local reference: "#", "#/$defs/<name>" or "#/definitions/<name>".'
            self.fail(at, f"cannot resolve $ref {json.dumps(value)}", hint)
        return list(value) if isinstance(value, list) else value

    def check_value(self, value: Any, path: str, types: frozenset[str]) -> None:
        kind = value_type(value)
        if kind is None:
            self.fail(path, f"{value!r} is not a JSON value", "Quote dates and other text in YAML.")
        numeric = kind in ("integer", "number") and types & {"integer", "number"}
        if types and kind not in types and not numeric:
            what = f"{json.dumps(value)} is not of type {' or '.join(sorted(types))}"
            self.fail(path, what, 'Make the values match the `type` (for null, add "null" to it).')

    def nullable(self, node: dict[str, Any]) -> dict[str, Any]:
        """The schema of an optional property: the same schema, also accepting null."""
        if "type" in node and "const" not in node:
            out = dict(node)
            if "null" not in type_list(node):
                out["type"] = [*type_list(node), "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
            return out
        return node if _accepts_null(node, self.root, frozenset()) else {"anyOf": [node, {"type": "null"}]}


def _accepts_null(node: Any, root: dict[str, Any], seen: frozenset[str]) -> bool:
    if not isinstance(node, dict):
        return False
    if "const" in node or "enum" in node:
        return None in node.get("enum", [node.get("const", 0)])
    if "$ref" in node:
        ref = node["$ref"]
        return ref not in seen and _accepts_null(resolve_ref(root, ref), root, seen | {ref})
    return "null" in type_list(node) or any(_accepts_null(b, root, seen) for b in node.get("anyOf", []))


def _children(node: dict[str, Any], path: str, defs: bool = True) -> Iterator[tuple[dict[str, Any], str]]:
    for key in _DEFS if defs else ():
        yield from ((sub, f"{path}.{key}{_segment(name)}") for name, sub in node.get(key, {}).items())
    for name, sub in node.get("properties", {}).items():
        yield sub, f"{path}.properties{_segment(name)}"
    yield from [(node["items"], f"{path}.items")] if "items" in node else []
    yield from ((sub, f"{path}.anyOf[{i}]") for i, sub in enumerate(node.get("anyOf", [])))


def _check_limits(strict: dict[str, Any], where: str) -> None:
    props = enums = chars = 0
    todo = [(strict, "$")]
    while todo:
        node, path = todo.pop()
        todo.extend(_children(node, path))
        names = [*node.get("properties", {}), *(name for key in _DEFS for name in node.get(key, {}))]
        values = [*node.get("enum", []), *([node["const"]] if "const" in node else [])]
        strings = [v for v in node.get("enum", []) if isinstance(v, str)]
        props, enums = props + len(node.get("properties", {})), enums + len(node.get("enum", []))
        chars += sum(len(v if isinstance(v, str) else json.dumps(v)) for v in [*names, *values])
        if len(strings) > LARGE_ENUM and sum(map(len, strings)) > MAX_LARGE_ENUM_CHARS:
            what = f"an enum of over {LARGE_ENUM} values may hold at most {MAX_LARGE_ENUM_CHARS} characters"
            _fail(where, f"{path}.enum", what, "Use fewer or shorter values, or map free text in SQL.")
    for count, limit, what in (
        (props, MAX_PROPERTIES, "object properties"),
        (enums, MAX_ENUM_VALUES, "enum values"),
        (chars, MAX_NAME_CHARS, "characters of property names, definition names and enum/const values"),
    ):
        if count > limit:
            hint = "Simplify the schema, or split the answer over several LLM models."
            _fail(where, "$", f"the schema has {count} {what}; OpenAI allows at most {limit}", hint)
    visited: set[tuple[str, int]] = set()

    def depth(node: dict[str, Any], path: str, level: int, stack: frozenset[str]) -> None:
        ref = node.get("$ref")
        if ref is not None and ref not in stack and (ref, level) not in visited:
            visited.add((ref, level))
            depth(resolve_ref(strict, ref) or {}, _ref_path(ref), level, stack | {ref})
        level += "object" in type_list(node)
        if level > MAX_DEPTH:
            what = f"objects are nested {level} levels deep; OpenAI allows at most {MAX_DEPTH}"
            _fail(where, path, what, "Flatten the schema, e.g. move inner fields up with prefixed names.")
        for sub, sub_path in _children(node, path, defs=False):
            depth(sub, sub_path, level, stack)

    depth(strict, "$", 0, frozenset({"#"}))


# --- column types --------------------------------------------------------------------------------


def json_structure(strict: dict[str, Any]) -> dict[str, Any]:
    """Each top-level property's type in llmt's vocabulary of answer types: VARCHAR, BIGINT, DOUBLE, BOOLEAN,
    DATE, TIMESTAMPTZ or JSON, a list of one type (`[...]`), or an object of typed fields (`{...}`). Each
    engine's warehouse turns it into its column types (`Warehouse.sql_type`) and a JSON answer into them."""
    return {name: _structure(sub, strict, frozenset({"#"})) for name, sub in strict["properties"].items()}


def _structure(node: dict[str, Any], root: dict[str, Any], seen: frozenset[str]) -> Any:
    if "$ref" in node:
        ref, target = node["$ref"], resolve_ref(root, node["$ref"])
        return "JSON" if ref in seen or target is None else _structure(target, root, seen | {ref})
    if "anyOf" in node:
        options = [_structure(b, root, seen) for b in node["anyOf"] if type_list(b) != ["null"]]
        return options[0] if options and all(o == options[0] for o in options) else "JSON"
    kinds = [t for t in type_list(node) if t != "null"]
    if not kinds:  # enum / const without a type
        found = {value_type(v) for v in node.get("enum", [node.get("const")]) if v is not None}
        kinds = ["number"] if found == {"integer", "number"} else [k for k in found if k]
    if len(kinds) != 1:
        return "JSON"
    if kinds[0] == "string":
        return {"date": "DATE", "date-time": "TIMESTAMPTZ"}.get(node.get("format", ""), "VARCHAR")
    if kinds[0] == "array" and "items" in node:
        return [_structure(node["items"], root, seen)]
    if kinds[0] == "object" and node.get("properties"):
        return {name: _structure(sub, root, seen) for name, sub in node["properties"].items()}
    return {"integer": "BIGINT", "number": "DOUBLE", "boolean": "BOOLEAN"}.get(kinds[0], "JSON")


# --- helpers -------------------------------------------------------------------------------------


def schema_fingerprint(strict: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a strict schema (a part of every request key)."""
    canonical = json.dumps(strict, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def resolve_ref(root: dict[str, Any], ref: str) -> dict[str, Any] | None:
    """The schema a local $ref ("#", "#/$defs/<name>", "#/definitions/<name>") points to, or None."""
    if ref == "#":
        return root
    key, _, name = ref.removeprefix("#/").partition("/")
    defs = root.get(key) if ref.startswith("#/") and key in _DEFS else None
    target = defs.get(name.replace("~1", "/").replace("~0", "~")) if isinstance(defs, dict) else None
    return target if isinstance(target, dict) else None


def _ref_path(ref: str) -> str:
    key, _, name = ref.removeprefix("#/").partition("/")
    return "$" if ref == "#" else f"$.{key}{_segment(name.replace('~1', '/').replace('~0', '~'))}"


def _segment(name: str) -> str:
    return f".{name}" if re.fullmatch(r"[A-Za-z_$][\w$-]*", name, re.ASCII) else f"[{json.dumps(name)}]"


def type_list(node: Any) -> list[Any]:
    kinds = node.get("type", []) if isinstance(node, dict) else []
    return list(kinds) if isinstance(kinds, list) else [kinds]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def value_type(value: Any) -> str | None:
    """The JSON Schema type of a plain JSON value; None for anything else (e.g. a YAML date, NaN)."""
    if value is None or isinstance(value, bool | str):
        return "null" if value is None else "boolean" if isinstance(value, bool) else "string"
    if isinstance(value, int):
        return "integer"
    return "number" if isinstance(value, float) and math.isfinite(value) else None


def _kind(value: Any) -> str:
    return "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) else repr(value)
