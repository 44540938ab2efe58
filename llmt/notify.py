"""Completion notices: you hear when a run is done instead of watching it.

``notify:`` of the target (or else of project.yml) names a ``webhook`` (a URL: the notice is POSTed to it as
JSON) and/or a ``command`` (run by the shell in the project's directory, with the notice as JSON on stdin). A
notice is sent when a run ends (`llmt run`, `llmt build`: however it ends), and when `llmt status` finds that
every batch an earlier run left open (`--no-wait`, `--timeout`) has ended at the provider (once per such run:
`llmt run` then collects them, and its own notice says so). A notice that cannot be delivered is tried again
with backoff, then reported as a warning: it never changes how the command ends. A notice holds no secret: no
key, no URL, no setting; only names, counts, money and statuses.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmt.providers.base import TERMINAL_STATUSES

if TYPE_CHECKING:
    from llmt.console import Reporter
    from llmt.project import Project
    from llmt.project.config import NotifyConfig
    from llmt.scheduler import NodeResult
    from llmt.warehouse.store import StateStore

MAX_WAIT = 60.0  # seconds: the longest pause between two tries, whatever a server's Retry-After says


def notify_config(project: Project) -> NotifyConfig | None:
    """The target's `notify:`, else the project's."""
    return project.target.notify or project.config.notify


def run_notice(project: Project, run_id: str, command: str, status: str, exit_code: int, seconds: float,
               results: Sequence[NodeResult], open_batches: dict[str, int],
               collected_from: Iterable[str]) -> dict[str, Any]:
    """What a notice says when a run ends: per model its status and, for an LLM model, its rows answered,
    failed and pending, what it cost and its batches still open; the spend; the open batches; the earlier runs
    whose batches this run collected."""
    models = []
    for r in results:
        entry: dict[str, Any] = {"name": r.name, "materialized": r.materialized, "status": r.status, "rows": r.rows}
        if r.llm is not None:
            rows = r.llm.status
            entry.update(answered=rows.get("ok", 0) + rows.get("stale", 0), failed=rows.get("failed", 0),
                         pending=rows.get("pending", 0), requests_sent=r.llm.requests + r.llm.retried,
                         cost_usd=round(r.llm.cost_usd, 6), open_batches=open_batches.get(r.name, 0))
        models.append(entry)
    return {
        "tool": "llmt", "event": "run_ended", "project": project.name, "target": project.target_name,
        "run_id": run_id, "command": command, "status": status, "exit_code": exit_code,
        "elapsed_s": round(seconds, 1), "models": models,
        "spend_usd": round(sum(r.llm.cost_usd for r in results if r.llm is not None), 6),
        "spend_simulated": project.target.provider.type == "fake",
        "open_batches": sum(open_batches.values()), "collected_from_runs": sorted(collected_from),
    }


def ended_notice(project: Project, run_id: str, batches: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a notice says when every batch run ``run_id`` left open has ended (``batches``: `llmt status`'s
    entries of them)."""
    models: dict[str, dict[str, Any]] = {}
    for b in batches:
        m = models.setdefault(b["node"], {"name": b["node"], "batches": 0, "requests": 0, "completed": 0,
                                          "failed": 0, "statuses": {}})
        m["batches"] += 1
        m["requests"] += b["requests"]
        m["completed"] += b["completed"] or 0
        m["failed"] += b["failed"] or 0
        m["statuses"][b["status"]] = m["statuses"].get(b["status"], 0) + 1
    return {
        "tool": "llmt", "event": "batches_ended", "project": project.name, "target": project.target_name,
        "run_id": run_id, "command": "status", "status": "batches_ended", "exit_code": None,
        "models": list(models.values()), "open_batches": len(batches),
        "next": "`llmt run` collects them and builds the tables",
    }


def ended_runs(batches: Sequence[dict[str, Any]], store: StateStore) -> list[tuple[str, list[dict[str, Any]]]]:
    """The earlier runs every open batch of which has ended (``batches``: `llmt status`'s entries) and that no
    notice has named yet, with their batches; each is remembered as named (a notice names a run once)."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for b in batches:
        by_run.setdefault(b["run_id"], []).append(b)
    out = []
    for run_id, entries in by_run.items():
        if all(e["status"] in TERMINAL_STATUSES for e in entries) and store.fingerprint("notice", run_id) is None:
            store.set_fingerprint("notice", run_id, {"event": "batches_ended", "batches": len(entries)})
            out.append((run_id, entries))
    return out


def send(project: Project, config: NotifyConfig, notice: dict[str, Any], reporter: Reporter) -> None:
    """Deliver ``notice`` to the webhook and to the command of ``config``; a failure is a warning."""
    body = json.dumps(notice, ensure_ascii=False, default=str).encode("utf-8")
    if config.webhook is not None:
        url = config.webhook
        parts = urlsplit(url)
        _deliver(lambda: _post(url, body, config.timeout), f"the webhook ({parts.hostname}"
                 + (f":{parts.port}" if parts.port else "") + ")", config.retries, reporter)
    if config.command is not None:
        command = config.command
        _deliver(lambda: _run(command, body, config.timeout, project), "the command", config.retries, reporter)


class _Failed(Exception):
    """A try that failed: why, whether trying again may help, and how long a server asked to wait."""

    def __init__(self, why: str, again: bool = True, wait: float | None = None) -> None:
        super().__init__(why)
        self.why, self.again, self.wait = why, again, wait


def _deliver(attempt: Callable[[], None], what: str, retries: int, reporter: Reporter) -> None:
    delay = 1.0
    for n in range(1, retries + 2):
        try:
            attempt()
            return
        except _Failed as exc:
            if not exc.again or n > retries:
                reporter.warn(f"notify: {what} failed after {n} attempt(s): {exc.why} (the run is not affected)")
                return
            time.sleep(min(exc.wait if exc.wait is not None else delay, MAX_WAIT))
            delay *= 2


def _post(url: str, body: bytes, timeout: float) -> None:
    import urllib.error  # (here: every run reads notify.py, few send a notice)
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "llmt"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        try:
            wait = float(retry_after) if retry_after is not None else None
        except ValueError:
            wait = None
        raise _Failed(f"HTTP {exc.code}", again=exc.code == 429 or exc.code >= 500, wait=wait) from None
    except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise _Failed(f"no answer ({reason})") from None


def _run(command: str, body: bytes, timeout: float, project: Project) -> None:
    try:
        done = subprocess.run(command, shell=True, input=body, capture_output=True, timeout=timeout,
                              cwd=project.dir, check=False)
    except subprocess.TimeoutExpired:
        raise _Failed(f"it did not end within {timeout:g}s") from None
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise _Failed(f"exit code {done.returncode}" + (f": {said[-1][:300]}" if said else ""))
