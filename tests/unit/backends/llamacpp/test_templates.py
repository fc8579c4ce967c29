"""Chat prompt rendering: Gemma, ChatML, sandboxed Jinja, and the choice between them."""

from __future__ import annotations

import json

import pytest

from portway.backends.base import Message, ToolCall
from portway.backends.llamacpp.jinja_template import JinjaTemplate
from portway.backends.llamacpp.template_text import MAX_PROMPT_BYTES
from portway.backends.llamacpp.templates import ChatMLTemplate, GemmaTemplate, template_for
from portway.errors import BackendError, InvalidRequest

CHATML_JINJA = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

ALTERNATING_JINJA = """{{ bos_token }}
{% for message in messages %}
{% if (message.role == 'user') != (loop.index0 % 2 == 0) %}
{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
{% endif %}
[{{ message.role }}] {{ message.content }}{{ eos_token }}
{% endfor %}
"""


def user(text: str) -> Message:
    return Message(role="user", content=text)


def assistant(text: str, *calls: ToolCall) -> Message:
    return Message(role="assistant", content=text, tool_calls=calls)


# --------------------------------------------------------------------------- Gemma


def test_gemma_renders_turns_and_generation_prompt() -> None:
    prompt = GemmaTemplate().render([user("Hi"), assistant("Hello!"), user("How are you?")])

    assert prompt == (
        "<start_of_turn>user\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nHow are you?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_gemma_has_no_bos_in_text() -> None:
    assert not GemmaTemplate().render([user("Hi")]).startswith("<bos>")


def test_gemma_prepends_system_and_developer_to_first_user_turn() -> None:
    messages = [
        Message(role="system", content="Be brief."),
        Message(role="developer", content="Answer in French."),
        user("Hi"),
        assistant("Salut"),
        user("Bye"),
    ]

    assert GemmaTemplate().render(messages) == (
        "<start_of_turn>user\nBe brief.\n\nAnswer in French.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nSalut<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_gemma_system_alone_becomes_a_user_turn() -> None:
    prompt = GemmaTemplate().render([Message(role="system", content="Be brief.")])

    assert prompt == "<start_of_turn>user\nBe brief.<end_of_turn>\n<start_of_turn>model\n"


def test_gemma_renders_tool_calls_as_json_and_results_as_user_turns() -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
    messages = [
        user("Weather in Paris?"),
        assistant("", call),
        Message(role="tool", content="18C, sunny", name="get_weather", tool_call_id="call_1"),
    ]

    assert GemmaTemplate().render(messages) == (
        "<start_of_turn>user\nWeather in Paris?<end_of_turn>\n"
        "<start_of_turn>model\n"
        '{"tool_calls": [{"id": "call_1", "name": "get_weather", '
        '"arguments": {"city": "Paris"}}]}<end_of_turn>\n'
        "<start_of_turn>user\nResult of tool call get_weather (id call_1):\n"
        "18C, sunny<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_gemma_keeps_unparsable_tool_arguments_as_text() -> None:
    call = ToolCall(id="c", name="f", arguments="not json")

    prompt = GemmaTemplate().render([user("x"), assistant("Calling.", call)])

    assert 'Calling.\n{"tool_calls": [{"id": "c", "name": "f", "arguments": "not json"}]}' in prompt


def test_gemma_stop_strings() -> None:
    assert GemmaTemplate().stop_strings == ("<end_of_turn>",)


def test_gemma_refuses_oversized_prompt() -> None:
    with pytest.raises(InvalidRequest):
        GemmaTemplate().render([user("x" * (MAX_PROMPT_BYTES + 1))])


# --------------------------------------------------------------------------- ChatML


def test_chatml_fallback_renders_roles() -> None:
    messages = [Message(role="developer", content="Be brief."), user("Hi")]

    assert ChatMLTemplate().render(messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert ChatMLTemplate().stop_strings == ("<|im_end|>",)


# --------------------------------------------------------------------------- Jinja


def test_jinja_chatml_source_renders_like_chatml() -> None:
    messages = [Message(role="system", content="Be brief."), user("Hi"), assistant("Hello")]

    rendered = JinjaTemplate(CHATML_JINJA, "<s>", "</s>").render(messages)

    assert rendered == ChatMLTemplate().render(messages)


def test_jinja_stop_strings_include_turn_end_and_eos() -> None:
    template = JinjaTemplate(CHATML_JINJA, "<s>", "</s>")

    assert template.stop_strings == ("<|im_end|>", "</s>")


def test_jinja_passes_special_tokens_and_trims_blocks() -> None:
    template = JinjaTemplate(ALTERNATING_JINJA, "<s>", "</s>")

    assert (
        template.render([user("Hi"), assistant("Yo")]) == "<s>\n[user] Hi</s>\n[assistant] Yo</s>\n"
    )


def test_jinja_raise_exception_is_invalid_request_with_its_message() -> None:
    template = JinjaTemplate(ALTERNATING_JINJA, "<s>", "</s>")

    with pytest.raises(InvalidRequest, match="roles must alternate"):
        template.render([user("Hi"), user("Again")])


def test_jinja_syntax_error_is_backend_error() -> None:
    with pytest.raises(BackendError, match="chat template is invalid"):
        JinjaTemplate("{% for m in messages %}", "", "")


def test_jinja_render_failure_is_backend_error() -> None:
    template = JinjaTemplate("{{ messages[0].content + 1 }}", "", "")

    with pytest.raises(BackendError, match="chat template failed"):
        template.render([user("Hi")])


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__.__init__.__globals__ }}",
        "{{ messages.append(1) }}",
        "{{ raise_exception.__globals__ }}",
    ],
)
def test_jinja_sandbox_blocks_unsafe_access(source: str) -> None:
    template = JinjaTemplate(source, "", "")

    with pytest.raises(BackendError):
        template.render([user("Hi")])


def test_jinja_output_is_bounded() -> None:
    template = JinjaTemplate("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", "", "")

    with pytest.raises(InvalidRequest, match="longer than"):
        template.render([user("Hi")])


def test_jinja_messages_have_openai_shape() -> None:
    source = (
        "{% for m in messages %}"
        "{{ m.role }}|{{ m.name is defined }}|{{ m.tool_call_id is defined }}|"
        "{% if m.tool_calls %}{{ m.tool_calls | tojson }}{% endif %}{{ '\\n' }}"
        "{% endfor %}"
    )
    call = ToolCall(id="call_1", name="f", arguments='{"a": "<b>"}')
    messages = [
        Message(role="user", content="Hi", name="ann"),
        assistant("", call),
        Message(role="tool", content="ok", tool_call_id="call_1"),
    ]

    lines = JinjaTemplate(source, "", "").render(messages).splitlines()

    assert lines[0] == "user|True|False|"
    assert lines[2] == "tool|False|True|"
    role, _, _, calls = lines[1].split("|", 3)
    assert role == "assistant"
    assert json.loads(calls) == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": "<b>"}'}}
    ]
    assert "<b>" in calls  # tojson does not HTML-escape


def test_jinja_strftime_now() -> None:
    rendered = JinjaTemplate("{{ strftime_now('%Y') }}", "", "").render([user("Hi")])

    assert rendered.isdigit()
    assert len(rendered) == 4


# --------------------------------------------------------------------------- choice


def test_override_gemma_name_wins() -> None:
    metadata = {"tokenizer.chat_template": CHATML_JINJA, "general.architecture": "llama"}

    assert isinstance(template_for(metadata, "gemma", family_hint=None), GemmaTemplate)


def test_override_jinja_source_wins() -> None:
    metadata = {"general.architecture": "gemma3"}

    template = template_for(metadata, CHATML_JINJA, family_hint=None)

    assert isinstance(template, JinjaTemplate)


def test_embedded_chat_template_comes_next() -> None:
    metadata = {"tokenizer.chat_template": CHATML_JINJA, "general.architecture": "gemma3"}

    template = template_for(metadata, None, family_hint=None, bos_token="<s>", eos_token="</s>")

    assert isinstance(template, JinjaTemplate)
    assert template.bos_token == "<s>"
    assert template.eos_token == "</s>"


def test_gemma_architecture_without_template_uses_gemma_format() -> None:
    template = template_for({"general.architecture": "gemma3"}, None, family_hint=None)

    assert isinstance(template, GemmaTemplate)


def test_family_hint_applies_without_architecture() -> None:
    assert isinstance(template_for({}, None, family_hint="gemma"), GemmaTemplate)


def test_other_architectures_fall_back_to_chatml() -> None:
    template = template_for({"general.architecture": "llama"}, None, family_hint=None)

    assert isinstance(template, ChatMLTemplate)


GEMMA3_OFFICIAL_JINJA = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim -}}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""


def test_gemma_template_matches_gemma3_official_jinja_after_bos() -> None:
    messages = [
        Message(role="system", content="Be brief."),
        user("Hi "),
        assistant("Hello!"),
        user("How are you?"),
    ]
    official = JinjaTemplate(GEMMA3_OFFICIAL_JINJA, "<bos>", "<eos>")

    assert official.render(messages) == "<bos>" + GemmaTemplate().render(messages)
    assert official.stop_strings == ("<end_of_turn>", "<eos>")
