"""The error hierarchy. Every message says what is wrong, where, and what to do next."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LlmtError(Exception):
    """A user-facing error: printed as one paragraph, no traceback."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  {self.hint}"
        return text


class ConfigError(LlmtError):
    """project.yml, properties files, config() values."""


class CompileError(LlmtError):
    """Jinja, SQL syntax, prompt templates, refs."""


class SchemaError(LlmtError):
    """An output schema that strict mode cannot express."""


class GraphError(LlmtError):
    """Cycles, unknown nodes, bad selectors."""


class UsageError(LlmtError):
    """Command-line options that cannot be honoured as given."""


class NodeError(LlmtError):
    """A node failed while running (bad data, database error): exit code 1."""

    exit_code = 1


class LockTimeout(LlmtError):
    """Another program kept the warehouse file locked for longer than `lock_timeout`: the command stops (exit 2)."""


class ProviderError(LlmtError):
    """The LLM provider could not be reached or refused a request."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' Did you mean `x`?' or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean `{close[0]}`?" if close else ""
