"""Routes of the console: page shells at ``/``, ``/console/...`` and at each
model's own URL, and the static files they load.

A model URL (``/{user}/{app}/models/{model}[/versions/{id}]``) answers with its
page only when the client asks for HTML; any other client gets the 404 JSON it
got before the console existed. Every console response carries a strict
Content-Security-Policy and anti-framing headers; the page holds no data: the
script fetches everything with the token kept in the browser's session storage.
"""

from __future__ import annotations

import html
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from portway import __version__
from portway.errors import NotFound
from portway.settings import Settings

router = APIRouter(include_in_schema=False)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
VIEWS = ("tokens", "usage", "runners")

SHELL = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="portway-public-url" content="{public_url}">
<meta name="portway-version" content="{version}">
<title>Portway</title>
<link rel="stylesheet" href="/console/static/console.css">
<script type="module" src="/console/static/console.js"></script>
</head>
<body data-view="{view}">
<a class="skip" href="#main">Skip to content</a>
<header class="top">
  <a class="brand" href="/">Portway</a>
  <nav aria-label="Console" id="nav" hidden>
    <a href="/">Models</a>
    <a href="/console/tokens">Tokens</a>
    <a href="/console/usage">Usage</a>
    <a href="/console/runners" data-admin hidden>Runners</a>
  </nav>
  <span id="who" class="who" aria-live="polite"></span>
  <button type="button" id="sign-out" hidden>Sign out</button>
</header>
<main id="main" tabindex="-1"><noscript>The Portway console needs JavaScript.</noscript></main>
</body>
</html>
"""


def shell(request: Request, view: str) -> HTMLResponse:
    """The page frame: the script reads ``data-view`` and the address to fill it."""
    settings: Settings = request.app.state.settings
    page = SHELL.format(
        public_url=html.escape(settings.public_base_url),
        version=html.escape(__version__),
        view=html.escape(view),
    )
    return HTMLResponse(page, headers=SECURITY_HEADERS)


def wants_html(request: Request) -> bool:
    """Whether the client (a browser) asks for HTML rather than JSON."""
    return "text/html" in request.headers.get("accept", "")


@router.get("/")
async def home(request: Request) -> HTMLResponse:
    return shell(request, "models")


@router.get("/console/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        raise NotFound(f"No route for GET /console/static/{name}.")
    body = resources.files("portway.console").joinpath("static", name).read_bytes()
    return Response(body, media_type=STATIC[name], headers=SECURITY_HEADERS)


@router.get("/console/{view}")
async def console_view(view: str, request: Request) -> HTMLResponse:
    if view not in VIEWS:
        raise NotFound(f"No route for GET {request.url.path}.")
    return shell(request, view)


ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
"""A model URL answers every method as before the console (404), but GET for HTML."""


@router.api_route("/{user}/{app}/models/{model}", methods=ANY_METHOD)
@router.api_route("/{user}/{app}/models/{model}/versions/{version}", methods=ANY_METHOD)
async def model_page(request: Request) -> HTMLResponse:
    if request.method not in ("GET", "HEAD") or not wants_html(request):
        raise NotFound(f"No route for {request.method} {request.url.path}.")
    return shell(request, "model")
