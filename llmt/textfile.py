"""Reading the project's own text files (models, prompts, schemas, properties, tests, labelled examples):
UTF-8 only, and errors that say where: a byte that is not UTF-8, a YAML syntax error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmt.errors import ConfigError


def read_text(path: Path) -> str:
    """The file's text (newlines as Python's text mode reads them); a byte that is not UTF-8 is a ConfigError
    naming the file, the line and the byte offset."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        data, start = path.read_bytes(), exc.start
    try:  # the offset in the whole file (text mode decodes it in chunks)
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = exc.start
    line = data.count(b"\n", 0, start) + 1
    line_start = data.rfind(b"\n", 0, start) + 1
    shown = data[line_start:start + 1].decode("utf-8", errors="replace").strip()
    raise ConfigError(
        f"byte 0x{data[start]:02X} at byte offset {start} is not UTF-8 (the line reads `{shown[-60:]}`): "
        "the file was saved in another encoding (Latin-1 or Windows-1252?)",
        where=f"{path}:{line}",
        hint=f"Save it as UTF-8 (in an editor: save with encoding UTF-8; or `iconv -f windows-1252 -t utf-8 "
        f"{path.name} > {path.name}.utf8` and rename it).",
    )


def yaml_error(exc: Any, path: Path | str, what: str = "this is not valid YAML") -> ConfigError:
    """A YAML syntax error of ``path`` as a ConfigError at the line to fix: where a quote, bracket or key
    that is never closed was opened (PyYAML's context), else where parsing failed (its problem), which is
    where a line is indented wrongly or holds a tab."""
    context = str(getattr(exc, "context", None) or "")
    context_mark, problem_mark = getattr(exc, "context_mark", None), getattr(exc, "problem_mark", None)
    opened = context.startswith(("while scanning a quoted", "while scanning a simple key", "while parsing a flow"))
    mark = context_mark if opened and context_mark is not None else problem_mark or context_mark
    problem = str(getattr(exc, "problem", None) or exc)
    if "\\t" in problem or "\t" in problem:
        hint = "YAML indents with spaces, never tabs: replace the tab on that line with spaces."
    elif context.startswith("while scanning a quoted"):
        hint = "A quote opened on that line is never closed: close it (or quote the value with the other quote)."
    elif context.startswith("while parsing a flow"):
        hint = "A `[` or `{` opened on that line is never closed, or its items are not separated by commas."
    elif context.startswith("while scanning a simple key"):
        hint = "That line is not `key: value`: add the colon (and a space after it), or indent it under a key."
    elif "expected <block end>" in problem:
        hint = "Check that line's indentation: it must line up with the keys (or `- ` items) it belongs with."
    elif "mapping values are not allowed" in problem:
        hint = 'A `: ` inside a value: quote the value (e.g. "a: b").'
    else:
        hint = "Fix the syntax on that line."
    where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
    return ConfigError(f"{what} ({' '.join(filter(None, [context, problem]))})", where=where, hint=hint)
