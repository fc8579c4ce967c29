"""Errors FastAPI raises itself (parameters it validates) answer in OpenAI's shape."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from portway.api.errors import install


def _app() -> FastAPI:
    app = FastAPI()
    install(app)

    @app.get("/items")
    async def items(limit: int = 20) -> dict[str, int]:
        return {"limit": limit}

    return app


async def _get(path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


async def test_a_parameter_fastapi_refuses_is_a_400_naming_it() -> None:
    response = await _get("/items?limit=many")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "limit"
    assert error["code"] == "invalid_value"
    assert "limit" in error["message"]


async def test_a_valid_parameter_passes() -> None:
    response = await _get("/items?limit=3")
    assert response.json() == {"limit": 3}
