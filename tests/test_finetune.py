"""The learning loop: `llmt export finetune` (training data from validated answers that pass the model's tests),
`llmt finetune submit` and `llmt finetune status` (against the emulator through the openai SDK, and offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmt.finetune_data import default_epochs
from llmt.tokens import RequestCounter
from tests.conftest import Project, on_postgres, project_yml
from tests.emulator import Emulator, fixtures

emulator = fixtures.emulator
MakeProject = Callable[[dict[str, str]], Project]

WORDS = ["battery", "screen", "cable", "sound", "delivery", "price", "charger", "strap", "app", "box"]
REVIEWS = "review_id,product,review_text\n" + "".join(
    f"{i},{'Phone' if i % 2 else 'Cable'},The {WORDS[i % 10]} {'broke' if i % 3 else 'works'} after {i} days\n"
    for i in range(1, 41)) + "41,Phone,The screen broke after 1 days\n"  # the same request as row 1
PROJECT = project_yml("max_retries: 0, timeout: 10", """
    prices:
      tiny-base: {input: 1.0, cached_input: 1.0, output: 1.0, training: 2.0, training_example_tokens: 75}
    """)


@pytest.fixture
def answered(make_project: MakeProject) -> Project:
    project = make_project({"data/reviews.csv": REVIEWS, "project.yml": PROJECT})
    assert project.llmt("run").code == 0
    return project


@pytest.fixture(params=["duckdb", "postgres"])
def answered_anywhere(request: pytest.FixtureRequest, make_project: MakeProject) -> Project:
    """`answered` on DuckDB's file, or on a database of the PostgreSQL server (schema `main` on both)."""
    project = make_project({"data/reviews.csv": REVIEWS, "project.yml": PROJECT})
    if request.param == "postgres":
        on_postgres(project, request.getfixturevalue("pg"), schema="main")
    assert project.llmt("run").code == 0
    return project


def export(project: Project, *args: str, code: int = 0) -> dict[str, Any]:
    got = project.llmt("export", "finetune", "insights", "-o", str(project.root / "out" / "train.jsonl"),
                       "--output", "json", *args)
    assert got.code == code, got.err
    return json.loads(got.out) if code == 0 else {"err": got.err}


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def requests_sent(project: Project) -> dict[str, list[dict[str, str]]]:
    """Each request key's messages, as llmt sent them (the batch input files)."""
    out = {}
    for path in (project.root / "target/batches/dev/insights").glob("*.jsonl"):
        if "." not in path.stem:
            for line in lines(path):
                out[line["custom_id"]] = line["body"]["messages"]
    return out


def test_export_writes_each_answered_request_with_its_answer_checked_counted_and_priced(answered: Project) -> None:
    got = export(answered, "--validation-share", "0.25")
    train, valid = answered.root / "out/train.jsonl", answered.root / "out/train.validation.jsonl"
    examples = lines(train) + lines(valid)
    assert (got["training_examples"], got["validation_examples"]) == (len(lines(train)), len(lines(valid)))
    assert len(examples) == 40 and got["duplicates"] == 1 and lines(valid)  # row 41 asks what row 1 asks
    sent = requests_sent(answered)
    stored = dict(answered.query("select request_key, answer from _llmt.answers"))
    keys = {json.dumps(m, sort_keys=True): k for k, m in sent.items()}
    for ex in examples:
        *asked, reply = ex["messages"]
        key = keys[json.dumps(asked, sort_keys=True)]  # exactly the messages of a request llmt sent
        assert reply == {"role": "assistant", "content": stored[key]}
    assert [m["role"] for m in examples[0]["messages"]] == ["system", "user", "assistant"]
    # tokens counted exactly, epochs and cost as OpenAI's "auto" would bill them (gpt-4o-mini: $3.00 / 1M)
    counter = RequestCounter("gpt-4o-mini", None)
    tokens = sum(counter.count(ex["messages"]) for ex in lines(train))
    epochs = default_epochs(len(lines(train)))
    assert (got["training_file_tokens"], got["epochs"], got["training_tokens"]) == (tokens, epochs, tokens * epochs)
    assert got["estimate_usd"] == pytest.approx(tokens * epochs * 3.0e-6)
    # the split is a stable choice by request key: the same export again writes the same files
    before = train.read_bytes(), valid.read_bytes()
    export(answered, "--validation-share", "0.25")
    assert (train.read_bytes(), valid.read_bytes()) == before


def test_rows_failing_the_models_tests_or_the_where_are_left_out(answered_anywhere: Project) -> None:
    answered = answered_anywhere
    answered.write("models/insights.yml", """
        models:
          - name: insights
            columns:
              - name: sentiment
                tests:
                  - accepted_values: {values: [positive, neutral], severity: warn}
        """)
    answered.write("tests/no_short_cables.sql", "select review_id from {{ ref('insights') }} "
                                                "where product = 'Cable' and review_id < 10\n")
    got = export(answered, "--where", "review_id <= 30")
    bad = {r for (r,) in answered.query("select review_id from main.insights where sentiment not in "
                                        "('positive', 'neutral') or (product = 'Cable' and review_id < 10)")}
    kept = answered.query("select review_id, _llmt_request_key from main.insights where review_id <= 30")
    want = {k for r, k in kept if r not in bad}
    assert 0 < len(bad & {r for r, _ in kept}) < 30 and got["failed_tests"]["no_short_cables"] == 4
    sent = {json.dumps(m, sort_keys=True): k for k, m in requests_sent(answered).items()}
    exported = [json.dumps(ex["messages"][:-1], sort_keys=True) for ex in
                lines(answered.root / "out/train.jsonl") + lines(answered.root / "out/train.validation.jsonl")]
    assert {sent[m] for m in exported} == want
    assert "max_error_rate" not in json.dumps(got["not_row_level_tests"])


def test_too_few_examples_or_a_bad_where_write_nothing(answered: Project) -> None:
    got = export(answered, "--where", "review_id <= 5", code=1)
    assert "only 4 training example(s)" in got["err"] or "only 5 training example(s)" in got["err"]
    assert "at least 10" in got["err"] and not list((answered.root / "out").iterdir())  # no file, no temp file
    assert "--where was rejected" in export(answered, "--where", "no_such_column > 1", code=2)["err"]
    not_llm = answered.llmt("export", "finetune", "stg_reviews", "-o", "x.jsonl")
    assert not_llm.code == 2 and "`stg_reviews` is not an LLM model" in not_llm.err


def test_examples_over_the_base_models_limit_are_left_out(answered: Project) -> None:
    got = export(answered, "--base-model", "tiny-base", "--epochs", "2")
    assert got["too_long"] > 0 and got["largest_example_tokens"] <= 75
    assert got["estimate_usd"] == pytest.approx(got["training_file_tokens"] * 2 * 2.0e-6)


def test_min_eval_score_asks_for_an_eval_of_the_current_prompt(answered: Project) -> None:
    assert "has not been evaluated" in export(answered, "--min-eval-score", "0.5", code=2)["err"]
    answered.write("tests/evals/insights.csv", "product,review_text,expected.sentiment\n"
                   + "".join(f"Phone,The battery broke after {i} days,negative\n" for i in range(1, 6)))
    assert answered.llmt("eval", "-s", "insights").code == 0
    score = answered.query("select min(value) from _llmt.eval_metrics where metric in ('accuracy', 'macro_f1')")[0][0]
    assert "scored below --min-eval-score" in export(answered, "--min-eval-score", str(score + 0.01), code=1)["err"]
    assert export(answered, "--min-eval-score", str(score))["training_examples"] > 0


# -- jobs -------------------------------------------------------------------------------------------------


@pytest.fixture
def exported(answered: Project, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    answered.write("project.yml", PROJECT.replace("max_retries: 0,", f"max_retries: 0, base_url: "
                                                                    f"\"{emulator.base_url}\","))
    export(answered)
    return answered


def submit(project: Project, *args: str, code: int = 0) -> dict[str, Any]:
    got = project.llmt("finetune", "submit", str(project.root / "out/train.jsonl"), "--model",
                       "gpt-4o-mini-2024-07-18", "--target", "openai", "--output", "json", *args)
    assert got.code == code, got.err
    return json.loads(got.out) if code == 0 else {"err": got.err}


def test_submit_uploads_creates_the_job_and_status_follows_it(exported: Project, emulator: Emulator) -> None:
    emulator.finetuning.timing.running = 3600  # the job runs until the test moves the clock on
    job = submit(exported, "--suffix", "support")
    assert job["status"] == "validating_files" and job["job_id"].startswith("ftjob-")
    created = emulator.finetuning.created
    assert len(created) == 1 and created[0]["metadata"] == {"llmt_submission": job["submission"]}
    uploaded = {f["filename"]: f["purpose"] for f in emulator.seen.files}
    assert uploaded == {"train.jsonl": "fine-tune", "train.validation.jsonl": "fine-tune"}
    assert created[0]["validation_file"] and created[0]["suffix"] == "support"

    running = json.loads(exported.llmt("finetune", "status", "--target", "openai", "--output", "json").out)
    assert [j["status"] for j in running] == ["running"]
    emulator.advance(3600)
    done = json.loads(exported.llmt("finetune", "status", "--target", "openai", "--output", "json").out)[0]
    assert done["status"] == "succeeded" and done["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:")
    assert done["trained_tokens"] == job["training_tokens"]  # billed as estimated
    text = exported.llmt("finetune", "status", "--target", "openai")
    assert done["fine_tuned_model"] in text.out and "llm:\n    prices:" in text.err
    assert "was submitted already" in submit(exported, "--suffix", "support", code=2)["err"]


def test_the_fine_tuned_model_is_used_with_the_prices_the_user_declares(exported: Project) -> None:
    model = submit(exported)["fine_tuned_model"] or json.loads(exported.llmt(
        "finetune", "status", "--target", "openai", "--output", "json").out)[0]["fine_tuned_model"]
    exported.write("models/insights.sql", (exported.root / "models/insights.sql").read_text().replace(
        "unique_key='review_id'", f"unique_key='review_id', model='{model}'"))
    refused = exported.llmt("run", "--target", "openai")
    assert refused.code == 2 and "A fine-tuned model has prices of its own: declare them" in refused.err
    yml = (exported.root / "project.yml").read_text()
    exported.write("project.yml", yml + f"    \"{model}\": {{input: 0.3, cached_input: 0.15, output: 1.2, "
                                        "context_window: 128000}\n")
    ran = exported.run_json("--target", "openai")
    assert exported.llm_result(ran)["answered"] == 40
    assert exported.query("select distinct model from _llmt.attempts where provider = 'openai'") == [(model,)]


def test_submit_refuses_a_file_that_breaks_the_rules_before_uploading(exported: Project, emulator: Emulator) -> None:
    train = exported.root / "out/train.jsonl"
    first = train.read_text().splitlines()[0]
    train.write_text(train.read_text() + first + "\n" + '{"messages": [{"role": "user", "content": "hi"}]}\n')
    got = submit(exported, code=2)["err"]
    n = len(train.read_text().splitlines())
    assert f"train.jsonl:{n - 1}: the same example as an earlier line" in got
    assert f"train.jsonl:{n}: no assistant message" in got
    assert emulator.seen.files == [] and emulator.finetuning.created == []


@pytest.mark.parametrize("point", ["after_ft_upload", "after_ft_create"])
def test_a_killed_submit_goes_on_without_a_second_job(point: str, exported: Project, emulator: Emulator) -> None:
    command = [sys.executable, "-m", "llmt", "finetune", "submit", str(exported.root / "out/train.jsonl"), "--model",
               "gpt-4o-mini-2024-07-18", "--target", "openai", "--project-dir", str(exported.root)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMT_")}
    killed = subprocess.run(command, env={**env, "LLMT_CRASH_AT": point}, capture_output=True, text=True, timeout=60)
    assert killed.returncode == -9, killed.stderr
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert len(emulator.finetuning.created) == 1
    # one submission, which names the one job (found again by its metadata after a kill at after_ft_create)
    assert exported.query("select job_id from _llmt.finetune_jobs") == [(emulator.finetuning.created[0]["id"],)]


def test_offline_the_fake_provider_fine_tunes_at_once(answered_anywhere: Project) -> None:
    answered = answered_anywhere
    export(answered)
    got = answered.llmt("finetune", "submit", str(answered.root / "out/train.jsonl"), "--model", "gpt-4o-mini",
                        "--output", "json")
    assert got.code == 0, got.err
    job = json.loads(got.out)
    assert job["status"] == "succeeded" and job["fine_tuned_model"].startswith("ft:gpt-4o-mini:llmt-fake:")
    status = json.loads(answered.llmt("finetune", "status", "--output", "json").out)
    assert [j["job_id"] for j in status] == [job["job_id"]]


def test_the_emulator_fails_a_job_whose_training_file_breaks_the_rules(emulator: Emulator, tmp_path: Path) -> None:
    client = emulator.client(max_retries=0)
    path = tmp_path / "small.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n' * 3)
    file_id = client.files.create(file=(path.name, path.read_bytes()), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file_id,
                                         metadata={"llmt_submission": "s1"})
    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed" and failed.error is not None and "at least 10" in str(failed.error.message)
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"llmt_submission": "s1"})] == [job.id]
    assert list(client.fine_tuning.jobs.list(metadata={"llmt_submission": "other"})) == []


@pytest.mark.parametrize("command", [["export"], ["export", "finetune"], ["finetune"], ["finetune", "submit"],
                                     ["finetune", "status"]])
def test_the_new_commands_have_help_with_an_example(command: list[str]) -> None:
    got = subprocess.run([sys.executable, "-m", "llmt", *command, "--help"], capture_output=True, text=True,
                         timeout=60)
    assert got.returncode == 0 and "Example" in got.stdout and "llmt " in got.stdout, got.stdout + got.stderr


def test_a_create_whose_answer_is_lost_is_found_again_not_repeated(exported: Project, emulator: Emulator) -> None:
    emulator.faults.drop_after_commit_next(1, path="/v1/fine_tuning/jobs", method="POST")  # created, then hung up
    job = submit(exported)
    assert len(emulator.finetuning.created) == 1 and job["job_id"] == emulator.finetuning.created[0]["id"]
