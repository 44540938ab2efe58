"""YAML loading with file:line in every error, and pydantic errors mapped back to lines."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from llmt.errors import ConfigError, did_you_mean
from llmt.textfile import read_text, yaml_error

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path, text: str | None = None) -> Any:
    """Parse a YAML file; a syntax error names the file and line."""
    if text is None:
        text = read_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise yaml_error(exc, path) from None


@functools.lru_cache(maxsize=32)
def _compose(text: str) -> yaml.Node | None:
    return yaml.compose(text)


def line_of(path: Path, loc: Sequence[str | int], text: str | None = None) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (keys and list indexes), if it can be found."""
    try:
        node = _compose(text if text is not None else read_text(path))
    except (OSError, yaml.YAMLError, ConfigError):
        return None
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == part]
            if not match:
                break
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def validate(model: type[M], data: Any, path: Path, prefix: Sequence[str | int] = ()) -> M:
    """Validate ``data`` with a pydantic model; the first error becomes a ConfigError at file:line."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [*prefix, *err["loc"]]
        line = line_of(path, loc)
        where = f"{path}:{line}" if line else str(path)
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            parent = _model_at(model, err["loc"][:-1])
            known = sorted(_keys(parent)) if parent else []
            raise ConfigError(
                f"unknown key `{dotted}`.{did_you_mean(key, known)}",
                where=where,
                hint=f"Known keys here: {', '.join(known)}." if known else None,
            ) from None
        raise ConfigError(f"`{dotted}`: {err['msg']}", where=where) from None


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``loc`` (to list its keys)."""
    ann: Any = model
    for part in loc:
        ann = _unwrap(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            field = next((f for n, f in ann.model_fields.items() if (f.alias or n) == part), None)
            if field is None:
                return None
            ann = field.annotation
        else:  # dict[str, X] or list[X]: step into X
            args = getattr(ann, "__args__", ())
            if not args:
                return None
            ann = args[-1]
    ann = _unwrap(ann)
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _unwrap(ann: Any) -> Any:
    """Optional[X] -> X."""
    if get_origin(ann) in (Union, UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann
