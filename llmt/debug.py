"""`llmt debug`: is everything in place to run? The project loads, each LLM model compiles with a known price,
the target's warehouse opens and its state is readable, and the provider answers a cheap authenticated call with
the key a run would use. Each check says ok, or what is wrong and what to do; nothing is written or paid for."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import TYPE_CHECKING

from llmt.errors import LlmtError

if TYPE_CHECKING:
    from llmt.console import Console
    from llmt.project import Project

VERSIONS = ("llmt", "duckdb", "psycopg", "openai", "sqlglot", "jinja2")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str  # what was found, or what is wrong
    hint: str | None = None  # what to do

    @classmethod
    def failed(cls, name: str, exc: LlmtError) -> Check:
        return cls(name, False, f"{exc.where}: {exc.message}" if exc.where else exc.message, exc.hint)


def debug_project(load: Callable[[], Project], console: Console) -> bool:
    """Run every check and report it; whether all passed."""
    versions = {"python": platform.python_version(), **{name: _version(name) for name in VERSIONS}}
    checks: list[Check] = []
    try:
        project = load()
    except LlmtError as exc:
        checks.append(Check.failed("project", exc))
    else:
        llm = [n for n in project.nodes.values() if n.is_llm]
        checks.append(Check("project", True, f"`{project.name}` in {project.dir}: {len(project.nodes)} model(s), "
                            f"{len(llm)} LLM model(s), {len(project.sources)} source(s), "
                            f"{len(project.macros.by_name)} macro(s); target `{project.target_name}`"))
        checks.extend(_llm_model(project, node.name) for node in llm)
        checks.append(_warehouse(project))
        checks.append(_provider(project))
    ok = all(c.ok for c in checks)
    if console.json_output:
        console.json({"ok": ok, "versions": versions, "checks": [asdict(c) for c in checks]})
        return ok
    console.text(", ".join(f"{name} {version}" for name, version in versions.items()))
    for check in checks:
        console.text(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}"
                     + (f"\n        {check.hint}" if check.hint and not check.ok else ""))
    failed = sum(not c.ok for c in checks)
    console.text("All checks passed." if ok else f"{failed} check(s) failed.")
    return ok


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _llm_model(project: Project, name: str) -> Check:
    """Its prompt, output schema and columns compile, and its LLM (and its escalation's) has a known price."""
    from llmt.pipeline.spec import build_spec, escalation_spec
    from llmt.runner import prices

    try:
        spec = build_spec(project, project.nodes[name])
        table = prices(project)
        asked = [s for s in (spec, escalation_spec(spec)) if s is not None]
        for each in asked:
            table.check(each.model, int(each.params["max_output_tokens"]), project.nodes[name].rel_path)
    except LlmtError as exc:
        return Check.failed(f"model {name}", exc)
    priced = "; ".join(f"{s.model} at ${table.price(s.model).rates.input:g} / ${table.price(s.model).rates.output:g} "
                       "per 1M input / output tokens (live)" for s in asked)
    return Check(f"model {name}", True, f"prompt `{spec.prompt.name}`, output schema `{spec.schema_name}`, mode "
                 f"{spec.execution.mode}; {priced}")


def _warehouse(project: Project) -> Check:
    """The warehouse opens (read-only: nothing is created or migrated) and its state is readable."""
    from llmt.warehouse import open_warehouse
    from llmt.warehouse.store import StateStore

    config = project.target.warehouse
    name = f"warehouse ({config.type})"
    if config.type == "duckdb":
        if config.path == ":memory:":
            return Check(name, True, "`:memory:`: tables and stored answers last as long as one command")
        path = (project.dir / config.path).resolve()
        if not path.exists():
            folder = path.parent
            if not folder.is_dir():
                return Check(name, False, f"{path}: its folder {folder} does not exist",
                             hint="Create the folder, or fix the target's warehouse `path` in project.yml.")
            return Check(name, True, f"{path} does not exist yet: the first `llmt run` creates it")
    where = config.location(project.dir)
    try:
        wh = open_warehouse(config.model_copy(update={"lock_timeout": 0}), project.dir, read_only=True,
                            target=project.target_name)
        try:
            open_shards = StateStore(wh).open_files()
        finally:
            wh.close()
    except LlmtError as exc:
        return Check.failed(name, exc)
    return Check(name, True, f"{where} opens, its state is readable: {len(open_shards)} open batch(es)")


def _provider(project: Project) -> Check:
    """The target's provider is configured and answers an authenticated call with the key a run would use."""
    from llmt.runner import make_providers

    kind = project.target.provider.type
    name = f"provider ({kind})"
    try:
        providers = make_providers(project)
        try:
            return Check(name, True, providers.batch.check())
        finally:
            providers.close()
    except LlmtError as exc:
        return Check.failed(name, exc)
