"""The whole tool-calling loop: the model asks for ``get_weather``, the program
runs it, appends the assistant's message and the tool's result, and asks again
for the final answer.

    PORTWAY_PAT=pwt_... python examples/tool_loop.py
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
        "function": {
            "name": "get_weather",
            "description": "Current temperature for a given location.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "City and country",
                        "maxLength": 80,
                    }
                },
                "required": ["location"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
]


def get_weather(location: str) -> dict[str, str]:
    """A stand-in for a weather service."""
    known = {"London": ("15°C", "Rainy"), "New York": ("20°C", "Partly cloudy")}
    for city, (temperature, conditions) in known.items():
        if city in location:
            return {"location": city, "temperature": temperature, "conditions": conditions}
    return {"location": location, "temperature": "N/A", "conditions": "Unknown"}


messages = [{"role": "user", "content": "What is the weather like in New York today?"}]
first = client.chat.completions.create(
    model=MODEL,
    messages=messages,
    tools=tools,
    tool_choice=os.environ.get("PORTWAY_TOOL_CHOICE", "required"),
    parallel_tool_calls=False,
    max_tokens=400,  # one call, its location at most 80 characters: room to spare
)
message = first.choices[0].message
print("tool calls:", message.tool_calls)
messages.append(message)
for call in message.tool_calls or []:
    result = get_weather(**json.loads(call.function.arguments))
    messages.append(
        {
            "role": "tool",
            "tool_call_id": call.id,
            "name": call.function.name,
            "content": json.dumps(result),
        }
    )
second = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=64)
print("final answer:", second.choices[0].message.content)
