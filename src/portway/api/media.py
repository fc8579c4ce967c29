"""``GET /media/{name}``: generated files, by signed, expiring link; no token."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from portway.api.deps import services

router = APIRouter()


@router.get("/media/{name}")
async def get_media(
    name: str, request: Request, expires: str = "", signature: str = ""
) -> FileResponse:
    media = services(request).media
    path, media_type = await asyncio.to_thread(media.locate, name, expires, signature)
    return FileResponse(path, media_type=media_type, headers={"cache-control": "private"})
