"""A chat completion through Portway with the stock openai client.

PORTWAY_PAT=pwt_... python examples/chat.py
"""

import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("PORTWAY_BASE_URL", "http://127.0.0.1:8000/v1"),
    api_key=os.environ["PORTWAY_PAT"],
)
response = client.chat.completions.create(
    model=os.environ.get("PORTWAY_MODEL", "google/gemma/models/gemma-3-270m"),
    messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Who are you?"},
    ],
    max_completion_tokens=48,
)
print(response.choices[0].message.content)
