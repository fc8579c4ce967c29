"""Issuing personal access tokens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from portway.auth import tokens
from portway.store import Store, TokenInfo


class ScopeError(ValueError):
    pass


def check_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    """The scopes named, each once; ``"inference,admin"`` names two. No scope
    implies another: a token with ``admin`` alone cannot call models. None
    named: the default, ``inference``."""
    named = [part.strip() for scope in scopes for part in scope.split(",") if part.strip()]
    unknown = sorted(set(named) - set(tokens.SCOPES))
    if unknown:
        raise ScopeError(
            f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(tokens.SCOPES)}"
        )
    return tuple(dict.fromkeys(named)) or tokens.DEFAULT_SCOPES


async def issue_token(
    store: Store,
    user_name: str,
    *,
    scopes: Sequence[str] = tokens.DEFAULT_SCOPES,
    expires_in_days: float | None = None,
    admin_user: bool = False,
    name: str = "",
) -> tuple[str, TokenInfo]:
    """Create a token for ``user_name`` (creating the user if new); returns the
    secret, which is never stored, and the stored record."""
    user = await store.ensure_user(user_name, is_admin=admin_user)
    secret = tokens.generate()
    expires_at = (
        datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days is not None else None
    )
    info = await store.create_token(
        user_id=user.id,
        token_hash=tokens.digest(secret),
        last4=secret[-4:],
        scopes=check_scopes(scopes),
        expires_at=expires_at,
        name=name,
    )
    return secret, info
