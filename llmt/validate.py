"""Answer validation: a pydantic model built once from a strict schema (objects become models with
extra='forbid', enums Literals, formats checked in Python), and the outcome and reason of an answer."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import uuid
from collections.abc import Callable
from typing import Annotated, Any, ForwardRef, Literal, Union

import pydantic
import pydantic_core

from llmt.errors import SchemaError
from llmt.schema import resolve_ref, type_list, value_type


class AnswerValidator:
    """Checks answer JSON against a strict schema with a pydantic model built once."""

    def __init__(self, strict: dict[str, Any], name: str) -> None:
        try:
            self.model = _ModelBuilder(strict, name, "rust-regex").build()
        except Exception:  # e.g. a pattern with look-around, which the Rust engine cannot compile
            try:
                self.model = _ModelBuilder(strict, name, "python-re").build()
            except Exception as exc:
                what = f"cannot build a validator for the schema: {str(exc).splitlines()[0]}"
                raise SchemaError(
                    what, where=name, hint="Check that each `pattern` is a valid regex."
                ) from exc
        # the model's own validator: model_validate_json's keyword handling took ~20% of the time of
        # validating a short answer (collect validates every distinct answer)
        self.validate_json = self.model.__pydantic_validator__.validate_json
        self.accepts = _instance_free(self.model)

    def check(self, content: str) -> tuple[str, str]:
        """("ok", "") | ("invalid_json", reason) | ("schema_violation", "<field path>: <reason>")."""
        if self.accepts is not None:
            try:
                self.accepts(content)
                return "ok", ""
            except pydantic.ValidationError:
                pass  # the model's validator says why
        try:
            self.validate_json(content)
        except pydantic.ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            if errors[0]["type"] == "json_invalid":
                return "invalid_json", _shorten(errors[0]["msg"].removeprefix("Invalid JSON: "))
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            return "schema_violation", _shorten(f"{_loc(errors[0]['loc'])}: {errors[0]['msg']}") + more
        return "ok", ""


def _instance_free(model: type[pydantic.BaseModel]) -> Callable[[str], object] | None:
    """A validator of the model's JSON that makes the same checks without building model instances: its
    core schema with each model replaced by a typed dict of the model's fields (by their JSON names), under
    the model's config. 1.50 -> 1.13 µs a typical answer (the benchmark's 650k distinct answers: -0.25
    CPU-s). None when the schema holds something this does not expect (the model then validates alone)."""
    try:
        return pydantic_core.SchemaValidator(_typed_dicts(model.__pydantic_core_schema__)).validate_json
    except (KeyError, TypeError, ValueError, pydantic_core.SchemaError):
        return None


def _typed_dicts(node: Any) -> Any:
    """A pydantic-core schema with each model schema replaced by a typed-dict schema with its config (strict,
    extra fields forbidden) and fields."""
    if isinstance(node, list):
        return [_typed_dicts(each) for each in node]
    if not isinstance(node, dict):
        return node
    if node.get("type") != "model":
        return {key: _typed_dicts(value) for key, value in node.items()}
    fields = node["schema"]
    if fields["type"] != "model-fields" or not all(isinstance(f["validation_alias"], str)
                                                   for f in fields["fields"].values()):
        raise ValueError("not a plain model")
    typed = {"type": "typed-dict", "config": node["config"], "fields": {
        f["validation_alias"]: {"type": "typed-dict-field", "required": True, "schema": _typed_dicts(f["schema"])}
        for f in fields["fields"].values()}}
    return {**typed, "ref": node["ref"]} if "ref" in node else typed


def _loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text or "$"


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


_FORMATS: dict[str, Callable[[str], object]] = {  # truthy when valid; falsy or ValueError when not
    "date-time": lambda v: v[10:11] in ("T", "t", " ") and dt.datetime.fromisoformat(v),
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "duration": re.compile(r"P(?!$)(\d+[YMWD])*(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?").fullmatch,
    "email": re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+").fullmatch,
    "hostname": re.compile(
        r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9-]+)*"
    ).fullmatch,
    "ipv4": ipaddress.IPv4Address,
    "ipv6": ipaddress.IPv6Address,
    "uuid": uuid.UUID,
}


def _format_validator(name: str) -> pydantic.AfterValidator:
    def check(value: str) -> str:
        try:
            valid = bool(_FORMATS[name](value))
        except ValueError:
            valid = False
        if not valid:
            raise ValueError(f"not a valid {name}")
        return value

    return pydantic.AfterValidator(check)


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("Input should be a number, not a boolean")
    return value


class _ModelBuilder:
    """Pydantic types for a strict schema: objects become models (extra='forbid'), enums Literals."""

    def __init__(self, strict: dict[str, Any], name: str, engine: Literal["rust-regex", "python-re"]) -> None:
        self.root, self.name = strict, "Answer_" + re.sub(r"[^0-9A-Za-z]", "_", name)
        self.config = pydantic.ConfigDict(extra="forbid", strict=True, regex_engine=engine)
        self.done: dict[str, Any] = {}  # $ref -> its type
        self.pending: dict[str, Any] = {}  # $ref -> forward reference while its model is built
        self.namespace: dict[str, Any] = {}  # model identifier -> model, to resolve forward references
        self.count = 0

    def build(self) -> type[pydantic.BaseModel]:
        self.pending["#"] = ForwardRef(self.ident(""))
        model = self.model(self.root, self.ident(""))
        for each in self.namespace.values():
            if not each.__pydantic_complete__:
                each.model_rebuild(_types_namespace=self.namespace)
        return model

    def ident(self, label: str) -> str:
        self.count += 1
        return self.name + (f"_{re.sub(r'[^0-9A-Za-z]', '_', label)}_{self.count}" if label else "")

    def model(self, node: dict[str, Any], ident: str) -> type[pydantic.BaseModel]:
        fields: dict[str, Any] = {
            f"f{i}": (self.annotation(sub, prop), pydantic.Field(alias=prop))
            for i, (prop, sub) in enumerate(node["properties"].items())
        }
        model: type[pydantic.BaseModel] = pydantic.create_model(ident, __config__=self.config, **fields)
        self.namespace[ident] = model
        return model

    def annotation(self, node: dict[str, Any], label: str) -> Any:
        if "$ref" in node:
            return self.ref(node["$ref"])
        if "anyOf" in node:
            return _union(*(self.annotation(branch, label) for branch in node["anyOf"]))
        if "const" in node or "enum" in node:
            return self.literal(node.get("enum", [node.get("const")]))
        kinds = type_list(node)
        kind = next((k for k in kinds if k != "null"), None)
        base = None if kind is None else self.base(kind, node, label)
        return _union(base, None) if "null" in kinds and base is not None else base

    def ref(self, ref: str) -> Any:
        if ref in self.done or ref in self.pending:
            return self.done[ref] if ref in self.done else self.pending[ref]
        target = resolve_ref(self.root, ref) or {}
        null = [None] if "null" in type_list(target) else []
        if "object" in type_list(target):  # maybe recursive: refer to the model by name while it is built
            ident = self.ident(ref.rsplit("/", 1)[-1])
            self.pending[ref] = _union(ForwardRef(ident), *null)
            result = _union(self.model(target, ident), *null)
        else:
            self.pending[ref] = Any  # recursion through a non-object definition is not checked
            result = self.annotation(target, ref)
        del self.pending[ref]
        self.done[ref] = result
        return result

    def literal(self, values: list[Any]) -> Any:
        if any(isinstance(v, float) for v in values):  # Literal cannot hold floats
            message = "Input should be " + " or ".join(json.dumps(v) for v in values)

            def one_of(value: Any) -> Any:
                if isinstance(value, bool) or value not in values:
                    raise ValueError(message)
                return value

            return Annotated[Any, pydantic.AfterValidator(one_of)]
        literal: Any = Literal.__getitem__(tuple(values))
        if any(value_type(v) == "integer" for v in values) and not any(isinstance(v, bool) for v in values):
            return Annotated[literal, pydantic.BeforeValidator(_not_bool)]  # Literal[1] accepts true
        return literal

    def base(self, kind: str, node: dict[str, Any], label: str) -> Any:
        get = node.get
        if kind == "string":
            meta: list[Any] = []
            if {"pattern", "minLength", "maxLength"} & node.keys():
                length = {"min_length": get("minLength"), "max_length": get("maxLength")}
                meta.append(pydantic.StringConstraints(pattern=get("pattern"), **length))
            if "format" in node:
                meta.append(_format_validator(node["format"]))
            return Annotated[(str, *meta)] if meta else str
        if kind in ("integer", "number"):
            number: Any = int if kind == "integer" else float
            bounds: dict[str, Any] = {
                "ge": get("minimum"),
                "le": get("maximum"),
                "multiple_of": get("multipleOf"),
            }
            limits = pydantic.Field(gt=get("exclusiveMinimum"), lt=get("exclusiveMaximum"), **bounds)
            return Annotated[number, limits]
        if kind == "array":
            items = list.__class_getitem__(self.annotation(node["items"], f"{label}_item"))
            return Annotated[items, pydantic.Field(min_length=get("minItems"), max_length=get("maxItems"))]
        return bool if kind == "boolean" else self.model(node, self.ident(label))


def _union(*members: Any) -> Any:
    return members[0] if len(members) == 1 else Union.__getitem__(members)
