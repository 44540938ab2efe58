"""A warehouse written by the previous llmt (commit PREVIOUS, run from its own source tree as a subprocess)
opened by this one: no stored answer is orphaned by the new request keys, and no answer of the fake
provider is served to the real one.

The previous llmt keyed requests without the provider, so a project's `dev` (fake) and `openai` targets,
which shared one database, shared their answers: each row had one answer, from whichever provider asked
first. The OpenAI emulator pins a distinct "real" answer for every review, so that real answers differ from
the synthetic ones the fake provider makes (as a real model's do)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from llmt.providers.synth import FaultPlan, Pin
from tests.conftest import BASE_FILES
from tests.emulator import Emulator, fixtures

emulator = fixtures.emulator

PREVIOUS = "c4c8be3"  # the last commit that keyed requests with version 1 (no provider kind)
# the last commit that keyed requests with version 2 (DuckDB's JSON of the input columns, not the canonical text)
PREVIOUS_V2 = "8acaa1c"
REPO = Path(__file__).resolve().parent.parent

REVIEWS = ["Great phone", "Battery died", "Screen cracked", "Fast delivery", "Works as described",
           "Too expensive", "Stopped charging", "Cable frayed"]
# who answered each review under the previous llmt, and how
OPENAI_BATCH, FAKE_BATCH, OPENAI_REALTIME, FAKE_REALTIME = {1, 2}, {3, 4}, {5, 6}, {7, 8}
PINNED_BY_FAKE = 8  # the dev target's fixtures pin the fake answer of this review

PROJECT_YML = """
    name: demo
    target: dev
    targets:
      dev:
        warehouse: {path: demo.duckdb}
        provider: {type: fake, fixtures: pins.yml}
      openai:
        warehouse: {path: demo.duckdb}
        provider: {type: openai, poll_interval: 0.01, max_retries: 2}
    llm:
      model: gpt-4o-mini
      temperature: 0
      max_attempts: 2
    """
LAST_RUN_ATTEMPTS = ("select count(*) from _llmt.attempts "
                     "where run_id = (select arg_max(run_id, started_at) from _llmt.runs)")
FAKE_PIN = {"sentiment": "negative", "score": 2, "issues": ["frayed"], "competitor": None}


def real_answer(review: int) -> dict[str, Any]:
    return {"sentiment": "neutral", "score": 1 + review % 10, "issues": [f"real {review}"], "competitor": None}


def unpack(commit: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A previous llmt's source tree (tests/legacy/), to run with PYTHONPATH pointing at it."""
    root = tmp_path_factory.mktemp(f"llmt-{commit}")
    with tarfile.open(REPO / "tests" / "legacy" / f"llmt-{commit}.tar.gz") as tar:
        tar.extractall(root, filter="data")
    return root


@pytest.fixture(scope="module")
def previous_llmt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack(PREVIOUS, tmp_path_factory)


@pytest.fixture
def real_answers(emulator: Emulator) -> Iterator[Emulator]:
    emulator.faults.lines = FaultPlan(pinned=[Pin(text, real_answer(i))
                                              for i, text in enumerate(REVIEWS, start=1)])
    yield emulator


class Upgrade:
    """The project, run by either llmt against the emulator."""

    def __init__(self, root: Path, previous: Path, emu: Emulator, old_key: str = "schema=") -> None:
        self.root, self.previous, self.emu = root, previous, emu
        self.old_key = old_key  # what the previous llmt named the answer schema's key
        files = {**BASE_FILES, "project.yml": PROJECT_YML,
                 "pins.yml": f"- {{contains: '{REVIEWS[PINNED_BY_FAKE - 1]}', answer: {json.dumps(FAKE_PIN)}}}\n"}
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")

    def reviews(self, n: int) -> None:
        (self.root / "data" / "reviews.csv").write_text("review_id,product,review_text\n" + "".join(
            f"{i},Phone,{text}\n" for i, text in enumerate(REVIEWS[:n], start=1)), encoding="utf-8")

    def run(self, *args: str, previous: bool = False, code: int = 0) -> subprocess.CompletedProcess[str]:
        model = self.root / "models" / "insights.sql"
        new, old = "output_schema=", self.old_key
        text = model.read_text(encoding="utf-8").replace(new, old)
        model.write_text(text if previous else text.replace(old, new), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLMT_"))}
        env.update(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=self.emu.base_url,
                   PYTHONPATH=str(self.previous if previous else REPO))
        done = subprocess.run([sys.executable, "-m", "llmt", "run", "--project-dir", str(self.root), *args],
                              env=env, capture_output=True, text=True, timeout=120, cwd=self.root)
        assert done.returncode == code, done.stdout + done.stderr
        return done

    def run_json(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.run("--output", "json", *args).stdout)
        return next(r for r in data["results"] if r["name"] == "insights")["llm"]  # type: ignore[no-any-return]

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.root / "demo.duckdb"), read_only=True) as conn:
            return conn.execute(sql).fetchall()

    def shown(self) -> dict[int, tuple[str, str, dict[str, Any]]]:
        """review_id -> (status, provider kind, answer) of what the output table shows."""
        rows = self.query("select i.review_id, i._llmt_status, a.provider, a.answer from main.insights i "
                          "left join _llmt.answers a on a.request_key = i._llmt_answer_key")
        return {r[0]: (r[1], r[2], json.loads(r[3])) for r in rows}

    def sent_since(self, batches: int) -> set[str]:
        """The reviews in the batches created after the first ``batches``."""
        texts = set()
        for batch in self.emu.seen.batches[batches:]:
            for line in self.emu.file_content(batch["input_file_id"]).decode().splitlines():
                user = json.loads(line)["body"]["messages"][-1]["content"]
                texts.add(user.split("Review: ")[1].strip())
        return texts


@pytest.fixture
def upgrade(tmp_path: Path, previous_llmt: Path, real_answers: Emulator) -> Upgrade:
    return Upgrade(tmp_path / "demo", previous_llmt, real_answers)


def legacy_warehouse(up: Upgrade) -> dict[int, dict[str, Any]]:
    """Build the shared warehouse with the previous llmt; returns each review's stored answer."""
    steps = [(OPENAI_BATCH, ["--target", "openai"]), (FAKE_BATCH, []),
             (OPENAI_REALTIME, ["--target", "openai", "--mode", "realtime"]), (FAKE_REALTIME, ["--mode", "realtime"])]
    for reviews, args in steps:
        up.reviews(max(reviews))
        up.run(*args, previous=True)
    legacy = {r[0]: json.loads(r[1]) for r in up.query(
        "select i.review_id, a.answer from main.insights i join _llmt.answers a on a.request_key = i._llmt_answer_key "
        "where i._llmt_status = 'ok'")}
    assert len(legacy) == len(REVIEWS)
    assert all(legacy[i] == real_answer(i) for i in OPENAI_BATCH | OPENAI_REALTIME)
    assert all(legacy[i] != real_answer(i) for i in FAKE_BATCH | FAKE_REALTIME)
    assert legacy[PINNED_BY_FAKE] == FAKE_PIN
    assert up.emu.seen.realtime == len(OPENAI_REALTIME) and len(up.emu.seen.batches) == 1
    return legacy


def test_an_upgraded_shared_warehouse_serves_each_provider_only_its_own_answers(upgrade: Upgrade) -> None:
    legacy = legacy_warehouse(upgrade)
    realtime, batches = upgrade.emu.seen.realtime, len(upgrade.emu.seen.batches)

    # the real provider is asked exactly for the reviews that only the fake one had answered
    real = upgrade.run_json("--target", "openai")
    assert real["requests"] == len(FAKE_BATCH | FAKE_REALTIME) and real["cached"] == len(OPENAI_BATCH | OPENAI_REALTIME)
    assert upgrade.sent_since(batches) == {REVIEWS[i - 1] for i in FAKE_BATCH | FAKE_REALTIME}
    assert upgrade.emu.seen.realtime == realtime
    assert upgrade.shown() == {i: ("ok", "openai", real_answer(i)) for i in range(1, len(REVIEWS) + 1)}
    # the real answers kept were not paid again: this run's attempts are the new requests only
    assert upgrade.query(LAST_RUN_ATTEMPTS) == [(len(FAKE_BATCH | FAKE_REALTIME),)]

    # the fake provider answers what only the real one had answered, and keeps its own answers
    fake = upgrade.run_json()
    assert fake["requests"] == len(OPENAI_BATCH | OPENAI_REALTIME)
    shown = upgrade.shown()
    assert {i: (s, p) for i, (s, p, _) in shown.items()} == {i: ("ok", "fake") for i in range(1, len(REVIEWS) + 1)}
    assert all(shown[i][2] == legacy[i] for i in FAKE_BATCH | FAKE_REALTIME)
    assert all(shown[i][2] != real_answer(i) for i in OPENAI_BATCH | OPENAI_REALTIME)

    # from now on neither target sends anything
    assert upgrade.run_json()["requests"] == 0
    assert upgrade.run_json("--target", "openai")["requests"] == 0
    assert len(upgrade.emu.seen.batches) == batches + 1 and upgrade.emu.seen.realtime == realtime
    # every attempt's provider is known, the legacy realtime ones included; times are instants
    assert upgrade.query("select count(*) from _llmt.attempts where provider is null") == [(0,)]
    assert upgrade.query("select data_type from information_schema.columns where table_name = 'answers' "
                         "and column_name = 'answered_at'") == [("TIMESTAMP WITH TIME ZONE",)]


def test_batches_the_previous_llmt_left_open_are_collected_before_the_answers_are_re_keyed(upgrade: Upgrade) -> None:
    upgrade.reviews(4)
    upgrade.emu.timing.in_progress = 3600.0
    upgrade.run("--target", "openai", "--no-wait", previous=True)
    assert len(upgrade.emu.seen.batches) == 1

    # the fake target cannot re-key yet: the open batch's answers would come back under the old keys
    refused = upgrade.run(code=1)
    assert "still has batches sent by an earlier llmt (1 of provider openai)" in refused.stdout + refused.stderr
    upgrade.emu.advance(3600.0)
    real = upgrade.run_json("--target", "openai")
    assert real["requests"] == 0 and len(upgrade.emu.seen.batches) == 1  # collected, re-keyed, not sent again
    assert upgrade.shown() == {i: ("ok", "openai", real_answer(i)) for i in range(1, 5)}
    assert upgrade.run_json()["requests"] == 4  # the fake target asks its own provider


def test_escalated_answers_are_re_keyed_too(upgrade: Upgrade) -> None:
    schema = {"type": "object", "properties": {"label": {"type": "string"},
                                               "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
              "required": ["label", "confidence"]}
    (upgrade.root / "schemas" / "analysis.json").write_text(json.dumps(schema), encoding="utf-8")
    (upgrade.root / "pins.yml").write_text("[]\n", encoding="utf-8")
    yml = upgrade.root / "project.yml"
    yml.write_text(yml.read_text().replace("max_attempts: 2", "max_attempts: 2\n  escalate: {model: gpt-4.1, "
                                           "when_field: {confidence: \"< 0.6\"}, max_share: 1.0}"), encoding="utf-8")
    upgrade.reviews(len(REVIEWS))
    upgrade.run(previous=True)
    before = dict(upgrade.query("select _llmt_model, count(*) from main.insights group by 1"))
    assert 0 < before.get("gpt-4.1", 0) < len(REVIEWS)

    rekeyed = upgrade.run()
    assert f"insights: {len(REVIEWS) + before['gpt-4.1']} stored answer(s) re-keyed" in rekeyed.stderr
    assert dict(upgrade.query("select _llmt_model, count(*) from main.insights group by 1")) == before
    assert upgrade.query(LAST_RUN_ATTEMPTS) == [(0,)]  # neither model was asked again


def test_an_upgrade_of_the_request_key_to_the_canonical_input_hash_orphans_no_answer(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, real_answers: Emulator) -> None:
    """A warehouse whose answers the llmt before the canonical key (v2) stored, for both targets: after the
    upgrade neither target asks for anything again, and each shows its own provider's answers."""
    up = Upgrade(tmp_path / "demo", unpack(PREVIOUS_V2, tmp_path_factory), real_answers, old_key="output_schema=")
    up.reviews(len(REVIEWS))
    up.run(previous=True)
    up.run("--target", "openai", previous=True)
    batches = len(up.emu.seen.batches)
    legacy = {r[0]: (r[1], json.loads(r[2])) for r in up.query(
        "select i.review_id, a.provider, a.answer from main.insights i join _llmt.answers a "
        "on a.request_key = i._llmt_answer_key")}
    assert {i: p for i, (p, _) in legacy.items()} == dict.fromkeys(range(1, len(REVIEWS) + 1), "openai")

    for args, kind in (([], "fake"), (["--target", "openai"], "openai")):
        result = up.run_json(*args)
        assert result["requests"] == 0 and result["cached"] == len(REVIEWS), kind  # nothing asked again: $0
        shown = up.shown()
        assert {i: (s, p) for i, (s, p, _) in shown.items()} == {i: ("ok", kind) for i in range(1, len(REVIEWS) + 1)}
    assert all(shown[i][2] == real_answer(i) for i in range(1, len(REVIEWS) + 1))
    assert len(up.emu.seen.batches) == batches and up.query(LAST_RUN_ATTEMPTS) == [(0,)]
