"""A weather tool call through Portway: the model answers with a call to
``get_weather``, which the program prints.

    PORTWAY_PAT=pwt_... python examples/tool_call.py

``tool_choice="required"`` makes the small embedded model call the tool (Portway
enforces it by constrained decoding); with a larger model, ``"auto"`` lets the
model decide.
"""

import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("PORTWAY_BASE_URL", "http://127.0.0.1:8000/v1"),
    api_key=os.environ["PORTWAY_PAT"],
)
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
        },
    }
]
completion = client.chat.completions.create(
    model=os.environ.get("PORTWAY_MODEL", "google/gemma/models/gemma-3-270m"),
    messages=[{"role": "user", "content": "What is the weather like in Paris today?"}],
    tools=tools,
    tool_choice=os.environ.get("PORTWAY_TOOL_CHOICE", "required"),
    parallel_tool_calls=False,
    max_tokens=400,  # one call, its location at most 80 characters: room to spare
)
print(completion.choices[0].message.tool_calls)
