"""Tool calls found in a model's output, as it streams.

``parser_for(family)`` makes a ``ToolCallParser``; its ``feed(text)`` and
``finish()`` turn output into ``TextEvent``, ``CallStart`` and ``CallArgs`` events.
``family_from_template`` tells the family from a chat template (see ``families``
for the syntax of each). Reasoning (``<think>``) is split off first, by
``portway.toolcalls.reasoning.ThinkSplitter``.

Arguments are a JSON object's text as the model wrote it. For constrained output
(``tool_choice`` ``required`` or a named function, enforced by
``portway.constrain.tool_call_grammar``) they always parse and validate. For
unconstrained output (``auto``), a call whose arguments do not parse as a JSON
object is not a call: its text is left as text.
"""

from portway.toolcalls.events import CallArgs, CallStart, Event, TextEvent, new_call_id
from portway.toolcalls.families import (
    FAMILIES,
    TOOL_CALL_MARKERS,
    family_from_template,
    parser_for,
)
from portway.toolcalls.parser import ToolCallParser

__all__ = [
    "FAMILIES",
    "TOOL_CALL_MARKERS",
    "CallArgs",
    "CallStart",
    "Event",
    "TextEvent",
    "ToolCallParser",
    "family_from_template",
    "new_call_id",
    "parser_for",
]
