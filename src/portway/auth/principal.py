"""Turn an ``Authorization`` header into a :class:`Principal`."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from portway.auth import tokens
from portway.errors import AuthenticationFailed, PermissionDenied
from portway.store import Store, TokenInfo, User

CACHE_SECONDS = 2.0
"""How long a token look-up is trusted: creation and revocation show within it."""


@dataclass(frozen=True)
class Principal:
    user: User
    token_id: str
    scopes: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        """Admin powers (others' private models, runners for any owner, health
        detail) come from the token's ``admin`` scope alone: an admin user's
        token without it is an ordinary token."""
        return "admin" in self.scopes

    def require_scope(self, scope: str) -> None:
        """A token does what its scopes say; no scope implies another."""
        if scope not in self.scopes:
            raise PermissionDenied(f"This token lacks the '{scope}' scope.", code="missing_scope")


def bearer_token(header: str | None) -> str | None:
    """The token in ``Bearer TOKEN`` or ``Key TOKEN``, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() not in ("bearer", "key"):
        return None
    return value.strip() or None


class Authenticator:
    """Resolves tokens against the store, trusting a look-up for ``CACHE_SECONDS``."""

    def __init__(self, store: Store, cache_seconds: float = CACHE_SECONDS) -> None:
        self._store = store
        self._cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[float, TokenInfo | None]] = {}

    async def authenticate(self, header: str | None) -> Principal:
        token = bearer_token(header)
        if token is None or not tokens.is_well_formed(token):
            raise AuthenticationFailed()
        token_hash = tokens.digest(token)
        info = await self._lookup(token_hash)
        if info is None or not _is_live(info):
            raise AuthenticationFailed()
        return Principal(user=info.user, token_id=info.id, scopes=info.scopes)

    def forget(self, token_hash: bytes) -> None:
        """Drop a cached look-up: a token revoked here is refused at once."""
        self._cache.pop(token_hash, None)

    async def _lookup(self, token_hash: bytes) -> TokenInfo | None:
        now = time.monotonic()
        cached = self._cache.get(token_hash)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        info = await self._store.find_token(token_hash)
        if info is not None and not hmac.compare_digest(info.token_hash, token_hash):
            info = None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token_hash] = (now, info)
        return info


def _is_live(info: TokenInfo) -> bool:
    if info.revoked_at is not None:
        return False
    return info.expires_at is None or info.expires_at > datetime.now(UTC)
