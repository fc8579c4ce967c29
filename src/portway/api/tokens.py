"""``/tokens``, ``/users`` and ``/me``: personal access tokens managed over the API.

A token with the ``inference`` or ``admin`` scope may list, create and revoke its
own user's tokens (``/me`` answers any token). A new token gets no scope its creator
lacks and, when its creator expires, expires no later. Without ``admin``, a token
revokes only tokens whose scopes it holds all of. Other users' tokens, and the user
list, need ``admin``; naming a user who does not exist needs ``create_user``. The
secret of a new token is in the creation response only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from portway.api.deps import parse_body, principal, services
from portway.auth.issue import ScopeError, check_scopes, issue_token
from portway.auth.principal import Principal
from portway.cluster.revocation import announce_revocation
from portway.errors import InvalidRequest, NotFound, PermissionDenied
from portway.protocol.base import RequestModel
from portway.store import Store, TokenInfo, User

router = APIRouter()

MAX_EXPIRY_DAYS = 36_500.0


class CreateTokenRequest(RequestModel):
    name: str = Field(default="", max_length=100)
    scopes: list[str] = Field(default_factory=lambda: ["inference"], max_length=10)
    expires_in_days: float | None = Field(default=None, gt=0, le=MAX_EXPIRY_DAYS)
    user: str | None = Field(default=None, min_length=1, max_length=200)
    """Another user's name: admin scope only."""
    create_user: bool = False
    """Create ``user`` if there is none of that name (else a 404 naming ``user``)."""


def _time(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def token_json(info: TokenInfo) -> dict[str, Any]:
    """A token as the API shows it: never its secret or hash."""
    return {
        "id": info.id,
        "object": "token",
        "name": info.name,
        "user": info.user.name,
        "scopes": list(info.scopes),
        "last4": info.last4,
        "created_at": _time(info.created_at),
        "expires_at": _time(info.expires_at),
        "revoked_at": _time(info.revoked_at),
    }


def _user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.name,
        "object": "user",
        "is_admin": user.is_admin,
        "created_at": _time(user.created_at),
    }


def _owner(who: Principal, user: str | None) -> str:
    """The user whose tokens a call touches: the caller's own, or (admin) any."""
    if user is None or user == who.user.name:
        return who.user.name
    if not who.is_admin:
        raise PermissionDenied(
            "Only a token with the 'admin' scope may manage other users' tokens.",
            code="missing_scope",
        )
    return user


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


@router.get("/me")
async def me(request: Request) -> dict[str, Any]:
    """Who the token belongs to and what it may do (the console asks at sign-in)."""
    who = await principal(request)
    return {
        "object": "principal",
        "user": who.user.name,
        "token_id": who.token_id,
        "scopes": list(who.scopes),
        "is_admin": who.is_admin,
    }


async def _manager(request: Request) -> Principal:
    """The caller, if its token may manage tokens: ``inference`` or ``admin``."""
    who = await principal(request)
    if not {"inference", "admin"} & set(who.scopes):
        raise PermissionDenied(
            "Managing tokens needs the 'inference' or 'admin' scope.", code="missing_scope"
        )
    return who


@router.get("/tokens")
async def list_tokens(request: Request) -> dict[str, Any]:
    who = await _manager(request)
    owner = _owner(who, request.query_params.get("user"))
    found = await _store(request).list_tokens(owner)
    return {"object": "list", "data": [token_json(info) for info in found]}


def _granted_scopes(who: Principal, asked: list[str]) -> tuple[str, ...]:
    try:
        scopes = check_scopes(asked)
    except ScopeError as exc:
        raise InvalidRequest(f"Invalid value for 'scopes': {exc}.", param="scopes") from exc
    beyond = [scope for scope in scopes if scope not in who.scopes and not who.is_admin]
    if beyond:
        raise PermissionDenied(
            f"A token cannot grant scopes it lacks: {', '.join(beyond)}.", code="missing_scope"
        )
    return scopes


async def _check_expiry(store: Store, who: Principal, days: float | None) -> None:
    """A token that expires mints none that outlives it."""
    creator = await store.get_token(who.token_id)
    ends = None if creator is None else creator.expires_at
    if ends is None:
        return
    if days is None or datetime.now(UTC) + timedelta(days=days) > ends:
        raise InvalidRequest(
            "Invalid value for 'expires_in_days': this token expires at "
            f"{ends.isoformat(timespec='seconds')}; a token it creates must expire by then.",
            param="expires_in_days",
        )


async def _check_user(store: Store, body: CreateTokenRequest, owner: str) -> None:
    """Another user must exist unless the body asks to create them."""
    if body.user is None or body.create_user or await store.get_user(owner) is not None:
        return
    raise NotFound(
        f"No user named '{owner}'; send \"create_user\": true to create one.", param="user"
    )


@router.post("/tokens")
async def create_token(request: Request) -> dict[str, Any]:
    who = await _manager(request)
    body = await parse_body(request, CreateTokenRequest)
    owner = _owner(who, body.user)
    scopes = _granted_scopes(who, body.scopes)
    await _check_expiry(_store(request), who, body.expires_in_days)
    await _check_user(_store(request), body, owner)
    secret, info = await issue_token(
        _store(request),
        owner,
        scopes=scopes,
        expires_in_days=body.expires_in_days,
        name=body.name.strip(),
    )
    return {**token_json(info), "token": secret}


def _may_revoke(who: Principal, info: TokenInfo) -> bool:
    """Admin: any token. Otherwise: its own user's, holding no scope the caller lacks."""
    if who.is_admin:
        return True
    return info.user.name == who.user.name and set(info.scopes) <= set(who.scopes)


@router.delete("/tokens/{token_id}")
async def revoke_token(token_id: str, request: Request) -> dict[str, Any]:
    who = await _manager(request)
    store = _store(request)
    info = await store.get_token(token_id)
    if info is None or not _may_revoke(who, info):
        raise NotFound(f"No token with id '{token_id}'.", param="token_id")
    await store.revoke_token(token_id)
    services(request).authenticator.forget(info.token_hash)
    await announce_revocation(request.app.state.cluster, info.token_hash)  # every process
    revoked = await store.get_token(token_id)
    return token_json(revoked or info)


@router.get("/users")
async def list_users(request: Request) -> dict[str, Any]:
    who = await principal(request)
    who.require_scope("admin")
    found = await _store(request).list_users()
    return {"object": "list", "data": [_user_json(user) for user in found]}
