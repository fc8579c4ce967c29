"""A response through Portway's Responses API with the stock openai client.

PORTWAY_PAT=pwt_... python examples/responses.py
"""

import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("PORTWAY_BASE_URL", "http://127.0.0.1:8000/v1"),
    api_key=os.environ["PORTWAY_PAT"],
)
response = client.responses.create(
    model=os.environ.get("PORTWAY_MODEL", "google/gemma/models/gemma-3-270m"),
    input="Tell me a three sentence bedtime story about a lighthouse.",
    max_output_tokens=100,
    temperature=0.7,
)
print(response.output_text)
