"""`llmt retry`: run again only what failed or was skipped in the last run, read from target/run_results.json (as
dbt retry does): the same command (run, build or test) on the same target with the same options (its `args`:
--vars, --full-refresh, --mode, ...; those given to `llmt retry` win), selecting by name the models that ended
`error` or `skipped` and the tests that ended `fail`, `error` or `skipped`. --reask is not replayed: it would pay
again for the answers the failed run did get."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmt.errors import UsageError

if TYPE_CHECKING:
    from llmt.console import Console
    from llmt.pipeline.llm import LlmOptions
    from llmt.project import Project

RETRIED = ("error", "fail", "skipped")  # dbt's statuses that `retry` runs again (a `warn` is not)
COMMANDS = ("run", "build", "test")


@dataclass
class LastRun:
    run_id: str
    command: str
    target: str | None
    models: list[str] = field(default_factory=list)  # to run again, in the order they ran
    tests: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)  # its options (artifacts.run_args); none before they were

    @property
    def selectors(self) -> list[str]:
        return [*self.models, *self.tests]


def last_run(project_dir: Path) -> LastRun:
    """What failed or was skipped in the last run of the project; UsageError when there was none."""
    path = project_dir.resolve() / "target" / "run_results.json"
    hint = "Run `llmt run` (or `llmt build`, `llmt test`) first: `llmt retry` runs again what failed in it."
    if not path.is_file():
        raise UsageError(f"no previous run to retry: {path} does not exist", hint=hint)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        meta, results = data["metadata"], data["results"]
        last = LastRun(str(meta["run_id"]), str(meta["command"]), meta.get("target"), args=dict(data.get("args") or {}))
        for result in results:
            kind, _, name = str(result["unique_id"]).partition(".")
            if result["status"] in RETRIED and kind != "seed":  # (build loads again the seeds its models read)
                (last.models if kind == "model" else last.tests).append(name)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"cannot read the last run's results in {path} ({exc})", hint=hint) from None
    if last.command not in COMMANDS:
        raise UsageError(f"the last command (`llmt {last.command}`) cannot be retried",
                         hint=f"`llmt retry` runs again the failures of {', '.join(COMMANDS)}.")
    return last


def retry_target(last: LastRun, given: str | None) -> str | None:
    """The target to retry on: the last run's (another one given with --target is a mistake)."""
    if given is not None and last.target is not None and given != last.target:
        raise UsageError(f"the last run was on target `{last.target}`, not `{given}`",
                         hint=f"Run `llmt retry --target {last.target}`, or `llmt {last.command} --target {given}`.")
    return given or last.target


def retry_vars(last: LastRun, given: str | None) -> str | None:
    """The --vars to retry with: the last run's, unless others are given."""
    if given is not None or not last.args.get("vars"):
        return given
    return json.dumps(last.args["vars"])  # (JSON is YAML)


def retry_options(last: LastRun, given: LlmOptions) -> LlmOptions:
    """The last run's options (its --full-refresh, --mode, --max-cost, ...), those given to `llmt retry` winning."""
    from llmt.artifacts import OPTION_ARGS

    defaults = type(given)()
    replayed = {k: v for k, v in last.args.items() if k in OPTION_ARGS and k != "reask"}
    return replace(given, **{k: v for k, v in replayed.items() if getattr(given, k) == getattr(defaults, k)})


def known(last: LastRun, models: set[str], tests: set[str]) -> tuple[LastRun, list[str]]:
    """``last`` without the models and tests the project no longer has, and their names."""
    gone = [n for n in last.models if n not in models] + [t for t in last.tests if t not in tests]
    kept = replace(last, models=[n for n in last.models if n in models], tests=[t for t in last.tests if t in tests])
    return kept, gone


def retry_project(project: Project, last: LastRun, console: Console, options: LlmOptions) -> bool:
    """Run the last command again on what failed or was skipped; whether something failed again."""
    tests: set[str] = set()
    if last.tests:
        from llmt.testing.collect import collect_tests
        from llmt.testing.unit import collect_unit_tests

        tests = {t.name for t in collect_tests(project)} | {u.name for u in collect_unit_tests(project)}
    todo, gone = known(last, set(project.nodes), tests)
    if gone:
        console.warn(f"not retried: {', '.join(gone)} (no longer in the project)")
    if not todo.selectors:
        if console.json_output:
            console.json({"run_id": last.run_id, "command": last.command, "retried": []})
        else:
            console.info(f"Nothing to retry: everything in the last `llmt {last.command}` ({last.run_id}) "
                         + ("that is still in the project " if gone else "") + "succeeded.")
        return False
    console.info(f"Retrying `llmt {last.command}` ({last.run_id}) on "
                 + ", ".join(f"{len(names)} {kind}(s)" for kind, names in (("model", todo.models),
                                                                           ("test", todo.tests)) if names)
                 + f": {', '.join(todo.selectors)}")
    if last.command == "run":
        from llmt.commands import run_project

        return run_project(project, todo.models, [], console, options).failed
    from llmt.testing.run import build_project, test_project

    store_failures = bool(last.args.get("store_failures"))
    if last.command == "build":
        return build_project(project, todo.selectors, [], console, options, None, store_failures).failed
    return test_project(project, todo.selectors, [], console, None, store_failures).failed
