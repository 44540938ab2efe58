"""Prompt templates: `prompts/<name>.md` with YAML front matter and a Jinja body."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes

from llmt.errors import CompileError, ConfigError, did_you_mean
from llmt.macros import MacroFile, Macros, prompt_globals
from llmt.project.config import GENERATION_KEYS
from llmt.textfile import read_text

FRONT_MATTER_KEYS = ("system", *GENERATION_KEYS)


@dataclass(frozen=True)
class Prompt:
    name: str
    path: Path
    system: str | None
    body: str
    params: dict[str, Any]  # generation parameters from the front matter
    body_line: int  # line of the file where the body starts
    includes: dict[str, str] = field(default_factory=dict)  # included template name -> source
    macros: tuple[MacroFile, ...] = ()  # the macro files the templates use (macros.py)

    def variables(self) -> set[str]:
        """Top-level variables the templates reference (the input columns that matter)."""
        env = prompt_env(self.path.parent)
        names: set[str] = set()
        for source in (self.system or "", self.body, *self.includes.values()):
            names |= jinja2.meta.find_undeclared_variables(env.parse(source))
        return names - {name for file in self.macros for name in file.names}

    def fingerprint(self) -> str:
        """Hash of everything in the templates that shapes a request (the macros they use included)."""
        h = hashlib.sha256()
        for part in (self.system or "", self.body, *(f"{k}\0{v}" for k, v in sorted(self.includes.items())),
                     *(f"macro\0{m.rel_path}\0{m.source}" for m in self.macros)):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()


def prompt_env(prompts_dir: Path, macros: Sequence[MacroFile] = ()) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(prompts_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
        finalize=_shown,
    )
    if macros:
        prompt_globals(env, macros)
    return env


def _shown(value: Any) -> Any:
    """A value as a prompt shows it: SQL NULL as nothing, an instant in UTC (whatever the session's time zone:
    the request key of warehouse/keys.py takes the instant, so the text must not depend on the zone)."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC)
    return value


def load_prompt(prompts_dir: Path, name: str, where: str, macros: Macros | None = None) -> Prompt:
    """Read `prompts/<name>.md`; ``where`` is the model that asked for it; ``macros``: the project's."""
    path = prompts_dir / f"{name}.md"
    if not path.is_file():
        known = sorted(p.relative_to(prompts_dir).with_suffix("").as_posix() for p in prompts_dir.rglob("*.md"))
        raise ConfigError(
            f"prompt `{name}` not found (expected {path}).{did_you_mean(name, known)}",
            where=where,
            hint=f"Create {path} or fix `prompt=` in the model's config. Prompts: {', '.join(known) or 'none'}.",
        )
    text = read_text(path)
    meta: dict[str, Any] = {}
    body, body_line = text, 1
    if text.startswith("---"):
        lines = text.splitlines(keepends=True)
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
        if end is None:
            raise ConfigError(
                "front matter starts with `---` but never ends", where=f"{path}:1",
                hint="Close it with a line containing only `---`.",
            )
        from llmt.project.yamlfile import read_yaml

        loaded = read_yaml(path, "".join(lines[1:end])) or {}
        if not isinstance(loaded, dict):
            raise ConfigError("front matter must be a YAML mapping", where=f"{path}:2")
        meta = loaded
        body, body_line = "".join(lines[end + 1 :]), end + 2
    for key in meta:
        if key not in FRONT_MATTER_KEYS:
            raise ConfigError(
                f"unknown front matter key `{key}`.{did_you_mean(key, FRONT_MATTER_KEYS)}",
                where=str(path),
                hint=f"Known keys: {', '.join(FRONT_MATTER_KEYS)}.",
            )
    system = meta.pop("system", None)
    if system is not None and not isinstance(system, str):
        raise ConfigError("`system` must be a string", where=str(path))
    if not body.strip():
        raise ConfigError(
            "the prompt has no body", where=str(path), hint="Write the user message after the front matter."
        )
    env = prompt_env(prompts_dir)
    includes: dict[str, str] = {}
    pending = [system or "", body]
    while pending:
        source = pending.pop()
        try:
            refs = jinja2.meta.find_referenced_templates(env.parse(source))
        except jinja2.TemplateSyntaxError as exc:
            raise CompileError(
                f"Jinja syntax error: {exc.message}", where=f"{path}:{(exc.lineno or 1) + body_line - 1}"
            ) from None
        for ref in refs:
            if ref is None or ref in includes:
                continue
            inc = prompts_dir / ref
            if not inc.is_file():
                raise ConfigError(f"included template `{ref}` not found in {prompts_dir}", where=str(path))
            includes[ref] = read_text(inc)
            pending.append(includes[ref])
    used = macros.used_by([system or "", body, *includes.values()]) if macros is not None else ()
    return Prompt(name, path, system, body, meta, body_line, includes, used)


class PromptRenderer:
    """Renders one prompt for many rows (compiled once)."""

    def __init__(self, prompt: Prompt) -> None:
        env = prompt_env(prompt.path.parent, prompt.macros)
        self.prompt = prompt
        self._env = env
        self._system = env.from_string(prompt.system) if prompt.system else None
        self._body = env.from_string(prompt.body)

    def messages(self, row: dict[str, Any]) -> list[dict[str, str]]:
        out = []
        if self._system is not None:
            out.append({"role": "system", "content": self._system.render(row)})
        out.append({"role": "user", "content": self._body.render(row)})
        return out

    def row_renderer(self, columns: Sequence[str]) -> Callable[[Sequence[Any]], tuple[str | None, str]]:
        """A function from a row's values (in ``columns`` order) to its (system, user) contents, the same
        text as :meth:`messages`. Templates made only of text and ``{{ column }}`` are compiled to plain
        string joins (many times faster than Jinja); a template without variables renders once."""
        system = None if self.prompt.system is None else self._compile(self.prompt.system, self._system, columns)
        body = self._compile(self.prompt.body, self._body, columns)
        if system is None:
            return lambda values: (None, body(values))
        if isinstance(system, str):
            constant = system
            return lambda values: (constant, body(values))
        render_system = system
        return lambda values: (render_system(values), body(values))

    def utf8_renderer(
        self, columns: Sequence[str], utf8: Collection[str],
    ) -> tuple[str | None, Callable[[Sequence[Any]], bytes]] | None:
        """For a body made only of text and ``{{ column }}`` and a system message without variables (or
        none): the system message, and a function from a row's values, those of the columns ``utf8`` given
        as their UTF-8 bytes, to the user message's UTF-8 bytes (what :meth:`row_renderer` gives,
        encoded; DuckDB hands over bytes at half the cost of text). None for other prompts."""
        system = None if self.prompt.system is None else self._compile(self.prompt.system, self._system, columns)
        parts = _simple_parts(self._env, self.prompt.body, columns)
        if parts is None or not (system is None or isinstance(system, str)):
            return None
        indices = {i for i, name in enumerate(columns) if name in utf8}
        return system, _joiner(parts, {"S": _text, "U": _utf8}, bytes_of=indices)

    def _compile(self, source: str, template: jinja2.Template | None, columns: Sequence[str]) -> Any:
        """A constant string, or a function of the row's values."""
        assert template is not None
        parts = _simple_parts(self._env, source, columns)
        if parts is None:
            names = list(columns)
            return lambda values: template.render(dict(zip(names, values, strict=True)))
        if all(isinstance(p, str) for p in parts):
            return "".join(str(p) for p in parts)
        return _joiner(parts, {"S": _text})


def _joiner(parts: list[str | int], helpers: dict[str, Any], bytes_of: Collection[int] | None = None) -> Any:
    """A function joining ``parts`` (literal text, and row value indices) into a string, or with
    ``bytes_of`` into UTF-8 bytes (the values at those indices are bytes already, or None)."""
    encode = bytes_of is not None
    literals = tuple(p.encode() if encode else p for p in parts if isinstance(p, str))
    code, n = [], 0
    for part in parts:
        if isinstance(part, str):
            code.append(f"L[{n}]")
            n += 1
        elif bytes_of is not None and part in bytes_of:
            code.append(f"U(v[{int(part)}])")
        else:
            code.append(f"S(v[{int(part)}]).encode()" if encode else f"S(v[{int(part)}])")
    namespace: dict[str, Any] = {"L": literals, **helpers}
    empty = "b''" if encode else "''"
    exec(f"def render(v):\n    return {empty}.join(({', '.join(code)},))\n", namespace)  # indices and L[i] only
    render: Any = namespace["render"]
    return render


def _text(value: Any) -> str:
    """What `{{ value }}` renders (`_shown`, through str())."""
    return value if type(value) is str else str(_shown(value))


def _utf8(value: bytes | None) -> bytes:
    """What `{{ value }}` renders of a text given as UTF-8 bytes, encoded: SQL NULL as nothing."""
    return b"" if value is None else value


def _simple_parts(env: jinja2.Environment, source: str, columns: Sequence[str]) -> list[str | int] | None:
    """The template as literal text and column indices, when it is only text and `{{ name }}` of columns."""
    index = {name: i for i, name in enumerate(columns)}
    parts: list[str | int] = []
    for node in env.parse(source).body:
        if not isinstance(node, jinja2.nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, jinja2.nodes.TemplateData):
                parts.append(child.data)
            elif isinstance(child, jinja2.nodes.Const) and isinstance(child.value, str):
                parts.append(child.value)
            elif isinstance(child, jinja2.nodes.Name) and child.ctx == "load" and child.name in index:
                parts.append(index[child.name])
            else:
                return None
    return parts
