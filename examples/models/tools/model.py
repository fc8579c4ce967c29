"""A weather assistant that calls the ``get_weather(location)`` tool.

Asked about the weather with the tool offered, it calls it (the location is what
follows " in " in the question); given the tool's result, it answers with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from portway import ModelClass
from portway.sdk import GenerateParams, Output, ToolCall

LOCATION = re.compile(r"\bin ([A-Z][\w .,'-]*?)[?.!]*$")


class WeatherModel(ModelClass):
    def generate(self, messages: list[dict[str, Any]], params: GenerateParams) -> Iterator[Output]:
        last = messages[-1]
        if last["role"] == "tool":
            yield f"The weather report says: {last['content']}"
            return
        offered = {tool["function"]["name"] for tool in params.tools}
        question = str(last.get("content") or "")
        found = LOCATION.search(question.strip())
        if "get_weather" in offered and params.tool_choice != "none" and found:
            yield ToolCall("get_weather", {"location": found.group(1)})
            return
        yield "Ask me about the weather in a city, and offer me the get_weather tool."
