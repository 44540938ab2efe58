"""What the `llmt` commands share: the options most of them take (dbt's names), loading the project, the log and
the console."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from llmt.console import Console
    from llmt.project import Project

F = TypeVar("F", bound=Callable[..., Any])


def project_options(func: F) -> F:
    """--project-dir, --target, --vars on every command that loads a project (dbt style)."""
    func = click.option("--vars", "vars_", default=None, metavar="YAML",
                        help="Override project vars, e.g. --vars '{min_review_chars: 20}'.")(func)
    func = click.option("--target", "-t", default=None, help="Target from project.yml (default: its `target`).")(func)
    func = click.option("--project-dir", default=".", type=click.Path(file_okay=False, path_type=Path),
                        show_default=True, help="Directory holding project.yml.")(func)
    return func


def select_options(func: F) -> F:
    func = click.option("--exclude", multiple=True, help="Selectors to leave out (several: --exclude a b).")(func)
    func = click.option("--select", "-s", multiple=True,
                        help="Models to run: name, name+, +name, tag:x, path:models/x; several: -s a b.")(func)
    return func


def output_option(func: F) -> F:
    return click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text",
                        show_default=True, help="json: machine-readable output on stdout.")(func)


def refresh_options(func: F) -> F:
    """--full-refresh, --retry-failed, --reask and --yes (run, build)."""
    func = click.option("--yes", "-y", is_flag=True,
                        help="Do not ask before --reask pays again (for scripts), e.g. llmt run --reask --yes.")(func)
    func = click.option("--reask", is_flag=True,
                        help="Ask again for rows that already have an answer (pays again; replaces answers). "
                        "Asks first on a terminal; elsewhere it needs --yes.")(func)
    func = click.option("--retry-failed", is_flag=True,
                        help="Ask again for rows whose attempts failed in earlier runs.")(func)
    func = click.option("--full-refresh", is_flag=True,
                        help="Build every model, even a view or table nothing it reads changed for, and tables "
                        "from scratch (LLM answers come from the store: free), e.g. llmt run --full-refresh.")(func)
    return func


def spend_options(func: F) -> F:
    """--timeout and --max-cost (run, build, eval)."""
    func = click.option("--max-cost", type=float, default=None, metavar="USD",
                        help="Refuse to submit work whose upper-bound cost, with open batches, exceeds this.")(func)
    func = click.option("--timeout", type=float, default=None, metavar="SECONDS",
                        help="Stop waiting for batches after this long (they stay open; re-run to collect).")(func)
    return func


def mode_options(func: F) -> F:
    """--mode, --no-canary and --max-failed-share (run, build)."""
    func = click.option("--max-failed-share", type=click.FloatRange(0, 1), default=None, metavar="SHARE",
                        help="Fail a model (exit 1) whose failed rows are more than this share of its rows; "
                        "overrides project.yml and model config (default 0.05; 0: any failed row), "
                        "e.g. --max-failed-share 0.")(func)
    func = click.option("--no-canary", is_flag=True,
                        help="Skip the realtime canary that precedes a large batch.")(func)
    func = click.option("--mode", type=click.Choice(["batch", "realtime", "auto"]), default=None,
                        help="How every LLM model sends its requests this time (default: each model's `mode`).")(func)
    return func


def schedule_options(func: F) -> F:
    """--fail-fast and --threads (run, build)."""
    func = click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
                        help="Build up to N ready SQL models at once, each on a connection of its own, on "
                        "PostgreSQL (default: the target's `threads`, 1). DuckDB has one writer and builds one at "
                        "a time (it parallelizes inside each statement); LLM models' batches are all in flight "
                        "at once regardless, e.g. llmt run --threads 4.")(func)
    func = click.option("--fail-fast", "-x", is_flag=True,
                        help="Stop the run at the first failed model; open batches stay open (the next run "
                        "collects them), e.g. llmt run --fail-fast.")(func)
    return func


def load(project_dir: Path, target: str | None, vars_: str | None) -> Project:
    from llmt import logs
    from llmt.errors import ConfigError
    from llmt.project import load_project

    start_log(project_dir)

    cli_vars: dict[str, Any] = {}
    if vars_:
        import yaml

        try:
            loaded = yaml.safe_load(vars_)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--vars is not valid YAML: {exc}", hint="Example: --vars '{key: value}'.") from None
        if not isinstance(loaded, dict):
            raise ConfigError("--vars must be a YAML mapping", hint="Example: --vars '{key: value}'.")
        cli_vars = loaded
    with logs.step("load the project"):
        project = load_project(project_dir, target, cli_vars)
    logs.event("project", f"project `{project.name}`, target `{project.target_name}`: {len(project.nodes)} model(s)",
               project=project.name, target=project.target_name, models=len(project.nodes))
    return project


def start_log(project_dir: Path | None) -> None:
    """Log this command to the project's logs/llmt.log (and with --debug, to the terminal)."""
    from llmt import logs

    ctx = click.get_current_context()
    debug = bool(ctx.find_root().params.get("debug"))
    logs.start(project_dir.resolve() if project_dir is not None else None, ctx.command_path.removeprefix("llmt "),
               sys.argv[1:], make_console().debug if debug else None)


def make_console(output: str = "text") -> Console:
    from llmt.console import Console

    return Console(json_output=output == "json")
