"""An answer is served only to requests of the kind of provider that gave it: the fake provider's synthetic
answers never satisfy a real provider's requests, even when two targets share one database, and what they
would have cost is never reported as real spend."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from llmt.pipeline.spec import build_spec, escalation_spec
from llmt.project import load_project
from tests.conftest import Project
from tests.emulator import Emulator, fixtures

emulator = fixtures.emulator

MakeProject = Callable[[dict[str, str]], Project]
REPO = Path(__file__).resolve().parent.parent


def shared(make_project: MakeProject, emu: Emulator, llm: str = "") -> Project:
    """The base project with a `dev` (fake) and an `openai` (the emulator) target on the same database."""
    project = make_project({})
    yml = (project.root / "project.yml").read_text()
    openai = (f"  openai:\n    warehouse: {{path: demo.duckdb}}\n"
              f"    provider: {{type: openai, base_url: '{emu.base_url}', poll_interval: 0.01}}\n")
    yml = yml.replace("llm:\n", openai + "llm:\n").replace("max_attempts: 2", "max_attempts: 2" + llm)
    project.write("project.yml", yml)
    return project


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def providers(project: Project) -> dict[int, str]:
    """review_id -> the kind of provider whose answer the output table shows."""
    return dict(project.query("select i.review_id, a.provider from main.insights i "
                              "join _llmt.answers a on a.request_key = i._llmt_answer_key"))


def test_a_fake_answer_never_answers_a_real_provider_on_a_shared_database(
    make_project: MakeProject, emulator: Emulator,
) -> None:
    project = shared(make_project, emulator)
    assert project.llm_result(project.run_json())["requests"] == 4  # the fake provider answers every row
    assert set(providers(project).values()) == {"fake"}

    real = project.llm_result(project.run_json("--target", "openai"))
    assert real["requests"] == 4 and real["cached"] == 0  # nothing synthetic is taken for a real answer
    assert len(emulator.seen.batches) == 1
    assert set(providers(project).values()) == {"openai"}
    assert project.query("select distinct _llmt_model, _llmt_status from main.insights") == [("gpt-4o-mini", "ok")]

    # each kind keeps its own answers: switching back and forth sends nothing
    assert project.llm_result(project.run_json())["requests"] == 0
    assert set(providers(project).values()) == {"fake"}
    assert project.llm_result(project.run_json("--target", "openai"))["requests"] == 0
    assert set(providers(project).values()) == {"openai"} and len(emulator.seen.batches) == 1
    assert dict(project.query("select provider, count(*) from _llmt.answers group by 1")) == {"fake": 4, "openai": 4}


def test_a_pending_row_never_shows_the_other_providers_answer_as_stale(
    make_project: MakeProject, emulator: Emulator,
) -> None:
    project = shared(make_project, emulator)
    emulator.timing.in_progress = 3600.0  # the real batch stays open
    project.run_json()
    assert project.llm_result(project.run_json("--target", "openai", "--no-wait"))["open_batches"] == 1
    rows = project.query("select _llmt_status, _llmt_answer_key, sentiment from main.insights")
    assert rows and all(r == ("pending", None, None) for r in rows)


def test_realtime_and_batch_of_one_provider_share_their_answers(make_project: MakeProject, emulator: Emulator) -> None:
    project = shared(make_project, emulator)
    assert project.llm_result(project.run_json("--target", "openai", "--mode", "realtime"))["requests"] == 4
    assert project.llm_result(project.run_json("--target", "openai", "--mode", "batch"))["requests"] == 0
    assert emulator.seen.realtime == 4 and emulator.seen.batches == []
    assert project.query("select distinct provider from _llmt.attempts") == [("openai",)]


def test_the_provider_kind_is_part_of_the_key_of_every_spec(
    make_project: MakeProject, emulator: Emulator,
) -> None:
    project = shared(make_project, emulator, llm="\n  escalate: {model: gpt-4o, when: [refused]}")
    dev, real = load_project(project.root), load_project(project.root, target="openai")
    node = dev.nodes["insights"]
    fake_spec, real_spec = build_spec(dev, node), build_spec(real, real.nodes["insights"])
    assert (fake_spec.provider, real_spec.provider) == ("fake", "openai")
    assert fake_spec.template_hash != real_spec.template_hash
    assert build_spec(real, real.nodes["insights"], provider="fake").template_hash == fake_spec.template_hash
    escalated = escalation_spec(real_spec)
    assert escalated is not None and escalated.provider == "openai"
    assert escalated.template_hash != escalation_spec(fake_spec).template_hash  # type: ignore[union-attr]


def test_status_keeps_simulated_spend_apart_from_real_spend(make_project: MakeProject, emulator: Emulator) -> None:
    project = shared(make_project, emulator)
    project.run_json()
    project.run_json("--target", "openai")
    fake_cost, real_cost = (project.query(f"select sum(cost_usd) from _llmt.attempts where provider = '{kind}'")[0][0]
                            for kind in ("fake", "openai"))
    assert fake_cost > 0 and real_cost > 0
    status = json.loads(project.llmt("status", "--output", "json").out)
    assert [(e["provider"], e["total_usd"]) for e in status["spend"]] == [("openai", pytest.approx(real_cost))]
    assert [(e["provider"], e["total_usd"]) for e in status["simulated_spend"]] == [("fake", pytest.approx(fake_cost))]
    text = project.llmt("status").out
    assert "Simulated spend" in text and "nothing was paid" in text


def test_answer_times_are_instants(project: Project) -> None:
    project.run_json()
    types = dict(project.query("select column_name, data_type from information_schema.columns where table_name = "
                               "'insights' and column_name like '_llmt_%'"))
    assert types["_llmt_answered_at"] == "TIMESTAMP WITH TIME ZONE"


@pytest.mark.parametrize("path", ["project.yml", "llmt/scaffold/project.yml"])
def test_the_example_and_the_scaffold_give_each_kind_of_provider_its_own_database(path: str) -> None:
    targets = yaml.safe_load((REPO / path).read_text(encoding="utf-8"))["targets"]
    kinds: dict[str, set[str]] = {}
    for target in targets.values():
        warehouse = target["warehouse"]
        kinds.setdefault(warehouse.get("path") or warehouse["dsn"], set()).add(target["provider"]["type"])
    assert set().union(*kinds.values()) == {"fake", "openai"}
    assert all(len(providers) == 1 for providers in kinds.values()), kinds
