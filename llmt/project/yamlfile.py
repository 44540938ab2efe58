"""YAML loading with file:line in every error, and pydantic errors mapped back to lines."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Tag, ValidationError

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
        err_loc = _without_tags(model, err["loc"])
        loc = [*prefix, *err_loc]
        line = line_of(path, loc)
        where = f"{path}:{line}" if line else str(path)
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            key = str(err_loc[-1])
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
    """The pydantic model that validates the mapping at ``loc`` (to list its keys); a tagged union's member is
    chosen by its tag in ``loc``, as pydantic reports it."""
    ann: Any = model
    for part in loc:
        members = _tagged(ann)
        if members is not None and part in members:
            ann = members[str(part)]
            continue
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


def _without_tags(model: type[BaseModel], loc: Sequence[str | int]) -> list[str | int]:
    """An error's location without the tags pydantic puts in it for a tagged union (`warehouse.postgres.dsn`
    is `warehouse.dsn` in the file)."""
    out: list[str | int] = []
    for k, part in enumerate(loc):
        members = _tagged(_field_annotation(model, loc[:k]))
        if members is None or part not in members:
            out.append(part)
    return out


def _field_annotation(model: type[BaseModel], loc: Sequence[str | int]) -> Any:
    """The annotation of the field at ``loc`` (None when it is not a model's field)."""
    if not loc:
        return None
    parent = _model_at(model, loc[:-1])
    field = next((f for n, f in (parent.model_fields.items() if parent else ()) if (f.alias or n) == loc[-1]), None)
    return field.annotation if field else None


def _tagged(ann: Any) -> dict[str, Any] | None:
    """The members of a tagged union annotation, by tag (None for other annotations)."""
    union = get_args(ann)[0] if get_origin(ann) is Annotated else ann
    if get_origin(union) not in (Union, UnionType):
        return None
    members = {}
    for member in get_args(union):
        tag = next((m.tag for m in getattr(member, "__metadata__", ()) if isinstance(m, Tag)), None)
        if tag is not None:
            members[tag] = get_args(member)[0]
    return members or None


def _unwrap(ann: Any) -> Any:
    """Optional[X] -> X."""
    if get_origin(ann) in (Union, UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann
