"""The JSON schema -> GBNF step of the embedded model: the grammar text, and the real model's constrained answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_dspy_local.models.backends.base import ChatRequest
from pytest_dspy_local.models.backends.embedded import EmbeddedBackend
from pytest_dspy_local.models.backends.json_grammar import SchemaError, repeat, schema_to_gbnf

CHAR = r'char ::= [^"\\] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
INTEGRAL = ("integral-part ::= [0-9] | [1-9] " + "([0-9] " * 14 + "([0-9])?" + ")?" * 14)
STRING = r'string ::= "\"" char* "\"" space'
SPACE = 'space ::= " "?'

ENUM = {"type": "object", "properties": {"team": {"type": "string", "enum": ["tech", "billing"]}},
        "required": ["team"]}
NESTED = {"type": "object", "required": ["customer"], "properties": {"customer": {
    "type": "object", "properties": {"name": {"type": "string"}, "vip": {"type": "boolean"}},
    "required": ["name", "vip"]}}}
ARRAY = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
         "required": ["tags"]}
RANGE = {"type": "object", "properties": {"stars": {"type": "integer", "minimum": 1, "maximum": 5}},
         "required": ["stars"]}
BOOLEAN = {"type": "object", "properties": {"urgent": {"type": "boolean"}}, "required": ["urgent"]}
# What DSPy 3.4's JSONAdapter sends for `answer: str` plus an optional field and a $ref'd model.
DSPY_LIKE = {"type": "object", "additionalProperties": False, "required": ["answer"],
             "properties": {"answer": {"type": "string"}, "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                            "item": {"$ref": "#/$defs/Item"}},
             "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "number"}}, "required": ["n"]}}}


def test_enum_is_its_literals_without_a_trailing_space() -> None:
    assert schema_to_gbnf(ENUM).splitlines() == [
        'root ::= "{" space team-kv "}" space',
        SPACE,
        r'team ::= "\"tech\"" | "\"billing\""',
        r'team-kv ::= "\"team\"" space ":" space team',
    ]


def test_nested_object_gets_rules_named_by_its_path() -> None:
    assert schema_to_gbnf(NESTED).splitlines() == [
        "boolean ::= (\"true\" | \"false\") space",
        CHAR,
        'customer ::= "{" space customer-name-kv "," space customer-vip-kv "}" space',
        r'customer-kv ::= "\"customer\"" space ":" space customer',
        r'customer-name-kv ::= "\"name\"" space ":" space string',
        r'customer-vip-kv ::= "\"vip\"" space ":" space boolean',
        'root ::= "{" space customer-kv "}" space',
        SPACE,
        STRING,
    ]


def test_array_with_max_items_nests_optional_items() -> None:
    rules = dict(line.split(" ::= ", 1) for line in schema_to_gbnf(ARRAY).splitlines())
    assert rules["tags"] == '"[" space (string ("," space string ("," space string)?)?)? "]" space'
    assert repeat("x", 1, None, '","') == 'x ("," x)*'
    assert repeat("x", 0, None, '","') == '(x ("," x)*)?'
    assert repeat("x", 2, 2, '","') == 'x "," x'


def test_integer_range_is_spelled_out_and_a_lower_bound_drops_the_sign() -> None:
    rules = dict(line.split(" ::= ", 1) for line in schema_to_gbnf(RANGE).splitlines())
    assert rules["stars"] == '("1" | "2" | "3" | "4" | "5") space'
    wide = {"type": "integer", "minimum": 0, "maximum": 10_000}
    assert schema_to_gbnf(wide).splitlines() == [INTEGRAL, "root ::= integral-part space", SPACE]
    assert 'root ::= ("-"? integral-part) space' in schema_to_gbnf({"type": "integer", "maximum": 3})


def test_boolean_and_optional_fields() -> None:
    assert 'root ::= "{" space urgent-kv "}" space' in schema_to_gbnf(BOOLEAN)
    rules = dict(line.split(" ::= ", 1) for line in schema_to_gbnf(DSPY_LIKE).splitlines())
    assert rules["root"] == '"{" space answer-kv ( "," space ( note-kv note-rest | item-kv ) )? "}" space'
    assert rules["note"] == "string | null"
    assert rules["item"] == "Item" and rules["Item"] == '"{" space Item-n-kv "}" space'


def test_unsupported_schema_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="only local"):
        schema_to_gbnf({"$ref": "https://example.com/schema.json"})
    with pytest.raises(SchemaError, match="unsupported schema"):
        schema_to_gbnf({"type": "object", "properties": {"when": {"type": "date"}}})


@pytest.mark.parametrize("schema", [ENUM, NESTED, ARRAY, BOOLEAN, DSPY_LIKE], ids=["enum", "nested", "array",
                                                                                    "boolean", "dspy"])
def test_same_grammar_as_llama_cpp_python(schema: dict[str, Any]) -> None:
    # The old engine's converter, where it is still installed (the test extras): the same text, so the same answers.
    grammar = pytest.importorskip("llama_cpp.llama_grammar")
    assert schema_to_gbnf(schema) == grammar.json_schema_to_gbnf(json.dumps(schema))


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedBackend]:
    """The real embedded SmolLM2, shared by the constrained-answer tests."""
    backend = EmbeddedBackend("smollm2-135m", n_ctx=2048)
    yield backend
    backend.close()


def ask(backend: EmbeddedBackend, question: str, schema: dict[str, Any]) -> Any:
    """The model's constrained answer, parsed."""
    messages = ({"role": "system", "content": "Answer with one JSON object."}, {"role": "user", "content": question})
    result = backend.chat(ChatRequest(messages=messages, schema=schema, max_tokens=60))
    assert result.finish_reason == "stop", result
    return json.loads(result.text)


def test_model_answers_match_their_schemas(embedded: EmbeddedBackend) -> None:
    team = ask(embedded, "My invoice is wrong. Which team?", ENUM)
    assert set(team) == {"team"} and team["team"] in ("tech", "billing")
    customer = ask(embedded, "Ann is a VIP customer. Describe the customer.", NESTED)
    assert set(customer) == {"customer"} and set(customer["customer"]) == {"name", "vip"}
    assert isinstance(customer["customer"]["name"], str) and isinstance(customer["customer"]["vip"], bool)
    tags = ask(embedded, "Tag this ticket: printer jams on page two.", ARRAY)
    assert set(tags) == {"tags"} and len(tags["tags"]) <= 3 and all(isinstance(t, str) for t in tags["tags"])
    stars = ask(embedded, "Rate 'great product' from 1 to 5 stars.", RANGE)
    assert set(stars) == {"stars"} and stars["stars"] in range(1, 6)
    urgent = ask(embedded, "The server is down! Is this urgent?", BOOLEAN)
    assert set(urgent) == {"urgent"} and isinstance(urgent["urgent"], bool)
