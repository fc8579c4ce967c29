"""The tool-calling loop with the Responses API: the model calls ``get_weather``,
the program runs it and sends back a ``function_call_output`` that continues the
stored conversation (``previous_response_id``), and the model answers.

    PORTWAY_PAT=pwt_... python examples/responses_tools.py

``tool_choice="required"`` makes the small embedded model call the tool (Portway
enforces it by constrained decoding); with a larger model, ``"auto"`` lets the
model decide.
"""

import json
import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("PORTWAY_BASE_URL", "http://127.0.0.1:8000/v1"),
    api_key=os.environ["PORTWAY_PAT"],
)
MODEL = os.environ.get("PORTWAY_MODEL", "google/gemma/models/gemma-3-270m")
tools = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current temperature for a given location.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City and country", "maxLength": 80}
            },
            "required": ["location"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]


def get_weather(location: str) -> dict[str, str]:
    """A stand-in for a weather service."""
    known = {"London": ("15°C", "Rainy"), "New York": ("20°C", "Partly cloudy")}
    for city, (temperature, conditions) in known.items():
        if city in location:
            return {"location": city, "temperature": temperature, "conditions": conditions}
    return {"location": location, "temperature": "N/A", "conditions": "Unknown"}


first = client.responses.create(
    model=MODEL,
    input="What is the weather like in New York today?",
    tools=tools,
    tool_choice=os.environ.get("PORTWAY_TOOL_CHOICE", "required"),
    parallel_tool_calls=False,
    max_output_tokens=400,  # one call, its location at most 80 characters: room to spare
)
outputs = []
for item in first.output:
    if item.type == "function_call":
        print("function call:", item.name, item.arguments)
        result = get_weather(**json.loads(item.arguments))
        outputs.append(
            {"type": "function_call_output", "call_id": item.call_id, "output": json.dumps(result)}
        )
second = client.responses.create(
    model=MODEL,
    previous_response_id=first.id,
    input=outputs,
    max_output_tokens=64,
)
print("final answer:", second.output_text)
