"""llmt.schema: strict-mode normalization, rejections, column types, json_transform, validation."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb
import pydantic
import pytest

from llmt.errors import SchemaError
from llmt.schema import (
    MAX_DEPTH,
    json_structure,
    load_schema,
    schema_fingerprint,
    to_strict,
)
from llmt.validate import AnswerValidator
from llmt.warehouse.duckdb import DuckDBWarehouse

DATA = Path(__file__).parent / "data" / "schemas"


def column_types(strict: dict[str, Any]) -> list[tuple[str, str]]:
    """The output columns of a strict schema, with their DuckDB types."""
    wh = DuckDBWarehouse(":memory:", Path("."))
    return [(name, wh.sql_type(structure)) for name, structure in json_structure(strict).items()]
WHERE = "schemas/review.json"


def obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required is not None:
        schema["required"] = required
    return schema


def strict_obj(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
        **extra,
    }


# --- normalization -------------------------------------------------------------------------------


def test_optional_properties_become_nullable_and_everything_required() -> None:
    schema = obj(
        {
            "sentiment": {"type": "string", "enum": ["positive", "negative"]},
            "score": {"type": "integer", "minimum": 1, "maximum": 10},
            "competitor": {"type": "string", "description": "A rival brand."},
            "mood": {"type": "string", "enum": ["calm", "angry"]},
            "flags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
        },
        required=["sentiment", "score"],
    )
    assert to_strict(schema, where=WHERE) == strict_obj(
        {
            "sentiment": {"type": "string", "enum": ["positive", "negative"]},
            "score": {"type": "integer", "minimum": 1, "maximum": 10},
            "competitor": {"type": ["string", "null"], "description": "A rival brand."},
            "mood": {"type": ["string", "null"], "enum": ["calm", "angry", None]},
            "flags": {"type": ["array", "null"], "items": {"type": "boolean"}, "maxItems": 3},
        }
    )


def test_no_required_list_makes_every_property_nullable_and_keeps_property_order() -> None:
    strict = to_strict(obj({"b": {"type": "number"}, "a": {"type": "boolean"}}), where=WHERE)
    assert list(strict["properties"]) == ["b", "a"]
    assert strict["required"] == ["b", "a"]
    assert strict["properties"]["b"] == {"type": ["number", "null"]}


def test_already_nullable_properties_stay_as_they_are() -> None:
    props = {
        "a": {"type": ["string", "null"]},
        "b": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "c": {"enum": ["x", None]},
        "d": {"type": ["string", "null"], "enum": ["x", None]},
    }
    assert to_strict(obj(copy.deepcopy(props)), where=WHERE)["properties"] == props


def test_enum_of_a_nullable_type_accepts_null() -> None:
    schema = obj({"unit": {"type": ["string", "null"], "enum": ["F", "C"]}}, required=["unit"])
    strict = to_strict(schema, where=WHERE)
    assert strict["properties"]["unit"] == {"type": ["string", "null"], "enum": ["F", "C", None]}
    assert AnswerValidator(strict, "unit").check('{"unit": null}') == ("ok", "")


def test_anyof_ref_and_const_are_wrapped_when_optional() -> None:
    schema = obj(
        {
            "value": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "owner": {"$ref": "#/$defs/Person"},
            "kind": {"type": "string", "const": "review"},
        },
        **{"$defs": {"Person": obj({"name": {"type": "string"}}, required=["name"])}},
    )
    props = to_strict(schema, where=WHERE)["properties"]
    assert props["value"] == {
        "anyOf": [{"anyOf": [{"type": "string"}, {"type": "integer"}]}, {"type": "null"}]
    }
    assert props["owner"] == {"anyOf": [{"$ref": "#/$defs/Person"}, {"type": "null"}]}
    assert props["kind"] == {"anyOf": [{"type": "string", "const": "review"}, {"type": "null"}]}


def test_ref_to_a_nullable_definition_is_not_wrapped_again() -> None:
    schema = obj(
        {"note": {"$ref": "#/definitions/Note"}},
        definitions={"Note": {"type": ["string", "null"]}},
    )
    assert to_strict(schema, where=WHERE)["properties"]["note"] == {"$ref": "#/definitions/Note"}


def test_nested_objects_in_arrays_and_definitions_are_normalized() -> None:
    schema = obj(
        {
            "issues": {
                "type": "array",
                "items": obj(
                    {"topic": {"type": "string"}, "severity": {"type": "string", "enum": ["low", "high"]}},
                    required=["topic"],
                ),
            },
            "author": {"$ref": "#/$defs/Person"},
        },
        required=["issues", "author"],
        **{"$defs": {"Person": obj({"name": {"type": "string"}, "age": {"type": "integer"}}, ["name"])}},
    )
    strict = to_strict(schema, where=WHERE)
    assert strict == strict_obj(
        {
            "issues": {
                "type": "array",
                "items": strict_obj(
                    {
                        "topic": {"type": "string"},
                        "severity": {"type": ["string", "null"], "enum": ["low", "high", None]},
                    }
                ),
            },
            "author": {"$ref": "#/$defs/Person"},
        },
        **{
            "$defs": {
                "Person": strict_obj({"name": {"type": "string"}, "age": {"type": ["integer", "null"]}})
            }
        },
    )


def test_input_is_not_modified_and_metadata_keywords_are_dropped() -> None:
    schema = obj(
        {"a": {"type": "string", "$comment": "internal"}},
        **{"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Answer"},
    )
    before = copy.deepcopy(schema)
    strict = to_strict(schema, where=WHERE)
    assert schema == before
    assert strict == strict_obj({"a": {"type": ["string", "null"]}}, title="Answer")


def test_strict_schema_is_a_fixed_point() -> None:
    strict = to_strict(load_schema(DATA / "review_analysis.yml"), where=WHERE)
    assert to_strict(strict, where=WHERE) == strict


def test_nesting_up_to_the_limit_is_accepted() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(MAX_DEPTH):
        schema = obj({"x": schema}, ["x"])
    to_strict(schema, where=WHERE)
    with pytest.raises(SchemaError, match="nested 11 levels deep"):
        to_strict(obj({"x": schema}, ["x"]), where=WHERE)


# --- rejections ----------------------------------------------------------------------------------

ISSUES = "$.properties.issues.items"
REJECTIONS: list[tuple[str, dict[str, Any], str, str]] = [
    ("root array", {"type": "array", "items": {"type": "string"}}, "$", "root must be an object"),
    ("root anyOf", {"anyOf": [obj({"a": {"type": "string"}})]}, "$", "root must be an object"),
    (
        "additionalProperties true",
        obj(
            {"issues": {"type": "array", "items": obj({"a": {"type": "string"}}, additionalProperties=True)}}
        ),
        f"{ISSUES}.additionalProperties",
        "must be false",
    ),
    (
        "additionalProperties schema",
        obj({"tags": obj({"a": {"type": "string"}}, additionalProperties={"type": "string"})}),
        "$.properties.tags.additionalProperties",
        "must be false",
    ),
    *[
        (
            keyword,
            obj({"issues": {"type": "array", "items": {"type": "string", keyword: value}}}),
            ISSUES,
            f"`{keyword}` is not supported",
        )
        for keyword, value in [
            ("allOf", [{"type": "string"}]),
            ("oneOf", [{"type": "string"}]),
            ("not", {"const": "x"}),
            ("if", {"const": "x"}),
            ("then", {"const": "x"}),
            ("else", {"const": "x"}),
            ("default", "none"),
            ("examples", ["a"]),
            ("nullable", True),
        ]
    ],
    *[
        (
            keyword,
            obj({"meta": {"type": "object", "properties": {"a": {"type": "string"}}, keyword: value}}),
            "$.properties.meta",
            f"`{keyword}` is not supported",
        )
        for keyword, value in [
            ("dependentRequired", {"a": ["b"]}),
            ("dependentSchemas", {"a": {}}),
            ("patternProperties", {"^x": {"type": "string"}}),
            ("unevaluatedProperties", False),
            ("propertyNames", {"pattern": "^a"}),
            ("minProperties", 1),
            ("maxProperties", 2),
        ]
    ],
    *[
        (
            keyword,
            obj({"tags": {"type": "array", "items": {"type": "string"}, keyword: value}}),
            "$.properties.tags",
            f"`{keyword}` is not supported",
        )
        for keyword, value in [("contains", {"const": "a"}), ("uniqueItems", True), ("prefixItems", [])]
    ],
    ("unknown keyword", obj({"a": {"type": "string", "patern": "x"}}), "$.properties.a", "unknown keyword"),
    (
        "external $ref",
        obj({"a": {"$ref": "other.json#/$defs/A"}}),
        "$.properties.a.$ref",
        "cannot resolve $ref",
    ),
    ("missing definition", obj({"a": {"$ref": "#/$defs/Nope"}}), "$.properties.a.$ref", "cannot resolve"),
    ("unknown type", obj({"a": {"type": "str"}}), "$.properties.a.type", 'unknown type "str"'),
    (
        "two types",
        obj({"a": {"type": ["string", "number"]}}),
        "$.properties.a.type",
        "several types",
    ),
    ("format", obj({"url": {"type": "string", "format": "uri"}}), "$.properties.url.format", '"uri"'),
    ("no properties", obj({"meta": {"type": "object"}}), "$.properties.meta", "no `properties`"),
    (
        "empty properties",
        obj({"meta": {"type": "object", "properties": {}}}),
        "$.properties.meta",
        "no `properties`",
    ),
    ("no items", obj({"issues": {"type": "array", "items": {"type": "array"}}}), ISSUES, "no `items`"),
    ("no type", obj({"a": {"description": "anything"}}), "$.properties.a", "no `type`"),
    (
        "tuple items",
        obj({"a": {"type": "array", "items": [{"type": "string"}]}}),
        "$.properties.a.items",
        "must be one schema",
    ),
    (
        "required unknown",
        obj({"name": {"type": "string"}}, required=["nmae"]),
        "$.required",
        "`nmae` is required but is not a property",
    ),
    (
        "keyword for another type",
        obj({"a": {"type": "string", "minimum": 1}}),
        "$.properties.a",
        "`minimum` needs type",
    ),
    (
        "enum value of the wrong type",
        obj({"a": {"type": "string", "enum": ["x", 1]}}),
        "$.properties.a.enum[1]",
        "not of type string",
    ),
    (
        "anyOf beside type",
        obj({"a": {"type": "string", "anyOf": [{"type": "string"}]}}),
        "$.properties.a",
        "`anyOf` cannot be combined with `type`",
    ),
    (
        "nested $defs",
        obj({"a": obj({"b": {"type": "string"}}, **{"$defs": {"X": {"type": "string"}}})}),
        "$.properties.a",
        "only supported at the root",
    ),
    (
        "draft-4 exclusiveMinimum",
        obj({"a": {"type": "number", "exclusiveMinimum": True}}),
        "$.properties.a.exclusiveMinimum",
        "must be a number",
    ),
    ("property name with spaces", obj({"a b": {"type": "object"}}), '$.properties["a b"]', "no `properties`"),
    (
        "bad definition",
        obj({"a": {"$ref": "#/$defs/A"}}, **{"$defs": {"A": {"type": "object", "oneOf": []}}}),
        "$.$defs.A",
        "`oneOf` is not supported",
    ),
    (
        "too many properties",
        obj({f"p{i}": {"type": "string"} for i in range(5001)}),
        "$",
        "5001 object properties; OpenAI allows at most 5000",
    ),
    (
        "too many enum values",
        obj({f"e{i}": {"type": "integer", "enum": list(range(100))} for i in range(11)}),
        "$",
        "enum values; OpenAI allows at most 1000",
    ),
    (
        "large enum too long",
        obj({"code": {"type": "string", "enum": [f"{i:04d}" + "x" * 60 for i in range(251)]}}),
        "$.properties.code.enum",
        "at most 15000 characters",
    ),
]


@pytest.mark.parametrize(
    ("schema", "path", "fragment"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS]
)
def test_rejections_name_the_file_and_json_path(schema: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(SchemaError) as info:
        to_strict(schema, where=WHERE)
    err = info.value
    assert err.where == WHERE
    assert err.message.startswith(f"{path}: "), err.message
    assert fragment in err.message
    assert err.hint
    assert err.exit_code == 2


def test_rejection_hints_say_how_to_fix() -> None:
    def hint(schema: dict[str, Any]) -> str:
        with pytest.raises(SchemaError) as info:
            to_strict(schema, where=WHERE)
        return info.value.hint or ""

    assert "`anyOf`" in hint(obj({"a": {"oneOf": [{"type": "string"}]}}))
    assert "Did you mean `string`?" in hint(obj({"a": {"type": "strng"}}))
    assert "Did you mean `pattern`?" in hint(obj({"a": {"type": "string", "patern": "x"}}))
    assert "date-time" in hint(obj({"a": {"type": "string", "format": "datetime"}}))
    assert "Did you mean `name`?" in hint(obj({"name": {"type": "string"}}, required=["nmae"]))
    assert "remove `default`" in hint(obj({"a": {"type": "string", "default": "x"}}))


def test_recursive_refs_are_allowed_and_do_not_count_as_infinite_depth() -> None:
    schema = obj(
        {"tree": {"$ref": "#/$defs/Node"}, "parent": {"$ref": "#"}},
        ["tree"],
        **{
            "$defs": {
                "Node": obj(
                    {
                        "name": {"type": "string"},
                        "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                    },
                    ["name", "children"],
                )
            }
        },
    )
    strict = to_strict(schema, where=WHERE)
    assert strict["$defs"]["Node"]["additionalProperties"] is False


# --- column types and json_transform -------------------------------------------------------------

TYPED = obj(
    {
        "sentiment": {"type": "string", "enum": ["positive", "negative"]},
        "score": {"type": "integer"},
        "ratio": {"type": "number"},
        "ok": {"type": "boolean"},
        "issues": {"type": "array", "items": {"type": "string"}},
        "meta": obj({"a": {"type": "integer"}, 'we"ird': {"type": "string"}}),
        "rows": {"type": "array", "items": obj({"d": {"type": "string", "format": "date"}})},
        "when": {"type": "string", "format": "date"},
        "at": {"type": "string", "format": "date-time"},
        "clock": {"type": "string", "format": "time"},
        "x": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        "same": {"anyOf": [{"type": "string"}, {"type": "string", "format": "email"}]},
        "level": {"enum": [1, 2, 3]},
        "mixed": {"enum": ["a", 1]},
        "person": {"$ref": "#/$defs/Person"},
        "tree": {"$ref": "#/$defs/Node"},
    },
    ["sentiment", "score", "issues"],
    **{
        "$defs": {
            "Person": obj({"name": {"type": "string"}}, ["name"]),
            "Node": obj(
                {"name": {"type": "string"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
                ["name", "kids"],
            ),
        }
    },
)


def test_column_types() -> None:
    assert column_types(to_strict(TYPED, where=WHERE)) == [
        ("sentiment", "VARCHAR"),
        ("score", "BIGINT"),
        ("ratio", "DOUBLE"),
        ("ok", "BOOLEAN"),
        ("issues", "VARCHAR[]"),
        ("meta", 'STRUCT("a" BIGINT, "we""ird" VARCHAR)'),
        ("rows", 'STRUCT("d" DATE)[]'),
        ("when", "DATE"),
        ("at", "TIMESTAMPTZ"),
        ("clock", "VARCHAR"),
        ("x", "JSON"),
        ("same", "VARCHAR"),
        ("level", "BIGINT"),
        ("mixed", "JSON"),
        ("person", 'STRUCT("name" VARCHAR)'),
        ("tree", 'STRUCT("name" VARCHAR, "kids" JSON[])'),
    ]


def test_json_structure() -> None:
    structure = json_structure(to_strict(TYPED, where=WHERE))
    assert structure["issues"] == ["VARCHAR"]
    assert structure["meta"] == {"a": "BIGINT", 'we"ird': "VARCHAR"}
    assert structure["rows"] == [{"d": "DATE"}]
    assert structure["x"] == "JSON"
    assert structure["tree"] == {"name": "VARCHAR", "kids": ["JSON"]}


def test_json_transform_round_trip_in_duckdb() -> None:
    strict = to_strict(TYPED, where=WHERE)
    answer = {
        "sentiment": "positive",
        "score": 7,
        "ratio": 3,
        "ok": True,
        "issues": ["battery", "screen"],
        "meta": {"a": 1, 'we"ird': "w"},
        "rows": [{"d": "2024-02-29"}],
        "when": "2024-03-01",
        "at": "2024-03-01T10:20:30Z",
        "clock": "10:20:30",
        "x": 5,
        "same": "a@b.co",
        "level": 2,
        "mixed": "a",
        "person": None,
        "tree": {"name": "root", "kids": [{"name": "leaf", "kids": []}]},
    }
    assert AnswerValidator(strict, "typed").check(json.dumps(answer)) == ("ok", "")
    con = duckdb.connect()
    con.execute("CREATE TABLE answers (answer VARCHAR)")
    con.execute("INSERT INTO answers VALUES (?)", [json.dumps(answer)])
    con.execute(
        "CREATE TABLE out AS SELECT unnest(json_transform(answer, ?)) FROM answers",
        [json.dumps(json_structure(strict))],
    )
    columns = ", ".join(f'"{name}" {sql_type}' for name, sql_type in column_types(strict))
    con.execute(f"CREATE TABLE expected ({columns})")  # column_types is valid DuckDB DDL
    described = [(row[0], row[1]) for row in con.execute("DESCRIBE out").fetchall()]
    assert described == [(row[0], row[1]) for row in con.execute("DESCRIBE expected").fetchall()]
    row = dict(zip([c for c, _ in described], con.execute("SELECT * FROM out").fetchone() or (), strict=True))
    assert row["sentiment"] == "positive"
    assert row["score"] == 7
    assert row["ratio"] == 3.0 and isinstance(row["ratio"], float)
    assert row["ok"] is True
    assert row["issues"] == ["battery", "screen"]
    assert row["meta"] == {"a": 1, 'we"ird': "w"}
    assert row["rows"] == [{"d": dt.date(2024, 2, 29)}]
    assert row["when"] == dt.date(2024, 3, 1)
    assert row["at"] == dt.datetime(2024, 3, 1, 10, 20, 30, tzinfo=dt.UTC)
    # an offset keeps its instant (TIMESTAMP would silently drop it)
    offset = con.execute(
        "SELECT json_transform(?, ?).at", ['{"at": "2024-01-02T03:04:05+02:00"}', json.dumps(json_structure(strict))]
    ).fetchone()
    assert offset is not None and offset[0] == dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=dt.UTC)
    assert row["clock"] == "10:20:30"
    assert json.loads(row["x"]) == 5
    assert row["level"] == 2
    assert row["person"] is None
    assert row["tree"]["name"] == "root"
    assert [json.loads(kid) for kid in row["tree"]["kids"]] == [{"name": "leaf", "kids": []}]


# --- answer validation ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> AnswerValidator:
    return AnswerValidator(
        to_strict(load_schema(DATA / "review_analysis.yml"), where=WHERE), "review_analysis"
    )


GOOD: dict[str, Any] = {
    "sentiment": "negative",
    "score": 2,
    "issues": [{"topic": "battery", "severity": "high"}, {"topic": "price", "severity": None}],
    "reviewed_on": None,
}


def test_valid_answers_pass(validator: AnswerValidator) -> None:
    assert validator.check(json.dumps(GOOD)) == ("ok", "")
    assert validator.check(json.dumps({**GOOD, "issues": [], "reviewed_on": "2024-05-01"})) == ("ok", "")


@pytest.mark.parametrize(
    "content",
    ['{"sentiment": "negative", "score": 2', "Sure! Here is the JSON", "", '{"a": 1} trailing'],
)
def test_invalid_json(validator: AnswerValidator, content: str) -> None:
    outcome, reason = validator.check(content)
    assert outcome == "invalid_json"
    assert reason and "line 1" in reason


VIOLATIONS: list[tuple[dict[str, Any], str]] = [
    ({"sentiment": "mixed"}, "sentiment: Input should be 'positive', 'negative' or 'neutral'"),
    ({"sentiment": None}, "sentiment: Input should be 'positive', 'negative' or 'neutral'"),
    ({"score": 6}, "score: Input should be less than or equal to 5"),
    ({"score": 0}, "score: Input should be greater than or equal to 1"),
    ({"score": "3"}, "score: Input should be a valid integer"),
    ({"score": 2.5}, "score: Input should be a valid integer"),
    ({"score": True}, "score: Input should be a valid integer"),
    ({"issues": "battery"}, "issues: Input should be a valid array"),
    ({"issues": [{"topic": "x"}]}, "issues[0].severity: Field required"),
    (
        {"issues": [{"topic": "x", "severity": "low", "extra": 1}]},
        "issues[0].extra: Extra inputs are not",
    ),
    ({"issues": [{"topic": None, "severity": "low"}]}, "issues[0].topic: Input should be a valid string"),
    ({"reviewed_on": "2024-02-30"}, "reviewed_on: Value error, not a valid date"),
    ({"reviewed_on": "yesterday"}, "reviewed_on: Value error, not a valid date"),
    ({"confidence": 0.9}, "confidence: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("change", "reason"), VIOLATIONS)
def test_schema_violations_name_the_field(
    validator: AnswerValidator, change: dict[str, Any], reason: str
) -> None:
    outcome, got = validator.check(json.dumps({**GOOD, **change}))
    assert outcome == "schema_violation"
    assert got.startswith(reason), got


def test_missing_nullable_field_is_still_a_violation(validator: AnswerValidator) -> None:
    answer = {k: v for k, v in GOOD.items() if k != "reviewed_on"}
    assert validator.check(json.dumps(answer)) == ("schema_violation", "reviewed_on: Field required")


def test_root_must_be_an_object(validator: AnswerValidator) -> None:
    assert validator.check("[1, 2]") == ("schema_violation", "$: Input should be an object")


def test_several_errors_are_counted(validator: AnswerValidator) -> None:
    outcome, reason = validator.check(json.dumps({**GOOD, "score": 9, "sentiment": "x"}))
    assert outcome == "schema_violation"
    assert reason.endswith("(and 1 more)")


CONSTRAINED = obj(
    {
        "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "word": {"type": "string", "pattern": "^(?!no)[a-z]+$", "minLength": 2, "maxLength": 5},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
        "p": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "multipleOf": 0.25},
        "at": {"type": "string", "format": "date-time"},
        "id": {"type": "string", "format": "uuid"},
        "class": {"type": "integer", "enum": [1, 2]},
        "half": {"enum": [0.5, 1.5]},
        "model_config": {"type": "boolean"},
    },
    required=["code", "word", "tags", "p", "at", "id", "class", "half", "model_config"],
)
CONSTRAINED_GOOD: dict[str, Any] = {
    "code": "ABC",
    "word": "yes",
    "tags": ["a"],
    "p": 0.75,
    "at": "2024-01-01T10:00:00+02:00",
    "id": "12345678-1234-5678-1234-567812345678",
    "class": 2,
    "half": 1.5,
    "model_config": False,
}
CONSTRAINED_BAD: list[tuple[dict[str, Any], str]] = [
    ({"code": "ABCD"}, "code: String should match pattern"),
    ({"word": "nope"}, "word: String should match pattern"),
    ({"word": "abcdef"}, "word: String should have at most 5 characters"),
    ({"tags": []}, "tags: List should have at least 1 item"),
    ({"tags": ["a", "b", "c"]}, "tags: List should have at most 2 items"),
    ({"p": 1}, "p: Input should be less than 1"),
    ({"p": 0.3}, "p: Input should be a multiple of 0.25"),
    ({"at": "2024-01-01"}, "at: Value error, not a valid date-time"),
    ({"id": "not-a-uuid"}, "id: Value error, not a valid uuid"),
    ({"class": 3}, "class: Input should be 1 or 2"),
    ({"class": True}, "class: Value error, Input should be a number, not a boolean"),
    ({"half": 2.5}, "half: Value error, Input should be 0.5 or 1.5"),
    ({"model_config": None}, "model_config: Input should be a valid boolean"),
]


def test_constraints_formats_and_odd_names() -> None:
    validator = AnswerValidator(to_strict(CONSTRAINED, where=WHERE), "odd name / 1")
    assert validator.check(json.dumps(CONSTRAINED_GOOD)) == ("ok", "")
    for change, reason in CONSTRAINED_BAD:
        outcome, got = validator.check(json.dumps({**CONSTRAINED_GOOD, **change}))
        assert (outcome, got[: len(reason)]) == ("schema_violation", reason), (change, got)


TREE = obj(
    {"tree": {"$ref": "#/$defs/Node"}},
    ["tree"],
    **{
        "$defs": {
            "Node": obj(
                {
                    "name": {"type": "string"},
                    "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                ["name", "kids"],
            )
        }
    },
)


def test_recursive_definitions_are_validated_at_every_level() -> None:
    validator = AnswerValidator(to_strict(TREE, where=WHERE), "tree")
    deep = {"tree": {"name": "a", "kids": [{"name": "b", "kids": [{"name": "c", "kids": []}]}]}}
    assert validator.check(json.dumps(deep)) == ("ok", "")
    deep["tree"]["kids"][0]["kids"][0]["name"] = 3
    assert validator.check(json.dumps(deep)) == (
        "schema_violation",
        "tree.kids[0].kids[0].name: Input should be a valid string",
    )


UNITS = obj({"v": {"anyOf": [{"type": "integer"}, obj({"unit": {"type": "string"}}, ["unit"])]}}, ["v"])


def test_anyof_accepts_each_branch_and_nothing_else() -> None:
    validator = AnswerValidator(to_strict(UNITS, where=WHERE), "u")
    assert validator.check('{"v": 3}')[0] == "ok"
    assert validator.check('{"v": {"unit": "kg"}}')[0] == "ok"
    assert validator.check('{"v": "3"}')[0] == "schema_violation"
    assert validator.check('{"v": null}')[0] == "schema_violation"


def test_the_validator_without_model_instances_agrees_with_the_model() -> None:
    """`check` takes an answer the instance-free validator accepts as ok without asking the model: it must
    accept exactly what the model accepts."""
    deep = {"tree": {"name": "a", "kids": [{"name": "b", "kids": [{"name": "c", "kids": []}]}]}}
    cases: list[tuple[dict[str, Any], str, list[str]]] = [
        (load_schema(DATA / "review_analysis.yml"), "review",
         [json.dumps({**GOOD, **change}) for change, _ in [({}, ""), *VIOLATIONS]]),
        (CONSTRAINED, "odd name / 1",
         [json.dumps({**CONSTRAINED_GOOD, **change}) for change, _ in [({}, ""), *CONSTRAINED_BAD]]),
        (TREE, "tree", [json.dumps(deep), json.dumps({"tree": {"name": "a", "kids": [{"name": 3, "kids": []}]}}),
                        '{"tree": {"name": "a", "kids": [], "x": 1}}', '{"tree": null}']),
        (UNITS, "u", ['{"v": 3}', '{"v": {"unit": "kg"}}', '{"v": "3"}', '{"v": null}', '{"v": {"unit": 1}}',
                      '{"v": 3, "v": "x"}', '{"v": 3} x', "[]", "", '{"v": 3.0}', '{"v": true}']),
    ]
    for schema, name, contents in cases:
        validator = AnswerValidator(to_strict(schema, where=WHERE), name)
        assert validator.accepts is not None, name
        for content in contents:
            verdicts = []
            for validate in (validator.accepts, validator.validate_json):
                try:
                    validate(content)
                    verdicts.append(True)
                except pydantic.ValidationError:
                    verdicts.append(False)
            assert verdicts[0] == verdicts[1], (name, content)
        assert any(validator.check(c) == ("ok", "") for c in contents)
        assert any(validator.check(c)[0] != "ok" for c in contents)


# --- files and fingerprints ----------------------------------------------------------------------


def test_load_schema_json_and_yaml_agree() -> None:
    from_yaml = load_schema(DATA / "review_analysis.yml")
    assert from_yaml == load_schema(DATA / "review_analysis.json")
    assert from_yaml["properties"]["score"] == {"type": "integer", "minimum": 1, "maximum": 5}


def test_yaml_keeps_dates_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "s.yml"
    path.write_text("type: object\nproperties:\n  d: {type: string, enum: [2024-01-01]}\n")
    assert load_schema(path)["properties"]["d"]["enum"] == ["2024-01-01"]


@pytest.mark.parametrize(
    ("name", "text", "line", "fragment"),
    [
        ("bad.json", '{\n  "type": "object",\n  "properties": {,}\n}\n', 3, "invalid JSON"),
        # where the brace that is never closed was opened (the bracket of bad.yaml: PyYAML says end of file)
        ("bad.yml", "type: object\nproperties:\n  a: {type: string\n  b: 1\n", 3, "invalid YAML"),
        ("bad.yaml", "type: object\nproperties: [\n", 3, "invalid YAML"),
        (
            "dup.yml",
            "type: object\nproperties:\n  a: {type: string}\n  a: {type: integer}\n",
            4,
            "duplicate key `a`",
        ),
    ],
)
def test_malformed_files_point_at_the_line(
    tmp_path: Path, name: str, text: str, line: int, fragment: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SchemaError) as info:
        load_schema(path)
    assert info.value.where == f"{path}:{line}"
    assert fragment in info.value.message
    assert info.value.hint


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [("list.json", "[1, 2]", "found a list"), ("s.txt", "{}", "unknown schema file type `.txt`")],
)
def test_files_that_are_not_schemas(tmp_path: Path, name: str, text: str, fragment: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SchemaError, match=fragment) as info:
        load_schema(path)
    assert info.value.where == str(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="cannot read schema file"):
        load_schema(tmp_path / "nope.json")


def test_fingerprint_is_canonical_but_sees_every_change() -> None:
    a = to_strict(load_schema(DATA / "review_analysis.json"), where=WHERE)
    reordered = json.loads(json.dumps(a, sort_keys=True))
    assert schema_fingerprint(a) == schema_fingerprint(reordered)
    assert len(schema_fingerprint(a)) == 64
    changed = copy.deepcopy(a)
    changed["properties"]["score"]["maximum"] = 6
    assert schema_fingerprint(changed) != schema_fingerprint(a)
    swapped = to_strict(obj({"b": {"type": "string"}, "a": {"type": "string"}}), where=WHERE)
    plain = to_strict(obj({"a": {"type": "string"}, "b": {"type": "string"}}), where=WHERE)
    assert schema_fingerprint(swapped) != schema_fingerprint(plain)  # column order is part of it
