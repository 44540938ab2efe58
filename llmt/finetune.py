"""The learning loop: training data from an LLM model's validated answers (`llmt export finetune`), and
fine-tuning jobs on it (`llmt finetune submit`, `llmt finetune status`).

Exported rows are those whose answer passed: the row is answered for its current request (`_llmt_status` ok,
so the answer was validated against the schema), it passes `--where`, and none of the model's tests fails on it
(a test whose failing rows carry the model's unique key, or the offending value of the tested column; a
model-level test says nothing of single rows and is only reported). `--min-eval-score` first asks that the
latest `llmt eval` of the model's current prompt scored at least that on every score where 1 is perfect.
Each row gives the messages it was asked with (rendered as for its request) and its answer; see
finetune_data.py for the rules the files meet and how tokens and cost are counted.

A submission is recorded before its files are uploaded, each file id and the job id as soon as known, and the
job carries the submission in its metadata: a submit killed at any point and run again goes on from there and
never creates a second job (providers/finetuning.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from llmt.console import Console
from llmt.crash import crash_point
from llmt.errors import ConfigError, NodeError, UsageError, did_you_mean
from llmt.finetune_data import (
    MIN_EXAMPLES,
    Estimate,
    Limits,
    Tally,
    check_file,
    counter,
    estimate,
    example,
    in_validation,
    line,
    unique,
)
from llmt.pipeline.spec import build_spec
from llmt.project import Project
from llmt.prompts import PromptRenderer
from llmt.providers import make_finetuner
from llmt.runner import application_name, new_run_id, not_on_spark, open_warehouse, prices
from llmt.testing.collect import collect_tests
from llmt.testing.execute import failing_rows_sql
from llmt.warehouse import open_warehouse as open_target_warehouse
from llmt.warehouse.base import DatabaseError, Warehouse
from llmt.warehouse.finetuning import (
    FineTuneJobs,
    JobRow,
    count_answered,
    exported_sql,
    failing_rows_predicate,
    latest_scores,
)


@dataclass
class Export:
    model: str
    training_path: Path
    validation_path: Path | None
    rows: int  # the model's output rows
    answered: int  # with an answer to their current request
    matched: int  # of which pass --where
    failed_tests: dict[str, int]  # rows each of the model's tests fails on (left out)
    not_row_level: list[str]  # the model's tests that say nothing of single rows
    duplicates: int
    too_long: int
    estimate: Estimate
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "training_file": str(self.training_path),
                "validation_file": str(self.validation_path) if self.validation_path else None, "rows": self.rows,
                "answered": self.answered, "matched": self.matched, "failed_tests": self.failed_tests,
                "not_row_level_tests": self.not_row_level, "duplicates": self.duplicates, "too_long": self.too_long,
                **self.estimate.as_dict(), "notes": [*self.notes, *self.estimate.notes]}


def export_finetune(project: Project, model: str, output: Path, console: Console, *, where: str | None = None,
                    min_eval_score: float | None = None, validation_share: float = 0.1,
                    validation_output: Path | None = None, base_model: str | None = None,
                    epochs: int | None = None) -> Export:
    node = project.nodes.get(model)
    if node is None or not node.is_llm:
        llm = [n for n, x in project.nodes.items() if x.is_llm]
        raise ConfigError(f"`{model}` is not an LLM model of this project.{did_you_mean(model, llm)}",
                          hint=f"LLM models: {', '.join(llm) or 'none'}.")
    not_on_spark(project, "Fine-tuning")
    spec = build_spec(project, node)
    limits = Limits.of(prices(project), base_model or spec.model)
    validation_path = validation_output or output.with_name(f"{output.stem}.validation{output.suffix}")
    config = project.target.warehouse
    if config.type == "duckdb" and (config.path == ":memory:" or not (project.dir / config.path).is_file()):
        raise ConfigError(f"`{model}` has not been built on target `{project.target_name}`",
                          hint=f"Run `llmt run -s {model}` (and `llmt test`) first.")
    wh = open_target_warehouse(config, project.dir, console, read_only=True, target=project.target_name,
                               application=application_name(project))
    try:
        table = wh.relation(project.schema, model)
        if wh.relation_kind(project.schema, model) is None:
            raise ConfigError(f"`{model}` has not been built yet", hint=f"Run `llmt run -s {model}` first.")
        if min_eval_score is not None:
            _check_eval(wh, model, spec.template_hash, min_eval_score)
        rows = int(wh.scalar(f"SELECT count(*) FROM {table}") or 0)
        answered = count_answered(wh, table, None)
        try:
            matched = count_answered(wh, table, where)
        except DatabaseError as exc:
            raise UsageError(f"--where was rejected: {exc.detail.splitlines()[0]}", hint="Write a SQL condition on "
                             "the model's columns, e.g. --where \"score >= 7\".") from None
        failed, ignored, excluded = _failing_tests(wh, project, model, node.unique_key, table, where)
        result = Export(model, output, None, rows, answered, matched, failed, ignored, 0, 0,
                        estimate(limits, Tally(), Tally(), epochs))
        render = PromptRenderer(spec.prompt).row_renderer(spec.columns)
        count = counter(limits.model).count
        training, validation = Tally(), Tally()
        examples = ((str(r[0]), example(*render(r[1:-1]), str(r[-1])))
                    for r in wh.stream(exported_sql(wh, table, spec.columns, where, excluded)))
        with _writing(output) as train_file, _writing(validation_path) as valid_file:
            for key, data, repeated in unique(examples):
                tokens = count(data["messages"])
                if repeated or (limits.example_tokens is not None and tokens > limits.example_tokens):
                    result.duplicates += repeated
                    result.too_long += not repeated
                    continue
                chosen = in_validation(key, validation_share)
                (valid_file if chosen else train_file).write(line(data))
                (validation if chosen else training).add(tokens, limits.example_tokens)
            if training.examples < MIN_EXAMPLES:
                raise NodeError(
                    f"only {training.examples} training example(s) from `{model}` ({_summary(result, validation)}); "
                    f"a fine-tuning job needs at least {MIN_EXAMPLES}: nothing was written",
                    where=node.rel_path, hint="Answer more rows, widen --where, or lower --validation-share.")
    finally:
        wh.close()
    if not validation.examples:
        validation_path.unlink()
        result.notes.append("no example fell in the validation split: no validation file was written")
    result.validation_path = validation_path if validation.examples else None
    result.estimate = estimate(limits, training, validation, epochs)
    _report_export(console, result)
    return result


def _check_eval(wh: Warehouse, model: str, template_hash: str, minimum: float) -> None:
    scores = latest_scores(wh, model, template_hash)
    if scores is None:
        raise UsageError(f"--min-eval-score: the current prompt of `{model}` has not been evaluated",
                         hint=f"Run `llmt eval -s {model}` first (it scores the labelled examples in tests/evals/).")
    low = [(f, m, v) for f, m, v in scores if v is None or v < minimum]
    if not scores or low:
        shown = "; ".join(f"{f} {m} {'-' if v is None else f'{v:.3f}'}" for f, m, v in low) or "no score"
        raise NodeError(f"the latest eval of `{model}` scored below --min-eval-score {minimum:g} ({shown}): "
                        "nothing was exported", hint="Improve the prompt and run `llmt eval` again.")


def _failing_tests(wh: Warehouse, project: Project, model: str, unique_key: list[str], table: str,
                   where: str | None) -> tuple[dict[str, int], list[str], list[str]]:
    """Per test of the model that names rows: how many of the rows otherwise exported it fails on; the tests that
    name none; the conditions that leave those rows out."""
    failed: dict[str, int] = {}
    ignored: list[str] = []
    conditions: list[str] = []
    for test in collect_tests(project):
        if model not in test.depends_on and test.attached != model:
            continue
        try:
            condition = failing_rows_predicate(wh, failing_rows_sql(wh, project, test), unique_key, test.kind,
                                               test.column, test.config.where)
            if condition is None:
                ignored.append(test.name)
                continue
            failed[test.name] = count_answered(wh, table, where, condition)
        except DatabaseError as exc:
            raise NodeError(f"test `{test.name}` of `{model}` could not run: {exc.detail.splitlines()[0]}",
                            where=test.where, hint="`llmt test` shows it; build what it reads first.") from None
        conditions.append(condition)
    return failed, ignored, conditions


@contextmanager
def _writing(path: Path) -> Iterator[IO[str]]:
    """A file written whole or not at all (a temporary file renamed over ``path`` when the block ends well)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            yield handle
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _summary(result: Export, validation: Tally) -> str:
    left = sum(result.failed_tests.values())
    return (f"{result.rows} rows, {result.answered} answered, {result.matched} matching --where, {left} failing a "
            f"test, {result.duplicates} duplicate(s), {result.too_long} too long, {validation.examples} for validation")


def _report_export(console: Console, result: Export) -> None:
    if console.json_output:
        console.json(result.as_dict())
        return
    e = result.estimate
    console.info(f"Exported {e.training.examples} training example(s) to {result.training_path}"
                 + (f" and {e.validation.examples} validation example(s) to {result.validation_path}"
                    if result.validation_path else "") + f" from `{result.model}`: {_summary(result, e.validation)}.")
    for name, n in result.failed_tests.items():
        if n:
            console.info(f"  left out: {n} row(s) failing test `{name}`")
    if result.not_row_level:
        console.info(f"  not used to choose rows (they name no row): {', '.join(result.not_row_level)}")
    cost = "no estimate" if e.usd is None else f"about ${e.usd:.4f}"
    console.info(f"Training on {e.base_model}: {e.training.tokens} tokens in the training file x {e.epochs} epoch(s)"
                 f"{' (OpenAI’s auto)' if e.epochs_auto else ''} = {e.training_tokens} training tokens, {cost}.")
    for note in [*result.notes, *e.notes]:
        console.warn(note)


# -- jobs -------------------------------------------------------------------------------------------------


def submit_finetune(project: Project, training: Path, console: Console, *, model: str,
                    validation: Path | None = None, suffix: str | None = None, epochs: int | None = None) -> JobRow:
    """Check the files, record the submission, upload them and create the job (or go on with an earlier
    submission of the same files that did not get as far)."""
    not_on_spark(project, "Fine-tuning")
    if validation is None:
        beside = training.with_name(f"{training.stem}.validation{training.suffix}")
        validation = beside if beside.is_file() else None
    limits = Limits.of(prices(project), model)
    tally = check_file(training, limits, minimum=MIN_EXAMPLES)
    checked = check_file(validation, limits, minimum=1) if validation is not None else Tally()
    cost = estimate(limits, tally, checked, epochs)
    shas = _sha256(training), _sha256(validation) if validation is not None else None
    wh = open_warehouse(project, console)
    provider = project.target.provider
    tuner = make_finetuner(provider.type, provider.options(), project_dir=project.dir, target_dir=project.target_dir)
    try:
        jobs = FineTuneJobs(wh)
        done = [j for j in jobs.jobs() if j.job_id and j.training_sha256 == shas[0] and j.base_model == model
                and j.suffix == suffix and j.status not in ("failed", "cancelled")]
        if done:
            raise UsageError(f"{training} was submitted already to {model}: job {done[-1].job_id} "
                             f"({done[-1].status})", hint="`llmt finetune status` follows it; give another "
                             "--suffix to train another model on the same data.")
        job = jobs.unfinished(shas[0], shas[1], model, suffix)
        resumed = job is not None
        if job is None:
            job = JobRow(f"ft-{new_run_id()}", model, suffix, str(training), str(validation) if validation else None,
                         shas[0], shas[1], None, None, None, "written", None, None, cost.usd, None)
            jobs.record(job)
        if job.training_file_id is None:
            wh.release()  # never hold the database while a provider works
            file_id = tuner.upload(training)
            crash_point("after_ft_upload")
            jobs.update(job, training_file_id=file_id)
        if validation is not None and job.validation_file_id is None:
            wh.release()
            jobs.update(job, validation_file_id=tuner.upload(validation))
        jobs.update(job, status="uploaded")
        wh.release()
        found = tuner.find_job(job.submission) if resumed else None
        info = found or tuner.create_job(model=model, training_file=str(job.training_file_id),
                                         validation_file=job.validation_file_id, suffix=suffix, epochs=epochs,
                                         submission=job.submission)
        crash_point("after_ft_create")
        jobs.update(job, job_id=info.job_id, status=info.status, fine_tuned_model=info.fine_tuned_model,
                    trained_tokens=info.trained_tokens, error=info.error)
    finally:
        tuner.close()
        wh.close()
    if console.json_output:
        console.json({**_job_dict(job), **cost.as_dict()})
    else:
        money = "no estimate" if cost.usd is None else f"about ${cost.usd:.4f}"
        console.info(f"{'Resumed' if resumed else 'Submitted'} submission {job.submission}: fine-tuning job "
                     f"{job.job_id} ({job.status}) of {model} on {tally.examples} example(s), "
                     f"{cost.training_tokens} training tokens ({money}). `llmt finetune status` follows it.")
    return job


def finetune_status(project: Project, console: Console) -> list[JobRow]:
    """Every recorded submission; the jobs not finished are asked for their status (and recorded)."""
    not_on_spark(project, "Fine-tuning")
    wh = open_warehouse(project, console)
    provider = project.target.provider
    tuner = make_finetuner(provider.type, provider.options(), project_dir=project.dir, target_dir=project.target_dir)
    try:
        jobs = FineTuneJobs(wh)
        rows = jobs.jobs()
        for job in rows:
            if job.job_id is not None and job.status not in ("succeeded", "failed", "cancelled"):
                wh.release()
                info = tuner.retrieve(job.job_id)
                jobs.update(job, status=info.status, fine_tuned_model=info.fine_tuned_model,
                            trained_tokens=info.trained_tokens, error=info.error)
    finally:
        tuner.close()
        wh.close()
    if console.json_output:
        console.json([_job_dict(j) for j in rows])
        return rows
    if not rows:
        console.info("No fine-tuning jobs yet: `llmt export finetune <model> -o train.jsonl`, then "
                     "`llmt finetune submit train.jsonl --model <base model>`.")
        return rows
    console.table(f"Fine-tuning jobs (target `{project.target_name}`)",
                  ["submission", "job", "base model", "status", "fine-tuned model", "trained tokens", "estimate $"],
                  [[j.submission, j.job_id or "(not created: submit again)", j.base_model, j.status,
                    j.fine_tuned_model or "", j.trained_tokens if j.trained_tokens is not None else "",
                    "" if j.estimate_usd is None else f"{j.estimate_usd:.4f}"] for j in rows])
    for job in rows:
        if job.error:
            console.warn(f"{job.job_id}: {job.error}")
        if job.fine_tuned_model:
            window = prices(project).base(job.fine_tuned_model)
            console.info(f"Use {job.fine_tuned_model} as a model's `model`, with its prices (fine-tuned models are "
                         "priced apart; see OpenAI's pricing page) under `llm: prices:` in project.yml:\n"
                         f"  llm:\n    prices:\n      \"{job.fine_tuned_model}\": {{input: <USD>, cached_input: <USD>, "
                         f"output: <USD>, context_window: {window.context_window if window else '<tokens>'}}}")
    return rows


def _job_dict(job: JobRow) -> dict[str, Any]:
    return {"submission": job.submission, "job_id": job.job_id, "base_model": job.base_model, "suffix": job.suffix,
            "status": job.status, "fine_tuned_model": job.fine_tuned_model, "trained_tokens": job.trained_tokens,
            "estimate_usd": job.estimate_usd, "error": job.error, "training_file": job.training_path,
            "validation_file": job.validation_path}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
