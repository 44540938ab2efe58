"""The `llmt` command. Thin: parse options, call the library, print through console.py.

Exit codes: 0 ok, 1 a node or test failed, 2 usage or config error."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from llmt.cli_learning import export, finetune
from llmt.cli_options import (
    F,
    load,
    make_console,
    mode_options,
    output_option,
    project_options,
    refresh_options,
    schedule_options,
    select_options,
    spend_options,
    start_log,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="llmt")
@click.option("--debug", is_flag=True,
              help="Also print the log (logs/llmt.log: timings, SQL statements, provider calls) on the terminal, "
              "e.g. llmt --debug run (or llmt run --debug).")
def cli(debug: bool) -> None:
    """llmt: dbt for LLM enrichment.

    Declare LLM models (a SQL select + a prompt + an output JSON schema); `llmt run` sends only
    the rows without an answer through the OpenAI Batch API and writes typed columns to DuckDB.

    \b
    Example:
      llmt init my_project && cd my_project && llmt run
    """


@cli.command()
@click.argument("name")
def init(name: str) -> None:
    """Create a new project NAME that `llmt run` runs straight away (offline, fake provider).

    \b
    Example:
      llmt init my_project && cd my_project && llmt run
    """
    from llmt.new_project import create_project

    path = create_project(Path(name))
    make_console().info(f"Created {path}. Next: cd {name} && llmt run")


@cli.command("compile")
@project_options
@select_options
@click.option("--full-refresh", is_flag=True,
              help="Show the full build of incremental models (what `llmt run --full-refresh` runs).")
def compile_(project_dir: Path, target: str | None, vars_: str | None, select: tuple[str, ...],
             exclude: tuple[str, ...], full_refresh: bool) -> None:
    """Compile models: write target/compiled/, show the SQL the next `llmt run` runs (an incremental model's
    incremental branch when its table exists) and one sample request per LLM model.

    \b
    Examples:
      llmt compile -s review_insights
      llmt compile -s my_incremental_model --full-refresh
    """
    from llmt.commands import compile_project

    console = make_console()
    compile_project(load(project_dir, target, vars_), list(select), list(exclude), console, full_refresh)


@cli.command("ls")
@project_options
@select_options
@output_option
def ls(project_dir: Path, target: str | None, vars_: str | None, select: tuple[str, ...],
       exclude: tuple[str, ...], output: str) -> None:
    """List models in DAG order.

    \b
    Example:
      llmt ls -s tag:nightly --output json
    """
    from llmt.commands import list_nodes

    list_nodes(load(project_dir, target, vars_), list(select), list(exclude), make_console(output))


@cli.command()
@project_options
@select_options
@output_option
@refresh_options
@click.option("--no-wait", is_flag=True, help="Submit batches and return; a later `llmt run` collects them.")
@spend_options
@mode_options
@click.option("--sample", type=click.IntRange(min=1), default=None, metavar="N",
              help="Send at most N of each model's pending requests (a deterministic choice; re-run for more).")
@schedule_options
def run(project_dir: Path, target: str | None, vars_: str | None, select: tuple[str, ...],
        exclude: tuple[str, ...], output: str, full_refresh: bool, no_wait: bool, retry_failed: bool,
        timeout: float | None, max_cost: float | None, mode: str | None, no_canary: bool, sample: int | None,
        reask: bool, yes: bool, max_failed_share: float | None, fail_fast: bool, threads: int | None) -> None:
    """Run models by readiness: SQL models are built as soon as their parents are, every LLM model whose
    inputs are ready sends its new rows at once, and all open batches are polled together.

    \b
    Examples:
      llmt run                       # everything
      llmt run -s review_insights+   # one LLM model and what depends on it
      llmt run --no-wait             # submit batches and return
      llmt run --max-cost 5          # refuse to commit more than $5
      llmt run --sample 20           # try the prompt on 20 requests first
      llmt run --mode realtime       # small urgent work: chat completions now
      llmt run --max-failed-share 0  # CI: any failed row fails the run
      llmt run --fail-fast           # stop at the first failed model
    """
    from llmt.commands import confirm_reask, run_project
    from llmt.pipeline.llm import LlmOptions

    console = make_console(output)
    options = LlmOptions(full_refresh=full_refresh, wait=not no_wait, retry_failed=retry_failed, timeout=timeout,
                         max_cost=max_cost, sample=sample, mode=mode, canary=not no_canary, reask=reask,
                         max_failed_share=max_failed_share, confirm=confirm_reask(reask, yes, console),
                         fail_fast=fail_fast, threads=threads)
    report = run_project(load(project_dir, target, vars_), list(select), list(exclude), console, options)
    sys.exit(1 if report.failed else 0)


@cli.command()
@project_options
@select_options
@output_option
@click.option("--full-refresh", is_flag=True, help="Load every selected seed, even those whose file did not change.")
def seed(project_dir: Path, target: str | None, vars_: str | None, select: tuple[str, ...], exclude: tuple[str, ...],
         output: str, full_refresh: bool) -> None:
    """Load the CSV files under seeds/ into tables (one per file, named after it), each again only when its file
    changed; models read them with ref('name'). `llmt build` loads the seeds its models read first.

    \b
    Examples:
      llmt seed                      # every seed whose file changed
      llmt seed -s country_codes     # one seed
      llmt seed --full-refresh       # load them all again
    """
    from llmt.seeding import seed_project

    report = seed_project(load(project_dir, target, vars_), list(select), list(exclude), make_console(output),
                          full_refresh)
    sys.exit(1 if report.failed else 0)


@cli.command()
@project_options
@output_option
@click.argument("model")
@click.option("--limit", "-n", default=10, show_default=True, help="Rows to show.")
def show(project_dir: Path, target: str | None, vars_: str | None, output: str, model: str, limit: int) -> None:
    """Show the first rows of a model's table.

    \b
    Example:
      llmt show review_insights --limit 5
    """
    from llmt.commands import show_model

    show_model(load(project_dir, target, vars_), model, limit, make_console(output))


@cli.command()
@project_options
@select_options
@output_option
@click.option("--sample", type=click.IntRange(min=1), default=None, metavar="N",
              help="Plan for `llmt run --sample N`.")
@click.option("--mode", type=click.Choice(["batch", "realtime", "auto"]), default=None,
              help="Plan for `llmt run --mode ...` (the estimate uses that mode's price).")
def plan(project_dir: Path, target: str | None, vars_: str | None, select: tuple[str, ...],
         exclude: tuple[str, ...], output: str, sample: int | None, mode: str | None) -> None:
    """Show what `llmt run` would send and what it would cost, per LLM model. Sends and writes nothing.

    Exact input tokens; output tokens as an upper bound (max_output_tokens) and an expected value;
    cost at batch and at live prices; open batches and their value; the escalation's upper bound;
    requests too long for the model's context window. On a project nobody has run yet, the LLM
    models' inputs are built in memory (nothing is written).

    \b
    Example:
      llmt plan -s review_insights --output json
    """
    from llmt.commands import plan_project

    plan_project(load(project_dir, target, vars_), list(select), list(exclude), make_console(output), sample, mode)


@cli.command()
@project_options
@output_option
def status(project_dir: Path, target: str | None, vars_: str | None, output: str) -> None:
    """Show every open batch of the target (status, request counts, age, expiry), spend per model and provider
    (the fake provider's apart, as simulated), and which other targets have batches open, without collecting
    anything.

    \b
    Examples:
      llmt status --output json
      llmt status --target openai
    """
    from llmt.commands import batch_status

    batch_status(load(project_dir, target, vars_), make_console(output))


@cli.command()
@project_options
@click.option("--select", "-s", multiple=True, help="Only the batches of these LLM models (several: -s a b).")
@click.option("--timeout", type=float, default=900.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the cancellations to finish before collecting.")
def cancel(project_dir: Path, target: str | None, vars_: str | None, select: tuple[str, ...], timeout: float) -> None:
    """Cancel open batches (all, or those of some models) and keep every answer they already have. A run
    waiting on them stops that model; the next `llmt run` sends its rows.

    \b
    Examples:
      llmt cancel                       # every open batch
      llmt cancel -s review_insights    # one model's batches
    """
    from llmt.commands import cancel_batches

    cancel_batches(load(project_dir, target, vars_), list(select), make_console(), timeout)


@cli.group()
def docs() -> None:
    """The project's documentation: `llmt docs generate` writes target/index.html (one page, nothing fetched:
    open it as a file) and target/catalog.json; `llmt docs serve` serves them on localhost.

    \b
    Example:
      llmt docs generate && llmt docs serve --port 8080
    """


@docs.command("generate")
@project_options
@output_option
def docs_generate(project_dir: Path, target: str | None, vars_: str | None, output: str) -> None:
    """Write target/index.html (every model and source: columns and types, descriptions, tests, the lineage graph
    to click through, and for LLM models their prompt, output schema, model and mode, rows answered, failed share,
    cost to date and last run), target/catalog.json (dbt's shape: what the target's warehouse holds) and
    target/manifest.json. Reads the warehouse; writes nothing to it.

    \b
    Examples:
      llmt docs generate
      llmt docs generate --target openai --output json
    """
    from llmt.docs import generate_docs

    generate_docs(load(project_dir, target, vars_), make_console(output))


@docs.command("serve")
@click.option("--project-dir", default=".", type=click.Path(file_okay=False, path_type=Path), show_default=True,
              help="Directory holding project.yml.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port on 127.0.0.1 (0: any free port), e.g. --port 8081.")
def docs_serve(project_dir: Path, port: int) -> None:
    """Serve the documentation `llmt docs generate` wrote, on http://127.0.0.1:PORT/, until Ctrl-C.

    \b
    Example:
      llmt docs serve --port 8081
    """
    from llmt.docs.serve import serve

    start_log(project_dir)
    console = make_console()
    serve(project_dir.resolve() / "target", port,
          lambda url: console.info(f"Serving the documentation on {url} (Ctrl-C stops)"))
    console.info("Stopped.")


@cli.command()
@project_options
@output_option
def debug(project_dir: Path, target: str | None, vars_: str | None, output: str) -> None:
    """Check that everything is in place to run: the project loads, each LLM model compiles and its model has a
    known price, the target's warehouse opens and its state is readable, and the provider accepts the key a run
    would use (a cheap authenticated call: listing one batch). Each line says ok or what to fix; exit code 1
    when a check fails. Writes and pays for nothing.

    \b
    Examples:
      llmt debug
      llmt debug --target openai --output json
    """
    from llmt.debug import debug_project

    start_log(project_dir)
    sys.exit(0 if debug_project(lambda: load(project_dir, target, vars_), make_console(output)) else 1)


@cli.command()
@project_options
@output_option
@click.option("--retry-failed", is_flag=True,
              help="Also ask again for the rows of LLM models whose attempts failed (what failed such a model).")
@spend_options
@schedule_options
def retry(project_dir: Path, target: str | None, vars_: str | None, output: str, retry_failed: bool,
          timeout: float | None, max_cost: float | None, fail_fast: bool, threads: int | None) -> None:
    """Run again only the models and tests that failed or were skipped in the last `llmt run`, `build` or `test`
    (read from target/run_results.json), with the same command, on the same target, with the same options
    (--vars, --full-refresh, --mode, --max-cost, ...; those given here win; --reask is not replayed).

    \b
    Examples:
      llmt retry                  # e.g. after a failed `llmt run --full-refresh`: with --full-refresh
      llmt retry --vars '{day: 2026-12-02}'   # other vars than the last run's
      llmt retry --retry-failed   # an LLM model failed on its failed rows: ask for them again
      llmt retry --fail-fast      # stop at the first model that fails again
    """
    from llmt.pipeline.llm import LlmOptions
    from llmt.retry import last_run, retry_options, retry_project, retry_target, retry_vars

    start_log(project_dir)
    last = last_run(project_dir)
    project = load(project_dir, retry_target(last, target), retry_vars(last, vars_))
    options = retry_options(last, LlmOptions(retry_failed=retry_failed, timeout=timeout, max_cost=max_cost,
                                             fail_fast=fail_fast, threads=threads))
    sys.exit(1 if retry_project(project, last, make_console(output), options) else 0)


@cli.command()
@click.option("--project-dir", default=".", type=click.Path(file_okay=False, path_type=Path), show_default=True,
              help="Directory holding project.yml.")
@output_option
def clean(project_dir: Path, output: str) -> None:
    """Remove target/ (the folders `clean-targets` in project.yml names), keeping what a later command needs:
    the files of batches still open on any target (the next `llmt run` collects them), the fake provider's
    batches while one is open, and a warehouse database kept there. Says what it kept, and why. Reads only
    project.yml: it works while a model does not compile.

    \b
    Example:
      llmt clean
    """
    from llmt.clean import clean_project, read_place

    start_log(project_dir)
    clean_project(read_place(project_dir), make_console(output))


def test_options(func: F) -> F:
    func = click.option("--store-failures", is_flag=True,
                        help="Keep every test's failing rows in the table <schema>_test_failures.<test>.")(func)
    func = click.option("--junit-xml", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        metavar="PATH", help="Also write the results as JUnit XML (for CI).")(func)
    return func


@cli.command("test")
@project_options
@select_options
@output_option
@test_options
def test_(project_dir: Path, target: str | None, vars_: str | None, select: tuple[str, ...],
          exclude: tuple[str, ...], output: str, junit_xml: Path | None, store_failures: bool) -> None:
    """Run data tests, schema-derived tests, singular tests and unit tests (offline, nothing is sent).
    Exit code 1 when a test of severity error fails.

    \b
    Examples:
      llmt test                                # every test
      llmt test -s review_insights             # the tests of one model
      llmt test --junit-xml target/junit.xml   # for CI
    """
    from llmt.testing.run import test_project

    report = test_project(load(project_dir, target, vars_), list(select), list(exclude), make_console(output),
                          junit_xml, store_failures)
    sys.exit(1 if report.failed else 0)


@cli.command()
@project_options
@select_options
@output_option
@test_options
@refresh_options
@spend_options
@mode_options
@schedule_options
def build(project_dir: Path, target: str | None, vars_: str | None, select: tuple[str, ...],
          exclude: tuple[str, ...], output: str, junit_xml: Path | None, store_failures: bool,
          full_refresh: bool, retry_failed: bool, timeout: float | None, max_cost: float | None,
          mode: str | None, no_canary: bool, reask: bool, yes: bool, max_failed_share: float | None,
          fail_fast: bool, threads: int | None) -> None:
    """Run and test models in DAG order: unit tests before a model, its data tests right after it.
    A failing error-severity test skips everything downstream of it.

    \b
    Examples:
      llmt build                        # everything
      llmt build -s +product_sentiment  # one model and what it depends on
    """
    from llmt.commands import confirm_reask
    from llmt.pipeline.llm import LlmOptions
    from llmt.testing.run import build_project

    console = make_console(output)
    options = LlmOptions(full_refresh=full_refresh, retry_failed=retry_failed, timeout=timeout, max_cost=max_cost,
                         mode=mode, canary=not no_canary, reask=reask, max_failed_share=max_failed_share,
                         confirm=confirm_reask(reask, yes, console), fail_fast=fail_fast, threads=threads)
    report = build_project(load(project_dir, target, vars_), list(select), list(exclude), console,
                           options, junit_xml, store_failures)
    sys.exit(1 if report.failed else 0)


@cli.command("eval")
@project_options
@select_options
@output_option
@spend_options
def eval_(project_dir: Path, target: str | None, vars_: str | None, select: tuple[str, ...],
          exclude: tuple[str, ...], output: str, timeout: float | None, max_cost: float | None) -> None:
    """Score LLM models on labelled examples (tests/evals/<model>.csv or .jsonl) with the target's
    provider, per prompt version, against the previous version. A real provider is paid for this;
    it is never part of `llmt test`. Exit code 1 when a threshold is not met.

    \b
    Examples:
      llmt eval -s review_insights
      llmt eval -s review_insights --target openai --max-cost 1
    """
    from llmt.pipeline.llm import LlmOptions
    from llmt.testing.run import eval_project

    results = eval_project(load(project_dir, target, vars_), list(select), list(exclude), make_console(output),
                           LlmOptions(timeout=timeout, max_cost=max_cost))
    sys.exit(1 if any(r.failed for r in results) else 0)


cli.add_command(export)
cli.add_command(finetune)

SELECTION_OPTIONS = ("-s", "--select", "--exclude")


def dbt_selection(args: list[str]) -> list[str]:
    """``args`` with `-s a b` read as dbt reads it: every word up to the next option is a selector of that
    option (`-s a -s b`). The commands that select take no other arguments."""
    out: list[str] = []
    option: str | None = None
    for arg in args:
        if arg.startswith("-"):
            name = arg.split("=", 1)[0] if arg.startswith("--") else arg  # `--select=a b` too
            option = name if name in SELECTION_OPTIONS else None
        elif option is not None and out[-1] != option:
            out.append(option)
        out.append(arg)
    return out


def global_options(args: list[str]) -> list[str]:
    """``args`` with `--debug` placed before the command wherever it was given (as dbt takes it)."""
    return ["--debug", *(a for a in args if a != "--debug")] if "--debug" in args else args


def main() -> None:
    """Entry point: one error boundary; user mistakes get a message, never a traceback."""
    code: int | str | None = 1
    try:
        _main()
        code = 0
    except SystemExit as exc:
        code = exc.code
        raise
    finally:
        logs = sys.modules.get("llmt.logs")  # imported by a command that logs (not by `llmt --help`)
        if logs is not None:
            logs.finish(code if isinstance(code, int) else 0 if code is None else 1)


def _main() -> None:
    from llmt.errors import LlmtError

    try:
        cli.main(args=global_options(dbt_selection(sys.argv[1:])), prog_name="llmt", standalone_mode=False)
    except LlmtError as exc:
        from llmt.console import Console

        Console().error(exc.render())
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
