"""A JSON schema as a llama.cpp GBNF grammar, for the embedded model's constrained decoding.

The grammar accepts the language llama-cpp-python's converter (``llama_cpp.llama_grammar``,
after llama.cpp's ``json_schema_to_grammar.py``) built, which the embedded model used until it
moved to xllamacpp: JSON on one line, at most one space between tokens, properties in the
schema's order (required ones first), no keys the schema does not name unless
``additionalProperties`` allows them. The answers at temperature 0 depend on that language:
xllamacpp's own schema engine (LLGuidance) allows newlines and indentation, and the 135M
model then copies DSPy's multi-line template (bench/README.md).

One extension: integer bounds. ``minimum >= 0`` forbids the sign; a range of at most
``MAX_ENUMERATED`` values is spelled out. ``pattern`` and string ``format`` are accepted as any string.
"""

from __future__ import annotations

import json
import re
from typing import Any

JsonSchema = dict[str, Any]

# One optional space: the model cannot run away in whitespace or copy a multi-line layout.
SPACE = '" "?'
MAX_ENUMERATED = 256


def _digits_up_to(count: int) -> str:
    """``([0-9] ([0-9] (...)?)?)?``: between 0 and ``count`` digits."""
    return "([0-9] " * (count - 1) + "([0-9])?" + ")?" * (count - 1)


# name -> (body, rules it uses)
PRIMITIVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "boolean": ('("true" | "false") space', ()),
    "null": ('"null" space', ()),
    "char": (r'[^"\\] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])', ()),
    "string": (r'"\"" char* "\"" space', ("char",)),
    "integral-part": (f"[0-9] | [1-9] {_digits_up_to(15)}", ()),
    "decimal-part": (f"[0-9] {_digits_up_to(15)}", ()),
    "integer": ('("-"? integral-part) space', ("integral-part",)),
    "number": (
        '("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)? space',
        ("integral-part", "decimal-part"),
    ),
    "value": ("object | array | string | number | boolean | null",
              ("object", "array", "string", "number", "boolean", "null")),
    "object": ('"{" space ( string ":" space value ("," space string ":" space value)* )? "}" space',
               ("string", "value")),
    "array": ('"[" space ( value ("," space value)* )? "]" space', ("value",)),
}
RESERVED = {"root", "space", "dot", "uuid", *PRIMITIVES}
_NOT_NAME = re.compile(r"[^a-zA-Z0-9-]+")
_ESCAPES = {"\r": "\\r", "\n": "\\n", '"': '\\"', "\\": "\\\\"}


class SchemaError(ValueError):
    """The schema uses something this converter cannot turn into a grammar."""


def literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    return '"' + re.sub(r'[\r\n"\\]', lambda m: _ESCAPES[m.group(0)], text) + '"'


def repeat(item: str, low: int, high: int | None, separator: str = "") -> str:
    """``low`` to ``high`` (None: unbounded) ``item``s, ``separator`` (a GBNF sequence, may be empty) between them."""
    then = f"{separator} {item}" if separator else item  # one more item after the first
    if low == 0 and high is None:
        return f"({item} ({then})*)?"
    head = " ".join([item, *[then] * (low - 1)]) if low else ""
    if high is None:
        return f"{head} ({then})*"
    more = high - low
    if more == 0:
        return head
    if low > 0:
        return f"{head} {_optional_run(then, then, more)}"
    return _optional_run(item, then, more)


def _optional_run(first: str, then: str, count: int) -> str:
    """Up to ``count`` items, nested: ``(first (then (then)?)?)?``."""
    if count == 1:
        return f"({first})?"
    return f"({first} " + f"({then} " * (count - 2) + f"({then})?" + ")?" * (count - 1)


class _Converter:
    def __init__(self, schema: JsonSchema) -> None:
        self.schema = schema
        self.rules: dict[str, str] = {"space": SPACE}
        self.resolving: set[str] = set()

    def add(self, name: str, body: str) -> str:
        """Add rule ``name`` (made unique unless an identical rule has it); return the name used."""
        base = _NOT_NAME.sub("-", name)
        key, i = base, 0
        while key in self.rules and self.rules[key] != body:
            key, i = f"{base}{i}", i + 1
        self.rules[key] = body
        return key

    def primitive(self, kind: str, name: str | None = None) -> str:
        body, uses = PRIMITIVES[kind]
        added = self.add(name or kind, body)  # before its uses: value and object refer to each other
        for dep in uses:
            if dep not in self.rules:
                self.primitive(dep)
        return added

    def visit(self, schema: Any, name: str) -> str:
        """The rule (added if new) that matches ``schema``; ``name`` is its path, "" for the root."""
        if not isinstance(schema, dict):
            raise SchemaError(f"expected a schema object, got {schema!r}")
        rule = name + "-" if name in RESERVED else name or "root"
        if "$ref" in schema:
            return self.add(rule, self.ref(schema["$ref"]))
        if "anyOf" in schema or "oneOf" in schema:
            return self.add(rule, self.union(schema.get("anyOf") or schema["oneOf"], name))
        kind = schema.get("type")
        if isinstance(kind, list):
            return self.add(rule, self.union([{"type": k} for k in kind], name))
        if "const" in schema:
            return self.add(rule, literal(json.dumps(schema["const"])))
        if "enum" in schema:
            return self.add(rule, " | ".join(literal(json.dumps(v)) for v in schema["enum"]))
        return self.typed(schema, kind, name, rule)

    def typed(self, schema: JsonSchema, kind: Any, name: str, rule: str) -> str:
        extra = schema.get("additionalProperties")
        if kind in (None, "object") and ("properties" in schema or ("additionalProperties" in schema and extra
                                                                     is not True)):
            return self.add(rule, self.object(schema, name))
        if kind in (None, "array") and "items" in schema:
            return self.add(rule, self.array(schema, name))
        if kind == "string" and ("minLength" in schema or "maxLength" in schema):
            char = self.primitive("char")
            chars = repeat(char, schema.get("minLength", 0), schema.get("maxLength"))
            return self.add(rule, rf'"\"" {chars} "\"" space')
        if kind == "integer" and any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum",
                                                           "exclusiveMaximum")):
            return self.integer(schema, rule)
        if kind == "object" or not schema or (kind is None and set(schema) <= {"title", "description"}):
            return self.add(rule, self.primitive("object"))
        if kind not in PRIMITIVES or kind in ("char", "value", "integral-part", "decimal-part"):
            raise SchemaError(f"unsupported schema {json.dumps(schema)[:120]}")
        return self.primitive(kind, "root" if rule == "root" else None)

    def ref(self, ref: str) -> str:
        if not ref.startswith("#/"):
            raise SchemaError(f"unsupported $ref {ref!r} (only local #/ references)")
        target: Any = self.schema
        for part in ref[2:].split("/"):
            if not isinstance(target, dict) or part not in target:
                raise SchemaError(f"$ref {ref!r} points nowhere")
            target = target[part]
        name = ref.rsplit("/", 1)[-1]
        if _NOT_NAME.sub("-", name) in self.rules or ref in self.resolving:  # defined, or recursive
            return _NOT_NAME.sub("-", name)
        self.resolving.add(ref)
        try:
            return self.visit(target, name)
        finally:
            self.resolving.discard(ref)

    def union(self, options: list[Any], name: str) -> str:
        prefix = f"{name}-" if name else "alternative-"
        return " | ".join(self.visit(option, f"{prefix}{i}") for i, option in enumerate(options))

    def array(self, schema: JsonSchema, name: str) -> str:
        items = schema["items"]
        if isinstance(items, list):
            raise SchemaError("unsupported schema: tuple arrays (items as a list)")
        item = self.visit(items, f"{name}-item" if name else "item")
        body = repeat(item, schema.get("minItems", 0), schema.get("maxItems"), '"," space')
        return f'"[" space {body} "]" space'

    def integer(self, schema: JsonSchema, rule: str) -> str:
        low = schema.get("minimum")
        high = schema.get("maximum")
        if "exclusiveMinimum" in schema:
            low = int(schema["exclusiveMinimum"]) + 1
        if "exclusiveMaximum" in schema:
            high = int(schema["exclusiveMaximum"]) - 1
        if low is not None and high is not None and 0 <= high - low < MAX_ENUMERATED:
            values = " | ".join(literal(str(v)) for v in range(int(low), int(high) + 1))
            return self.add(rule, f"({values}) space")
        if low is not None and low >= 0:
            self.primitive("integral-part")
            return self.add(rule, "integral-part space")
        return self.primitive("integer", "root" if rule == "root" else None)

    def object(self, schema: JsonSchema, name: str) -> str:
        prefix = f"{name}-" if name else ""
        required = set(schema.get("required", []))
        pairs: dict[str, str] = {}
        for key, sub in schema.get("properties", {}).items():
            value = self.visit(sub, prefix + key)
            pairs[key] = self.add(f"{prefix}{key}-kv", f'{literal(json.dumps(key))} space ":" space {value}')
        optional = [k for k in pairs if k not in required]
        extra = schema.get("additionalProperties")
        if extra is True or isinstance(extra, dict):
            value = self.visit({} if extra is True else extra, f"{prefix}additional-value")
            pairs["*"] = self.add(f"{prefix}additional-kv", f'{self.primitive("string")} ":" space {value}')
            optional.append("*")
        body = '"{" space ' + ' "," space '.join(pairs[k] for k in pairs if k in required)
        if optional:
            alternatives = " | ".join(self.optional_chain(optional[i:], pairs, prefix, False)
                                      for i in range(len(optional)))
            body += f' ( "," space ( {alternatives} ) )?' if required else f" ({alternatives} )?"
        return body + ' "}" space'

    def optional_chain(self, keys: list[str], pairs: dict[str, str], prefix: str, comma: bool) -> str:
        """Optional properties ``keys``, in order, any of them left out; the first one present."""
        first, rest = keys[0], keys[1:]
        if first == "*":
            chain = self.add(f"{prefix}additional-kvs", f'{pairs["*"]} ( "," space {pairs["*"]} )*')
        else:
            chain = f'( "," space {pairs[first]} )?' if comma else pairs[first]
        if rest:
            chain += " " + self.add(f"{prefix}{first}-rest", self.optional_chain(rest, pairs, prefix, True))
        return chain

    def text(self) -> str:
        return "\n".join(f"{name} ::= {body}" for name, body in sorted(self.rules.items()))


def schema_to_gbnf(schema: JsonSchema) -> str:
    """The GBNF grammar (root rule ``root``) whose sentences are the JSON values ``schema`` allows."""
    converter = _Converter(schema)
    converter.visit(schema, "")
    return converter.text()
