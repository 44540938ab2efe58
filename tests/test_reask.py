"""`--reask` pays again for answers already stored: on a terminal it says what that costs and asks first;
without one it needs `--yes`. Re-asked requests are counted as such, never as cached."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys

from tests.conftest import Project


def on_a_terminal(project: Project, answer: str, *args: str) -> tuple[int, str]:
    """`llmt run --reask` with a terminal for stdin, stdout and stderr; ``answer`` typed at its question."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMT_")}
    proc = subprocess.Popen([sys.executable, "-m", "llmt", "run", "--reask", "--project-dir", str(project.root),
                             *args], stdin=slave, stdout=slave, stderr=slave, cwd=project.root, env=env)
    os.close(slave)
    seen, answered = b"", False
    try:
        while select.select([master], [], [], 60)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the other end closed: the process is done
                break
            seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
    finally:
        os.close(master)
    return proc.wait(timeout=60), seen.decode(errors="replace")


def attempts(project: Project) -> int:
    return int(project.query("select count(*) from _llmt.attempts")[0][0])


def test_without_a_terminal_reask_needs_yes(project: Project) -> None:
    project.run_json()
    result = project.llmt("run", "--reask")
    assert result.code == 2 and "Traceback" not in result.err
    assert "--reask pays again for answers already stored" in result.err and "--yes" in result.err
    assert attempts(project) == 4  # nothing was sent
    llm = project.llm_result(project.run_json("--reask", "--yes"))
    assert (llm["requests"], llm["reasked"], llm["cached"]) == (4, 4, 0) and attempts(project) == 8


def test_on_a_terminal_reask_says_what_it_costs_and_asks(project: Project) -> None:
    project.run_json()
    code, seen = on_a_terminal(project, "n")
    assert code == 2, seen
    assert "insights: --reask asks gpt-4o-mini again for 4 stored answer(s) and replaces them: about $0.0" in seen
    assert "at batch prices (what they cost when first asked). Continue? [y/N]" in seen
    assert "was not confirmed: nothing was asked again" in seen and attempts(project) == 4
    code, seen = on_a_terminal(project, "y", "--sample", "1")
    assert code == 0, seen
    assert "again for 1 stored answer(s)" in seen and "0 new requests, 1 re-asked" in seen
    assert attempts(project) == 5
