"""macros/*.sql: Jinja macros in models, singular tests, test arguments and prompts, as in dbt."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from llmt.project import load_project
from tests.conftest import Project

MakeProject = Callable[[dict[str, str]], Project]

MACROS = {
    "macros/text.sql": """
        {% macro clean(column) -%}
            lower(trim({{ column }}))
        {%- endmacro %}

        {% macro upstream() -%}
            {{ ref('stg_reviews') }}
        {%- endmacro %}
        """,
    "macros/filters.sql": """
        {% macro only(column, value) -%}
            {{ clean(column) }} = {{ clean("'" ~ value ~ "'") }} and {{ var('min_id', 0) }} <= review_id
        {%- endmacro %}
        """,
}


def test_macros_in_models_tests_and_test_arguments(make_project: MakeProject) -> None:
    project = make_project({
        **MACROS,
        "models/phones.sql": "select review_id, {{ clean('product') }} as product from {{ upstream() }}\n"
                             "where {{ only('product', 'PHONE ') }}\n",
        "models/phones.yml": """
            models:
              - name: phones
                columns:
                  - name: product
                    tests:
                      - accepted_values: {values: [phone], config: {where: "{{ clean('product') }} <> ''"}}
            """,
        "tests/no_cables.sql": "select * from {{ ref('phones') }} where {{ only('product', 'cable') }}\n",
    })
    listed = project.llmt("ls", "--output", "json")
    assert listed.code == 0, listed.err
    phones = next(n for n in json.loads(listed.out) if n["name"] == "phones")
    assert phones["depends_on"] == ["stg_reviews"]  # the ref() in a macro is the model's
    assert project.llmt("run", "-s", "+phones", "--vars", "{min_id: 2}").code == 0
    assert project.query("select review_id, product from main.phones") == [(2, "phone")]
    tested = project.llmt("test", "-s", "phones", "no_cables", "--output", "json")
    assert tested.code == 0, tested.err
    assert {t["name"]: t["status"] for t in json.loads(tested.out)["tests"]} == {
        "accepted_values_phones_product": "pass", "no_cables": "pass"}
    compiled = (project.root / "target" / "compiled" / "models" / "phones.sql").read_text()
    assert "lower(trim(product)) = lower(trim('PHONE '))" in compiled


def test_an_error_in_a_macro_names_the_macro_file_and_line_and_the_caller(make_project: MakeProject) -> None:
    project = make_project({
        "macros/broken.sql": "{% macro cents(x) %}\n  {{ x }} * 100 + {{ missing_var }}\n{% endmacro %}\n",
        "models/priced.sql": "select 1 as id,\n  {{ cents('2') }} as price\n",
    })
    result = project.llmt("ls")
    assert result.code == 2
    assert ("macros/broken.sql:2: 'missing_var' is undefined (in a macro called at models/priced.sql:2)"
            in result.err)
    project.write("macros/broken.sql", "{% macro cents(x) %}\n  {{ x * }}\n{% endmacro %}\n")
    result = project.llmt("ls")
    assert result.code == 2 and "macros/broken.sql:2: Jinja syntax error" in result.err
    project.write("macros/broken.sql", "{% macro cents(x) %}\n  {{ ref('nowhere') }}\n{% endmacro %}\n")
    result = project.llmt("ls")
    assert result.code == 2 and "macros/broken.sql:2: ref('nowhere') points at no model." in result.err


def test_two_macros_of_one_name_or_a_reserved_name_are_refused(make_project: MakeProject) -> None:
    project = make_project({"macros/a.sql": "{% macro money(x) %}{{ x }}{% endmacro %}\n",
                            "macros/b.sql": "{# again #}\n{% macro money(x) %}{{ x }}{% endmacro %}\n"})
    result = project.llmt("ls")
    assert result.code == 2 and "macros/b.sql:2: two macros are named `money`: in macros/a.sql and macros/b.sql" \
        in result.err
    project.remove("macros/b.sql")
    project.write("macros/a.sql", "{% macro ref(x) %}{{ x }}{% endmacro %}\n")
    result = project.llmt("ls")
    assert result.code == 2 and "macros/a.sql:1: a macro may not be named `ref`" in result.err


def test_the_parse_cache_notices_a_changed_macro(make_project: MakeProject) -> None:
    project = make_project({"macros/m.sql": "{% macro pick() %}review_id, product{% endmacro %}\n",
                            "models/picked.sql": "select {{ pick() }} from {{ ref('stg_reviews') }}\n"})
    root = project.root
    assert "review_id, product" in load_project(root).nodes["picked"].compiled_sql
    assert (root / "target" / "parse_cache.bin").is_file()
    project.write("macros/m.sql", "{% macro pick() %}review_text{% endmacro %}\n")
    assert "select review_text from" in load_project(root).nodes["picked"].compiled_sql
    project.write("macros/m.sql", "{% macro pick() %}(review_text{% endmacro %}\n")  # now invalid SQL
    result = project.llmt("ls")
    assert result.code == 2 and "models/picked.sql:1: SQL syntax error" in result.err


def test_macros_in_prompts_and_their_text_in_the_request_key(make_project: MakeProject) -> None:
    project = make_project({
        "macros/prompting.sql": "{% macro labelled(label, value) %}{{ label | upper }}: {{ value }}{% endmacro %}\n",
        "prompts/analyse.md": """
            ---
            system: You analyse reviews.
            ---
            {{ labelled('product', product) }}
            Review: {{ review_text }}
            """,
    })
    data = project.run_json()
    assert project.llm_result(data)["requests"] == 4
    sent = "".join(p.read_text() for p in (project.root / "target" / "batches").rglob("*.jsonl"))
    assert "PRODUCT: Phone\\nReview: Great phone" in sent
    assert project.llm_result(project.run_json())["requests"] == 0
    project.write("macros/unused.sql", "{% macro other() %}x{% endmacro %}\n")  # not used by the prompt
    assert project.llm_result(project.run_json())["requests"] == 0
    project.write("macros/prompting.sql", "{% macro labelled(label, value) %}{{ label }} = {{ value }}{% endmacro %}\n")
    assert project.llm_result(project.run_json())["requests"] == 4  # the macro changed: every row is asked again


def test_a_prompt_macro_sees_no_project_var(make_project: MakeProject) -> None:
    """What a prompt renders must depend only on the row (and the templates), or request keys would lie."""
    project = make_project({
        "macros/prompting.sql": "{% macro tone() %}{{ var('tone') }}{% endmacro %}\n",
        "prompts/analyse.md": "Tone: {{ tone() }}\nReview: {{ review_text }}\n",
    })
    result = project.llmt("run")
    assert result.code != 0 and "'var' is undefined" in result.err


def test_prompts_without_macros_keep_their_request_keys(project: Project, tmp_path: Path) -> None:
    before = project.run_json()
    project.write("macros/any.sql", "{% macro any() %}1{% endmacro %}\n")
    after = project.run_json()
    assert project.llm_result(before)["requests"] == 4 and project.llm_result(after)["requests"] == 0
