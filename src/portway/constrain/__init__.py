"""Constrained decoding: grammars that make a model's output valid by construction.

Structured outputs (``response_format``) and forced tool calls (``tool_choice``
``required`` or a named function) are enforced by masking, at every step, the
tokens that would leave the grammar. The engine is llguidance, chosen over
llama.cpp's GBNF grammars and XGrammar because:

* it covers the most of JSON Schema: on JSONSchemaBench (10k real-world schemas)
  it compiles and enforces more schemas than GBNF conversion or XGrammar do;
* it computes masks in microseconds (a lazily built lexer over a token trie, no
  per-schema precompilation of the whole vocabulary), so even Gemma's 262k-token
  vocabulary costs well under a millisecond per token and compiling a schema is
  a few milliseconds;
* it refuses what it cannot enforce (``not``, ``uniqueItems``, ``if``/``then``,
  unknown formats, regex lookarounds) with an error naming the feature, instead of
  silently enforcing a weaker schema, so Portway can answer with a 400;
* its Lark grammars embed JSON Schemas (``%json {...}``), which is how one
  grammar fixes a family's tool-call syntax and validates each tool's arguments;
* compile and per-step costs are bounded by explicit limits (``parser_limits``).

The request side (``json_schema_grammar``, ``json_object_grammar``,
``tool_call_grammar``) checks and bounds schemas and returns a ``Grammar``: Lark
source, independent of any model. ``allow_reasoning`` lets a reasoning model
think before the constrained answer. A backend compiles it for its tokenizer with
``portway.constrain.runtime`` (and ``portway.constrain.llamacpp`` for llama.cpp).
"""

from portway.constrain.errors import SchemaError
from portway.constrain.reasoning import allow_reasoning
from portway.constrain.schema import (
    JSON_FORMAT,
    json_object_grammar,
    json_schema_grammar,
    parser_limits,
)
from portway.constrain.tools import tool_call_grammar
from portway.protocol.bounds import MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH, MAX_TOOLS_BYTES

__all__ = [
    "JSON_FORMAT",
    "MAX_SCHEMA_BYTES",
    "MAX_SCHEMA_DEPTH",
    "MAX_TOOLS_BYTES",
    "SchemaError",
    "allow_reasoning",
    "json_object_grammar",
    "json_schema_grammar",
    "parser_limits",
    "tool_call_grammar",
]
