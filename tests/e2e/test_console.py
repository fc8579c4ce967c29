"""The web console in a real browser (the system's Chromium, through Playwright)
against a real server: sign in, open a model page by its URL, stream a chat,
answer a forced tool call, make an image, compare embeddings, create a token and
use it with the openai client, revoke it, watch usage and runners.

Screenshots of every page go to a temporary folder (``PORTWAY_CONSOLE_SHOTS``
names another); with ``PORTWAY_DOCS_SHOTS=1`` the model page and the playground
are also written to docs/ for the README.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.browser import require_chromium
from tests.e2e.server import SCRIPTED_CATALOG, Server

pytestmark = pytest.mark.e2e

SCRIPTED = "portway/test/models/scripted"
GEMMA = "google/gemma/models/gemma-3-270m"
HERMES = "portway/test/models/hermes"
SLOW = "portway/test/models/slow"
ART = "portway/art/models/tiny-sd"
MINILM = "sentence-transformers/embed/models/all-MiniLM-L6-v2"
DOCS = Path(__file__).resolve().parents[2] / "docs"

SLOW_MODEL = """
[[models]]
user = "portway"
app = "test"
model = "slow"
backend = "scripted"
delay = 1.0

[[models]]
user = "portway"
app = "test"
model = "markup"
backend = "scripted"
script = ["<b>bold</b>", "<img src=x onerror=\\"window.pwned=1\\">"]
"""
MARKUP_REPLY = '<b>bold</b><img src=x onerror="window.pwned=1">'
"""What the ``markup`` model writes: it must show as text, never run."""

ART_MODEL = """
[[models]]
user = "portway"
app = "art"
model = "tiny-sd"
backend = "diffusers"
path = "{path}"
steps = 2
default_size = "64x64"
max_side = 256
"""


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_chromium()


@pytest.fixture(scope="module")
def server(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Scripted chat models, a slow one to watch streaming, the tiny image pipeline
    (with portway[images]) and the embedded models."""
    catalog = SCRIPTED_CATALOG + SLOW_MODEL
    if _has("diffusers"):
        from tests.tiny_diffusion import build_tiny_pipeline

        pipeline = build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))
        catalog += ART_MODEL.format(path=pipeline)
    running = Server(tmp_path_factory.mktemp("console"), catalog=catalog).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    named = os.environ.get("PORTWAY_CONSOLE_SHOTS")
    folder = Path(named) if named else tmp_path_factory.mktemp("console-shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab; after the test, no script error and no CSP refusal happened."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    tab.on(
        "console",
        lambda message: (
            problems.append(message.text)
            if message.type == "error" and "Failed to load resource" not in message.text
            else None
        ),
    )
    yield tab
    context.close()
    assert problems == []


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def sign_in(page: Any, server: Server, token: str, path: str = "/") -> None:
    page.goto(server.base_url + path)
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    _expect()(page.locator("#who")).not_to_be_empty()


def snap(page: Any, shots: Path, name: str, docs: bool = False) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    if docs and os.environ.get("PORTWAY_DOCS_SHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / f"console-{name}.png"), full_page=True)


def _client(server: Server, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0)


def test_sign_in_refuses_a_bad_token_then_lists_models(
    page: Any, server: Server, shots: Path
) -> None:
    expect = _expect()
    page.goto(server.base_url + "/")
    snap(page, shots, "sign-in")
    page.get_by_label("Access token").fill("pwt_not_a_real_token")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("refused")
    sign_in(page, server, server.admin_token)
    expect(page.get_by_role("heading", name="Models")).to_be_visible()
    expect(page.get_by_role("link", name=HERMES)).to_be_visible()
    page.get_by_label("Search by name").fill("herm")
    expect(page.locator("ul.models li")).to_have_count(1)
    page.get_by_label("Search by name").fill("")
    page.get_by_label("Kind").select_option("chat")
    expect(page.get_by_role("link", name=SCRIPTED)).to_be_visible()
    expect(page.get_by_role("link", name=ART)).to_have_count(0)
    snap(page, shots, "models")
    assert page.evaluate("() => document.cookie") == ""
    assert "pwt_" not in page.url


def test_a_model_page_at_the_models_url(page: Any, server: Server, shots: Path) -> None:
    expect = _expect()
    sign_in(page, server, server.admin_token, f"/{HERMES}")
    expect(page.get_by_role("heading", name=HERMES, exact=True)).to_be_visible()
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("local")
    expect(facts).to_contain_text("4096 tokens")
    expect(facts).to_contain_text("Tools")
    snippet = page.locator("pre.snippet")
    expect(snippet).to_contain_text(f'base_url="{server.base_url}/v1"')
    expect(snippet).to_contain_text(f'model="{server.base_url}/{HERMES}"')
    page.get_by_role("tab", name="Node").click()
    expect(snippet).to_contain_text("new OpenAI({ baseURL")
    page.get_by_role("tab", name="cURL").click()
    expect(snippet).to_contain_text(f"curl {server.base_url}/v1/chat/completions")
    page.get_by_role("tab", name="Python").click()
    snap(page, shots, "model-page-scripted")
    page.goto(f"{server.base_url}/{GEMMA}")
    expect(page.get_by_role("heading", name=GEMMA, exact=True)).to_be_visible()
    expect(page.locator("dl.facts")).to_contain_text("Structured outputs")
    snap(page, shots, "model-page", docs=True)
    as_json = httpx.get(f"{server.base_url}/{HERMES}", headers={"Accept": "application/json"})
    assert as_json.status_code == 404 and as_json.json()["error"]["code"] == "not_found"


def test_chat_streams_from_the_keyboard(page: Any, server: Server, shots: Path) -> None:
    expect = _expect()
    sign_in(page, server, server.admin_token, f"/{SLOW}")
    message = page.get_by_label("Message", exact=True)
    message.focus()
    page.keyboard.type("Hello?")
    page.keyboard.press("Control+Enter")
    reply = page.locator(".message.assistant .content").last
    expect(reply).to_contain_text("Hello")
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()  # still streaming
    expect(reply).to_have_text("Hello from Portway.", timeout=30_000)
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    expect(page.locator(".usage-line")).to_contain_text("completion tokens")
    expect(page.locator(".message.user .content")).to_have_text("Hello?")


def test_model_output_is_shown_as_text(page: Any, server: Server) -> None:
    expect = _expect()
    sign_in(page, server, server.admin_token, "/portway/test/models/markup")
    page.get_by_label("Message", exact=True).fill("Say something with markup")
    page.get_by_role("button", name="Send", exact=True).click()
    reply = page.locator(".message.assistant .content")
    expect(reply).to_have_text(MARKUP_REPLY)
    assert reply.locator("b, img").count() == 0
    assert page.evaluate("() => window.pwned") is None


def test_a_forced_tool_call_is_shown_and_answered(page: Any, server: Server, shots: Path) -> None:
    expect = _expect()
    sign_in(page, server, server.admin_token, f"/{HERMES}")
    page.get_by_role("button", name="Insert example tool").click()
    page.get_by_label("Tool choice").select_option("fn:get_weather")
    page.get_by_label("System prompt").fill("You answer about weather.")
    page.get_by_label("Message", exact=True).fill("Weather in Paris?")
    page.get_by_role("button", name="Send", exact=True).click()
    call = page.locator("[data-tool-call='get_weather']")
    expect(call).to_be_visible()
    arguments = json.loads(call.locator("code").inner_text())
    assert arguments == {"location": "Paris"}
    result = page.get_by_label(re.compile(r"Result of get_weather"))
    expect(result).to_be_focused()
    result.fill('{"temperature": 21}')
    page.get_by_role("button", name="Send tool results").click()
    expect(page.locator(".message.tool .content")).to_have_text('{"temperature": 21}')
    expect(page.locator(".message.assistant")).to_have_count(2)
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_enabled()
    snap(page, shots, "playground", docs=True)


def test_json_schema_mode_sends_the_schema(page: Any, server: Server) -> None:
    """The request carries the schema; what Gemma writes is not asserted."""
    expect = _expect()
    sign_in(page, server, server.admin_token, f"/{GEMMA}")
    page.get_by_label("Answer in JSON matching a schema").check()
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    page.get_by_label("JSON schema").fill(json.dumps(schema))
    page.get_by_label("Max tokens").fill("24")
    page.get_by_label("Message", exact=True).fill("Is water wet?")
    with page.expect_request("**/v1/chat/completions") as sent:
        page.get_by_role("button", name="Send", exact=True).click()
    body = sent.value.post_data_json
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert (body["stream"], body["max_tokens"]) == (True, 24)
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_enabled(timeout=60_000)
    expect(page.get_by_role("alert")).to_be_hidden()


def test_the_responses_api_in_the_playground(page: Any, server: Server) -> None:
    expect = _expect()
    sign_in(page, server, server.admin_token, f"/{SCRIPTED}")
    page.get_by_label("API").select_option("responses")
    page.get_by_label("Message", exact=True).fill("Hi")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator(".message.assistant .content").last).to_have_text("Hello from Portway.")
    expect(page.locator(".usage-line")).to_contain_text("output tokens")


def test_an_image_is_generated_and_shown(page: Any, server: Server, shots: Path) -> None:
    if not _has("diffusers"):
        pytest.skip("portway[images] is not installed")
    expect = _expect()
    sign_in(page, server, server.admin_token, f"/{ART}")
    page.get_by_label("Prompt", exact=True).fill("a red square")
    page.get_by_role("button", name="Generate").click()
    image = page.locator(".gallery img")
    expect(image).to_have_count(1, timeout=120_000)
    expect(image).to_have_attribute("alt", "a red square")
    assert image.evaluate("(img) => img.complete && img.naturalWidth") == 64
    snap(page, shots, "image")


def test_embeddings_are_compared(page: Any, server: Server, shots: Path) -> None:
    if not _has("sentence_transformers"):
        pytest.skip("portway[embeddings] is not installed")
    expect = _expect()
    sign_in(page, server, server.admin_token, f"/{MINILM}")
    page.get_by_role("button", name="Compare").click()
    cells = page.locator(".similarity tbody td")
    expect(cells).to_have_count(9, timeout=60_000)
    assert [cells.nth(index).inner_text() for index in (0, 4, 8)] == ["1.000"] * 3
    snap(page, shots, "embeddings")


def test_a_token_made_in_the_console_works_until_revoked(
    page: Any, server: Server, shots: Path
) -> None:
    expect = _expect()
    owner = server.token("carla")
    sign_in(page, server, owner, "/console/tokens")
    page.get_by_label("Name").fill("notebook")
    expect(page.get_by_label("admin")).to_have_count(0)  # no scope beyond its own
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-secret")
    expect(secret).to_have_value(re.compile(r"^pwt_"))
    token = secret.input_value()
    snap(page, shots, "tokens")
    reply = _client(server, token).chat.completions.create(
        model=SCRIPTED, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "Hello from Portway."
    row = page.locator("tr", has_text="notebook")
    row.get_by_role("button", name="Revoke notebook").click()
    expect(row).to_contain_text("revoked")
    with pytest.raises(openai.AuthenticationError):
        _client(server, token).models.list()
    page.reload()
    expect(page.get_by_label("Name")).to_be_visible()  # still signed in after a reload


def test_admins_manage_other_users_tokens(page: Any, server: Server) -> None:
    expect = _expect()
    sign_in(page, server, server.admin_token, "/console/tokens")
    page.get_by_label("For user").fill("dora")
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("alert")).to_contain_text("No user named 'dora'")
    page.get_by_label("Create this user if new").check()
    page.get_by_label("runner").check()
    page.get_by_label("inference").uncheck()
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-secret")).to_have_value(re.compile(r"^pwt_"))
    expect(page.get_by_label("Of user")).to_have_value("dora")
    row = page.locator("tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("runner")
    row.get_by_role("button", name=re.compile("Revoke")).click()
    expect(row).to_contain_text("revoked")
    listed = httpx.get(
        server.base_url + "/v1/tokens?user=dora",
        headers={"Authorization": f"Bearer {server.admin_token}"},
    ).json()["data"]
    assert [(item["scopes"], item["revoked_at"] is not None) for item in listed] == [
        (["runner"], True)
    ]


def _requests_shown(page: Any) -> int:
    value: str = page.locator("#usage-total").get_attribute("data-requests")
    return int(value)


def test_the_usage_chart_follows_the_ledger(page: Any, server: Server, shots: Path) -> None:
    expect = _expect()
    user = server.token("ursula")
    sign_in(page, server, user, "/console/usage")
    expect(page.locator("#usage-total")).to_have_attribute("data-requests", "0")
    expect(page.get_by_role("img", name="Requests per day")).to_be_visible()
    _client(server, user).chat.completions.create(
        model=SCRIPTED, messages=[{"role": "user", "content": "count me"}]
    )
    for _ in range(50):  # the ledger is written in batches
        page.get_by_role("button", name="Refresh").click()
        page.wait_for_timeout(200)
        if _requests_shown(page) == 1:
            break
    expect(page.locator("#usage-total")).to_have_attribute("data-requests", "1")
    expect(page.locator("table.per-model")).to_contain_text(SCRIPTED)
    assert page.locator("svg.chart rect.bar").count() >= 2
    snap(page, shots, "usage")


def test_admins_see_runners_live(page: Any, server: Server, shots: Path) -> None:
    from websockets.sync.client import connect

    expect = _expect()
    runner_token = server.token("rita", "runner")
    url = server.base_url.replace("http://", "ws://") + "/v1/runners/connect"
    hello = {
        "type": "hello",
        "model": {"reference": "rita/demo/models/live", "version": "b" * 32},
        "runner": "runner-one",
    }
    sign_in(page, server, server.admin_token, "/console/runners")
    with connect(url, additional_headers={"Authorization": f"Bearer {runner_token}"}) as socket:
        socket.send(json.dumps(hello))
        assert json.loads(socket.recv(timeout=30))["type"] == "ready"
        row = page.locator("tr", has_text="runner-one")
        expect(row).to_contain_text("rita/demo/models/live", timeout=15_000)
        snap(page, shots, "runners")
    expect(page.locator("tr", has_text="runner-one")).to_have_count(0, timeout=15_000)


def test_non_admins_get_no_admin_pages(page: Any, server: Server) -> None:
    expect = _expect()
    sign_in(page, server, server.token("nora"), "/console/runners")
    expect(page.get_by_role("link", name="Runners")).to_be_hidden()
    expect(page.get_by_role("alert")).to_contain_text("'admin' scope")


def test_every_playground_control_has_a_label(page: Any, server: Server) -> None:
    sign_in(page, server, server.admin_token, f"/{HERMES}")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button')]
            .filter((el) => !el.hidden && el.offsetParent !== null)
            .filter((el) => el.tagName === 'BUTTON'
                ? !(el.textContent.trim() || el.getAttribute('aria-label'))
                : !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map((el) => el.outerHTML.slice(0, 80))"""
    )
    assert unlabelled == []


def test_the_playground_works_from_the_keyboard_alone(page: Any, server: Server) -> None:
    expect = _expect()
    sign_in(page, server, server.admin_token, f"/{SCRIPTED}")
    page.reload()
    expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    message = page.get_by_label("Message", exact=True)
    for _ in range(60):
        page.keyboard.press("Tab")
        if message.evaluate("(el) => el === document.activeElement"):
            break
    expect(message).to_be_focused()
    page.keyboard.type("Hi")
    page.keyboard.press("Control+Enter")
    expect(page.locator(".message.assistant .content")).to_have_text("Hello from Portway.")
