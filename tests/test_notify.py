"""Completion notices (`notify:`): a JSON summary POSTed to a webhook and/or given to a command on stdin when a
run ends, and when `llmt status` finds that the batches a `--no-wait` run left have ended. A notice that cannot
be delivered is retried, then a warning; it never changes how the run ends. The webhook is a local HTTP server
started by each test (loopback only)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import Project
from tests.emulator import Emulator, fixtures

emulator = fixtures.emulator
MakeProject = Callable[[dict[str, str]], Project]
SECRET = "T0PSECRET"  # in the webhook's URL, as a Slack or Teams webhook carries its token


class Hook:
    """A local webhook: records each POST; answers with the scripted statuses first, then 200."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.script: list[int] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append((dict(self.headers), body))
                status = hook.script.pop(0) if hook.script else 200
                self.send_response(status)
                if status != 200:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{SECRET}"

    def notices(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.posts]


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    try:
        yield h
    finally:
        h.server.shutdown()
        h.server.server_close()


def with_notify(project: Project, notify: str, target: str = "") -> Project:
    yml = (project.root / "project.yml").read_text()
    yml = yml.replace("llm:\n", f"notify: {notify}\nllm:\n")
    if target:
        yml = yml.replace("provider: {type: fake}\n", f"provider: {{type: fake}}\n    notify: {target}\n", 1)
    (project.root / "project.yml").write_text(yml)
    return project


def run_id(project: Project) -> str:
    return str(json.loads((project.root / "target" / "run_results.json").read_text())["metadata"]["run_id"])


def test_a_run_ends_with_a_notice_to_the_webhook_and_the_command(make_project: MakeProject, hook: Hook) -> None:
    project = with_notify(make_project({}), f'{{webhook: "{hook.url}", command: "cat > notice.json"}}')
    result = project.llmt("run")
    assert result.code == 0, result.err
    [(headers, body)] = hook.posts
    assert headers["Content-Type"] == "application/json"
    notice = json.loads(body)
    assert notice == json.loads((project.root / "notice.json").read_text())  # the command got the same on stdin
    assert {k: notice[k] for k in ("tool", "event", "project", "target", "command", "status", "exit_code",
                                   "spend_simulated", "open_batches", "collected_from_runs")} == {
        "tool": "llmt", "event": "run_ended", "project": "demo", "target": "dev", "command": "run",
        "status": "success", "exit_code": 0, "spend_simulated": True, "open_batches": 0, "collected_from_runs": []}
    assert notice["run_id"] == run_id(project)
    models = {m["name"]: m for m in notice["models"]}
    assert models["stg_reviews"] == {"name": "stg_reviews", "materialized": "view", "status": "success", "rows": None}
    insights = models["insights"]
    assert {k: insights[k] for k in ("status", "rows", "answered", "failed", "pending", "requests_sent",
                                     "open_batches")} == {
        "status": "success", "rows": 4, "answered": 4, "failed": 0, "pending": 0, "requests_sent": 4,
        "open_batches": 0}
    assert insights["cost_usd"] > 0 and notice["spend_usd"] == insights["cost_usd"]
    assert SECRET not in body.decode()  # the URL is never in the notice


def test_a_target_notify_replaces_the_projects(make_project: MakeProject) -> None:
    project = with_notify(make_project({}), '{command: "cat > project.json"}', target='{command: "cat > target.json"}')
    assert project.llmt("run").code == 0
    assert (project.root / "target.json").is_file() and not (project.root / "project.json").exists()


def test_a_failed_run_says_so_in_its_notice(make_project: MakeProject) -> None:
    project = with_notify(make_project({"models/broken.sql": "{{ config(materialized='table') }}\nselect 'x'::int\n"}),
                          '{command: "cat > notice.json"}')
    assert project.llmt("run").code == 1
    notice = json.loads((project.root / "notice.json").read_text())
    assert (notice["status"], notice["exit_code"]) == ("error", 1)
    assert {m["name"]: m["status"] for m in notice["models"]}["broken"] == "error"


def test_a_webhook_that_fails_is_retried_and_then_only_warned_about(make_project: MakeProject, hook: Hook) -> None:
    project = with_notify(make_project({}), f'{{webhook: "{hook.url}", retries: 2}}')
    hook.script = [503, 500, 502]
    result = project.llmt("run")
    assert result.code == 0, result.err  # the run is not affected
    assert len(hook.posts) == 3
    port = hook.server.server_address[1]
    assert (f"warning: notify: the webhook (127.0.0.1:{port}) failed after 3 attempt(s): HTTP 502 (the run is not "
            "affected)") in result.err
    assert SECRET not in result.err
    hook.script = [500]  # one failure, then delivered
    result = project.llmt("run")
    assert result.code == 0 and "notify:" not in result.err
    assert len(hook.posts) == 5 and hook.notices()[3] == hook.notices()[4]


def test_a_command_that_fails_is_warned_about(make_project: MakeProject) -> None:
    project = with_notify(make_project({}), '{command: "echo no mail today >&2; exit 3", retries: 0}')
    result = project.llmt("run")
    assert result.code == 0
    assert "warning: notify: the command failed after 1 attempt(s): exit code 3: no mail today" in result.err


@pytest.mark.parametrize(("notify", "why"), [
    ('{webhook: "ftp://example.com/x"}', "a webhook is an http:// or https:// URL"),
    ("{retries: 2}", "`notify:` needs a `webhook` (URL) or a `command` (or both)"),
])
def test_a_notify_without_somewhere_to_go_is_a_config_error(make_project: MakeProject, notify: str, why: str) -> None:
    result = with_notify(make_project({}), notify).llmt("run")
    assert result.code == 2 and why in result.err and "Traceback" not in result.err


def test_a_no_wait_run_is_heard_of_when_status_sees_its_batches_end_and_when_a_run_collects_them(
    make_project: MakeProject, hook: Hook, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-key-never-in-a-notice")
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    emulator.timing.in_progress = 3600  # the batch stays in progress until the clock moves on
    project = with_notify(make_project({}), f'{{webhook: "{hook.url}"}}')
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("provider: {type: fake}", "provider: {type: openai, poll_interval: 0.01}"))

    assert project.llmt("run", "--no-wait").code == 0
    first = run_id(project)
    [submitted] = hook.notices()
    insights = {m["name"]: m for m in submitted["models"]}["insights"]
    assert (submitted["open_batches"], insights["open_batches"], insights["pending"]) == (1, 1, 4)

    assert project.llmt("status").code == 0
    assert len(hook.posts) == 1  # still in progress: nothing to hear of
    emulator.advance(3600)
    assert project.llmt("status").code == 0
    ended = hook.notices()[1]
    assert {k: ended[k] for k in ("event", "run_id", "open_batches")} == {
        "event": "batches_ended", "run_id": first, "open_batches": 1}
    assert ended["models"] == [{"name": "insights", "batches": 1, "requests": 4, "completed": 4, "failed": 0,
                                "statuses": {"completed": 1}}]
    assert project.llmt("status").code == 0
    assert len(hook.posts) == 2  # a run's ended batches are told of once

    assert project.llmt("run").code == 0
    collected = hook.notices()[2]
    assert (collected["event"], collected["collected_from_runs"], collected["open_batches"]) == (
        "run_ended", [first], 0)
    assert {m["name"]: m for m in collected["models"]}["insights"]["answered"] == 4
    assert not any(b"sk-key-never" in body for _, body in hook.posts)
