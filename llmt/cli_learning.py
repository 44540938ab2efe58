"""The learning loop's commands: `llmt export finetune` and `llmt finetune submit/status` (llmt/finetune.py does
the work)."""

from __future__ import annotations

from pathlib import Path

import click

from llmt.cli_options import load, make_console, output_option, project_options


@click.group()
def export() -> None:
    """Export data from the project's models (fine-tuning data).

    \b
    Example:
      llmt export finetune review_insights -o train.jsonl
    """


@export.command("finetune")
@project_options
@click.argument("model")
@click.option("-o", "--output-file", "output_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The training file to write (JSONL), e.g. -o train.jsonl; the validation split goes beside it "
              "(train.validation.jsonl).")
@click.option("--where", default=None, metavar="SQL",
              help="Only rows meeting this SQL condition on the model's columns, e.g. --where \"score >= 7\".")
@click.option("--min-eval-score", type=click.FloatRange(0, 1), default=None, metavar="X",
              help="Export only when the latest `llmt eval` of the current prompt scored at least X on every "
              "accuracy-like metric, e.g. --min-eval-score 0.8.")
@click.option("--validation-share", type=click.FloatRange(0, 0.5), default=0.1, show_default=True,
              help="Share of the examples in the validation file (chosen by request key), e.g. 0.2.")
@click.option("--validation-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where the validation split goes (default: beside the training file).")
@click.option("--base-model", default=None,
              help="The model to fine-tune, for its limits and training price (default: the model's own), e.g. "
              "--base-model gpt-4o-mini-2024-07-18.")
@click.option("--epochs", type=click.IntRange(1, 50), default=None,
              help="Epochs for the cost estimate (default: what OpenAI's auto would choose), e.g. --epochs 3.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: machine-readable summary on stdout.")
def export_finetune(project_dir: Path, target: str | None, vars_: str | None, model: str, output_file: Path,
                    where: str | None, min_eval_score: float | None, validation_share: float,
                    validation_file: Path | None, base_model: str | None, epochs: int | None, output: str) -> None:
    """Write chat-format fine-tuning data from MODEL's validated answers that pass its tests: a training and a
    validation file, checked against the fine-tuning format rules, with an exact token count and a training cost
    estimate.

    \b
    Examples:
      llmt export finetune review_insights -o train.jsonl
      llmt export finetune review_insights --where "score >= 7" --min-eval-score 0.8 -o train.jsonl
    """
    from llmt.finetune import export_finetune as export_data

    export_data(load(project_dir, target, vars_), model, output_file, make_console(output), where=where,
                min_eval_score=min_eval_score, validation_share=validation_share, validation_output=validation_file,
                base_model=base_model, epochs=epochs)


@click.group()
def finetune() -> None:
    """Fine-tuning jobs on exported data: submit one, follow them.

    \b
    Example:
      llmt finetune submit train.jsonl --model gpt-4o-mini-2024-07-18 && llmt finetune status
    """


@finetune.command("submit")
@project_options
@output_option
@click.argument("training_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "base_model", required=True,
              help="The model to fine-tune, e.g. --model gpt-4o-mini-2024-07-18.")
@click.option("--validation-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The validation file (default: TRAINING_FILE's .validation.jsonl beside it, when there is one).")
@click.option("--suffix", default=None, help="A name for the fine-tuned model, e.g. --suffix support.")
@click.option("--epochs", type=click.IntRange(1, 50), default=None,
              help="Training epochs (default: the provider's choice), e.g. --epochs 3.")
def finetune_submit(project_dir: Path, target: str | None, vars_: str | None, output: str, training_file: Path,
                    base_model: str, validation_file: Path | None, suffix: str | None, epochs: int | None) -> None:
    """Check TRAINING_FILE (and its validation file) against the fine-tuning rules, upload them and create a
    fine-tuning job with the target's provider; the job is recorded in the state store. Run again after a
    failure: it goes on where it stopped and never creates a job twice.

    \b
    Example:
      llmt finetune submit train.jsonl --model gpt-4o-mini-2024-07-18 --suffix support --target openai
    """
    from llmt.finetune import submit_finetune

    submit_finetune(load(project_dir, target, vars_), training_file, make_console(output), model=base_model,
                    validation=validation_file, suffix=suffix, epochs=epochs)


@finetune.command("status")
@project_options
@output_option
def finetune_status(project_dir: Path, target: str | None, vars_: str | None, output: str) -> None:
    """Show the fine-tuning jobs submitted from this project (asking the provider about unfinished ones), and
    how to use a fine-tuned model.

    \b
    Example:
      llmt finetune status --output json
    """
    from llmt.finetune import finetune_status as job_status

    job_status(load(project_dir, target, vars_), make_console(output))
