"""The support example (examples/support): tickets and knowledge base articles embedded, the top 3 articles per
ticket retrieved in SQL, replies citing them, a test that every cited article exists, and fine-tuning data from
the replies that pass; end to end on the fake provider and, through the openai SDK, on the emulator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import Project
from tests.emulator import Emulator, fixtures

emulator = fixtures.emulator
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "support"
TICKETS = 40


@pytest.fixture
def support(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Project:
    return Project(Path(shutil.copytree(EXAMPLE, tmp_path / "support")), capsys, db="support.duckdb")


def build(project: Project, *args: str) -> dict[str, int]:
    got = project.llmt("build", "--output", "json", *args)
    assert got.code == 0, got.err
    data = json.loads(got.out)
    return {r["name"]: r["llm"]["requests"] for r in data["nodes"] if r.get("llm")}


def check_the_whole_loop(project: Project, target: str) -> None:
    """Build, retrieval, the citation test, the export; a re-run sends nothing."""
    sent = build(project, "--target", target)
    assert sent == {"kb_embeddings": 12, "ticket_embeddings": TICKETS, "ticket_answers": TICKETS}
    top = dict(project.query("select ticket_id, retrieved_ids[1] from main.ticket_context"))
    assert len(top) == TICKETS
    # retrieval is meaningful on synthetic embeddings too: tickets find the article about their topic
    assert (top["T-1001"], top["T-1003"], top["T-1019"], top["T-1040"]) == ("KB-001", "KB-003", "KB-009", "KB-012")
    assert project.query("select count(*) from main.ticket_answers where _llmt_status = 'ok'") == [(TICKETS,)]
    citing_retired = {t for (t,) in project.query(
        "select ticket_id from main.ticket_answers where list_contains(cited_article_ids, 'KB-013')")}
    assert citing_retired, "the example's citation test should catch a few replies"
    out = project.root / "target" / "train.jsonl"
    got = project.llmt("export", "finetune", "ticket_answers", "-o", str(out), "--target", target,
                       "--output", "json")
    assert got.code == 0, got.err
    summary = json.loads(got.out)
    assert {t: n for t, n in summary["failed_tests"].items() if n} == {"cited_articles_exist": len(citing_retired)}
    examples = [json.loads(line) for path in (out, out.with_name("train.validation.jsonl"))
                for line in path.read_text().splitlines()]
    assert len(examples) == TICKETS - len(citing_retired) == summary["training_examples"] + \
        summary["validation_examples"]
    replies = [json.loads(ex["messages"][-1]["content"]) for ex in examples]
    assert all("KB-013" not in r["cited_article_ids"] for r in replies)
    assert build(project, "--target", target) == {"kb_embeddings": 0, "ticket_embeddings": 0, "ticket_answers": 0}


def test_the_support_example_runs_offline_on_the_fake_provider(support: Project) -> None:
    check_the_whole_loop(support, "dev")
    # an edited article: embedded again alone; the replies whose retrieved context changed are asked again
    before = dict(support.query("select ticket_id, context from main.ticket_context"))
    path = support.root / "data" / "kb_articles.jsonl"
    articles = [json.loads(line) for line in path.read_text().splitlines()]
    articles[1]["body"] = "An offline printer: restart it and the router, and check the network cable."
    path.write_text("".join(json.dumps(a) + "\n" for a in articles))
    sent = build(support)
    changed = {t for t, c in support.query("select ticket_id, context from main.ticket_context") if before[t] != c}
    assert sent["kb_embeddings"] == 1 and sent["ticket_embeddings"] == 0
    assert 0 < len(changed) < TICKETS and sent["ticket_answers"] == len(changed)


def test_the_support_example_runs_on_the_openai_api_through_the_sdk(
        support: Project, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    support.write("project.yml", (support.root / "project.yml").read_text().replace("poll_interval: 2",
                                                                                    "poll_interval: 0.01"))
    support.db = "support_openai.duckdb"
    check_the_whole_loop(support, "openai")
    assert sorted({b["endpoint"] for b in emulator.seen.batches}) == ["/v1/chat/completions", "/v1/embeddings"]
    submitted = support.llmt("finetune", "submit", str(support.root / "target" / "train.jsonl"), "--model",
                             "gpt-4o-mini-2024-07-18", "--target", "openai", "--output", "json")
    assert submitted.code == 0, submitted.err
    status = json.loads(support.llmt("finetune", "status", "--target", "openai", "--output", "json").out)
    assert status[0]["status"] == "succeeded" and status[0]["fine_tuned_model"].startswith("ft:gpt-4o-mini")
