"""The project's own files read with errors that say where: YAML syntax errors at the line to fix, bytes that
are not UTF-8 named by file, line and offset, in every kind of file llmt reads."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import BASE_FILES, Project

MakeProject = Callable[[dict[str, str]], Project]

PROJECT_YML = "name: demo\ntarget: dev\ntargets:\n  dev:\n    warehouse: {path: demo.duckdb}\n"


@pytest.mark.parametrize(
    ("text", "line", "hint"),
    [
        # a top-level key indented by one space: PyYAML's context is the mapping that starts at line 1
        (PROJECT_YML + " vars: {a: 1}\n", 6, "indentation"),
        (PROJECT_YML + "vars:\n  a: 1\n\tb: 2\n", 8, "tab"),
        (PROJECT_YML + 'vars:\n  a: "hello\n  b: 2\nllm:\n  model: x\n', 7, "quote"),
        (PROJECT_YML + "vars:\n  a: [1, 2\n  b: 2\nllm:\n  model: x\n", 7, "`[`"),
        (PROJECT_YML + "vars:\n  a: 1\n  b\n  c: 2\n", 8, "colon"),
        (PROJECT_YML + "vars:\n  a: b: c\n", 7, "quote the value"),
    ],
    ids=["indentation", "tab", "unclosed-quote", "unclosed-bracket", "missing-colon", "colon-in-value"],
)
def test_a_yaml_syntax_error_names_the_line_to_fix(make_project: MakeProject, text: str, line: int,
                                                   hint: str) -> None:
    project = make_project({"project.yml": text})
    result = project.llmt("ls")
    assert result.code == 2 and "Traceback" not in result.err
    assert f"project.yml:{line}:" in result.err, result.err
    assert "not valid YAML" in result.err and hint in result.err


def test_a_yaml_error_in_a_properties_file_names_its_line(project: Project) -> None:
    project.write("models/props.yml", "models:\n  - name: insights\n    description: ok\n   columns: []\n")
    result = project.llmt("ls")
    assert result.code == 2 and "props.yml:4:" in result.err, result.err


LATIN1 = "caf\xe9".encode("latin-1")


def _latin1(project: Project, rel: str, line: int) -> None:
    """Put a Latin-1 byte (é) on ``line`` (1-based) of a project file."""
    path = project.root / rel
    lines = path.read_bytes().splitlines(keepends=True)
    comment = b"# " if rel.endswith((".yml", ".csv")) else b"-- " if rel.endswith(".sql") else b""
    lines.insert(line - 1, comment + LATIN1 + b"\n")
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize(
    ("rel", "line", "command"),
    [
        ("project.yml", 2, "ls"),
        ("models/sources.yml", 3, "ls"),
        ("models/stg_reviews.sql", 1, "ls"),
        ("prompts/analyse.md", 4, "compile"),
        ("prompts/part.md", 2, "compile"),
        ("schemas/analysis.json", 1, "compile"),
        ("tests/no_rows.sql", 2, "test"),
        ("tests/evals/insights.csv", 3, "eval"),
        ("pins.yml", 1, "run"),
    ],
)
def test_a_byte_that_is_not_utf8_names_the_file_line_and_offset(
    make_project: MakeProject, rel: str, line: int, command: str,
) -> None:
    project = make_project({
        "prompts/analyse.md": BASE_FILES["prompts/analyse.md"] + "{% include 'part.md' %}\n",
        "prompts/part.md": "Answer briefly.\nThanks.\n",
        "tests/no_rows.sql": "select * from {{ ref('stg_reviews') }}\nwhere false\n",
        "tests/evals/insights.csv": "product,review_text,expected.sentiment\nPhone,Great,positive\n"
                                    "Cable,Bad,negative\n",
        "pins.yml": "[]\n",
    })
    yml = (project.root / "project.yml").read_text()
    project.write("project.yml", yml.replace("provider: {type: fake}", "provider: {type: fake, fixtures: pins.yml}"))
    if command in ("test", "eval"):
        assert project.llmt("run").code == 0
    if rel == "schemas/analysis.json":  # a JSON file has no comments: the byte goes into a description
        path = project.root / rel
        path.write_bytes(path.read_bytes().replace(b'"type": "object"', b'"description": "' + LATIN1 + b'", '
                                                    b'"type": "object"', 1))
    else:
        _latin1(project, rel, line)
    result = project.llmt(command)
    assert result.code == 2, result.err
    assert "Traceback" not in result.err and "UnicodeDecodeError" not in result.err
    assert f"{rel}:{line}:" in result.err, result.err
    offset = (project.root / rel).read_bytes().index(b"\xe9")
    assert f"byte 0xE9 at byte offset {offset} is not UTF-8" in result.err
    assert "Save it as UTF-8" in result.err
