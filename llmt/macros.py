"""Jinja macros from `macros/*.sql` (`{% macro name(args) %}...{% endmacro %}`), as in dbt: callable by name in
models, singular tests, test arguments and prompts.

In SQL a macro sees what the model sees (ref, source, var, env_var, config, is_incremental, this: a `ref()` in a
macro is a dependency of the model that calls it) and every other macro. In a prompt a macro sees only its
arguments and the other macros: what it renders depends on the row's values it is given, so that the request
key, which covers the prompt's columns and the text of the macros it uses (Prompt.fingerprint), stays exact.

An error in a macro names the macro's file and line (compile.py). Macro files are compiled through the parse
cache by their path and text, so a changed macro is compiled again and every model is rendered with it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.meta
import jinja2.nodes

from llmt.errors import CompileError, ConfigError
from llmt.textfile import read_text

if TYPE_CHECKING:
    from llmt.compile import ParseCache

# what a model's Jinja already calls these names: a macro may not take them
RESERVED = ("ref", "source", "config", "var", "env_var", "is_incremental", "this")
_PARSER = jinja2.Environment()  # parses only (every llmt environment has Jinja's default syntax)


@dataclass(frozen=True)
class MacroFile:
    rel_path: str  # relative to the project, as errors name it
    source: str
    names: tuple[str, ...]  # the macros it defines
    uses: frozenset[str]  # the names its templates reference (other macros among them)


@dataclass(frozen=True)
class Macros:
    """The project's macros, by name."""

    by_name: dict[str, MacroFile] = field(default_factory=dict)

    @property
    def files(self) -> list[MacroFile]:
        return list({f.rel_path: f for f in self.by_name.values()}.values())

    def used_by(self, sources: Iterable[str]) -> tuple[MacroFile, ...]:
        """The macro files that templates of ``sources`` use, and those these use in turn (path order)."""
        names = set().union(*(jinja2.meta.find_undeclared_variables(_PARSER.parse(s)) for s in sources))
        found: dict[str, MacroFile] = {}
        pending = [self.by_name[n] for n in names if n in self.by_name]
        while pending:
            file = pending.pop()
            if file.rel_path not in found:
                found[file.rel_path] = file
                pending.extend(self.by_name[n] for n in file.uses if n in self.by_name)
        return tuple(found[k] for k in sorted(found))

    def bind(self, context: dict[str, Any], template: Callable[[MacroFile], jinja2.Template]) -> dict[str, Any]:
        """``context`` with a callable for every macro, whose templates (from ``template``) see ``context`` and
        the other macros. A file's module is made on the first call of one of its macros."""
        if not self.by_name:
            return context
        full = dict(context)
        modules: dict[str, Any] = {}

        def call(name: str, file: MacroFile) -> Callable[..., Any]:
            def macro(*args: Any, **kwargs: Any) -> Any:
                module = modules.get(file.rel_path)
                if module is None:
                    module = modules[file.rel_path] = template(file).make_module(vars=full)
                return getattr(module, name)(*args, **kwargs)

            return macro

        for name, file in self.by_name.items():
            full[name] = call(name, file)
        return full


def load_macros(project_dir: Path, folders: list[str], cache: ParseCache) -> Macros:
    """Every macro of the `*.sql` files under ``folders``; each file is compiled (a syntax error names its file
    and line), and two macros of one name are an error."""
    by_name: dict[str, MacroFile] = {}
    for folder in folders:
        for path in sorted((project_dir / folder).rglob("*.sql")):
            rel = path.relative_to(project_dir).as_posix()
            source = read_text(path)
            try:
                tree = _PARSER.parse(source)
                cache.template(source, rel)
            except jinja2.TemplateSyntaxError as exc:
                raise CompileError(f"Jinja syntax error: {exc.message}", where=f"{rel}:{exc.lineno}",
                                   hint="Fix the macro at that line.") from None
            defined = [(node.name, node.lineno) for node in tree.body if isinstance(node, jinja2.nodes.Macro)]
            file = MacroFile(rel, source, tuple(n for n, _ in defined),
                             frozenset(jinja2.meta.find_undeclared_variables(tree)))
            for name, line in defined:
                if name in RESERVED:
                    raise ConfigError(f"a macro may not be named `{name}`: models call llmt's own `{name}()`",
                                      where=f"{rel}:{line}", hint="Rename the macro.")
                if name in by_name:
                    raise ConfigError(f"two macros are named `{name}`: in {by_name[name].rel_path} and {rel}",
                                      where=f"{rel}:{line}", hint="Macro names are global; rename one.")
                by_name[name] = file
    return Macros(by_name)


def prompt_globals(env: jinja2.Environment, files: Iterable[MacroFile]) -> None:
    """Make the macros of ``files`` callable in ``env``'s templates (prompts: they see only each other)."""
    by_name = {name: f for f in files for name in f.names}
    env.globals.update(Macros(by_name).bind({}, lambda f: compiled(env, f.source, f.rel_path)))


def compiled(env: jinja2.Environment, source: str, name: str) -> jinja2.Template:
    """The template of ``source`` in ``env``, named so that its errors give its file and line."""
    return env.template_class.from_code(env, env.compile(source, name, name), env.make_globals(None), None)
