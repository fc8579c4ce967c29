"""Users and their API tokens (only hashes are stored)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from portway.store.engine import Database, require_aware, take_turns, utc_now
from portway.store.records import TokenInfo, User
from portway.store.tables import api_tokens, users

TOKEN_HASH_BYTES = 32


def _user(row: RowMapping) -> User:
    return User(
        id=row[users.c.id],
        name=row[users.c.name],
        is_admin=bool(row[users.c.is_admin]),
        created_at=row[users.c.created_at],
    )


def _token(row: RowMapping) -> TokenInfo:
    return TokenInfo(
        id=row[api_tokens.c.id],
        user=_user(row),
        scopes=tuple(row[api_tokens.c.scopes]),
        created_at=row[api_tokens.c.created_at],
        expires_at=row[api_tokens.c.expires_at],
        revoked_at=row[api_tokens.c.revoked_at],
        last4=row[api_tokens.c.last4],
        token_hash=bytes(row[api_tokens.c.token_hash]),
        name=row[api_tokens.c.name],
    )


def _new_token(
    user_id: int,
    token_hash: bytes,
    last4: str,
    scopes: Sequence[str],
    expires_at: datetime | None,
    name: str,
) -> dict[str, Any]:
    """The row of a new token (see :meth:`Accounts.create_token` for what it checks)."""
    if len(token_hash) != TOKEN_HASH_BYTES:
        raise ValueError(f"token_hash must be {TOKEN_HASH_BYTES} bytes, got {len(token_hash)}")
    if isinstance(scopes, str):
        raise TypeError("scopes must be a sequence of scope names, not a string")
    require_aware(expires_at, "expires_at")
    return {
        "id": "tok_" + secrets.token_hex(12),
        "user_id": user_id,
        "token_hash": bytes(token_hash),
        "last4": last4,
        "scopes": list(scopes),
        "created_at": utc_now(),
        "expires_at": expires_at,
        "revoked_at": None,
        "name": name,
    }


def _token_info(values: dict[str, Any], owner: User) -> TokenInfo:
    """What :meth:`Accounts.create_token` returns for the row ``values`` it stored."""
    expires_at = values["expires_at"]
    return TokenInfo(
        id=values["id"],
        user=owner,
        scopes=tuple(values["scopes"]),
        created_at=values["created_at"],
        expires_at=None if expires_at is None else expires_at.astimezone(UTC),
        revoked_at=None,
        last4=values["last4"],
        token_hash=values["token_hash"],
        name=values["name"],
    )


def _token_select() -> Select[Any]:
    return select(api_tokens, users).join_from(api_tokens, users)


class Accounts(Database):
    """Users and tokens."""

    # -- users

    async def ensure_user(self, name: str, *, is_admin: bool = False) -> User:
        """Return the user called ``name``, creating it if missing.

        ``is_admin`` only applies on creation: an existing user is returned as is.
        Safe against concurrent callers creating the same user.
        """
        user = await self.get_user(name)
        if user is not None:
            return user
        values = {"name": name, "is_admin": is_admin, "created_at": utc_now()}
        async with self._write() as conn:
            await conn.execute(self._insert_ignore(users, ["name"], values))
            row = (await conn.execute(select(users).where(users.c.name == name))).one()
        return _user(row._mapping)

    async def get_user(self, name: str) -> User | None:
        """The user called ``name``, or None."""
        async with self._read() as conn:
            result = await conn.execute(select(users).where(users.c.name == name))
            row = result.one_or_none()
        return None if row is None else _user(row._mapping)

    async def create_first_admin(
        self, name: str, *, token_hash: bytes, last4: str, scopes: Sequence[str], token_name: str
    ) -> TokenInfo | None:
        """On a database without users: create the admin ``name`` and its first
        token, and return the token; else None. Atomic across processes: of
        servers starting together on a fresh database, exactly one gets a token."""
        async with self._write() as conn:
            await take_turns(conn)
            if (await conn.execute(select(func.count()).select_from(users))).scalar_one():
                return None
            values = {"name": name, "is_admin": True, "created_at": utc_now()}
            await conn.execute(insert(users).values(values))
            owner = (await conn.execute(select(users).where(users.c.name == name))).one()
            token = _new_token(owner.id, token_hash, last4, scopes, None, token_name)
            await conn.execute(insert(api_tokens).values(token))
        return _token_info(token, _user(owner._mapping))

    async def count_users(self) -> int:
        """How many users exist."""
        async with self._read() as conn:
            count: int = (await conn.execute(select(func.count()).select_from(users))).scalar_one()
        return count

    # -- tokens

    async def create_token(
        self,
        *,
        user_id: int,
        token_hash: bytes,
        last4: str,
        scopes: Sequence[str],
        expires_at: datetime | None,
        name: str = "",
    ) -> TokenInfo:
        """Store a new token for user ``user_id`` and return its metadata.

        The id is ``"tok_"`` plus 24 random lowercase hex characters.
        ``token_hash`` is the 32-byte SHA-256 digest of the secret.
        Raises ``ValueError`` if the user does not exist, the hash is malformed
        or already stored, or ``expires_at`` is naive.
        """
        values = _new_token(user_id, token_hash, last4, scopes, expires_at, name)
        async with self._write() as conn:
            found = await conn.execute(select(users).where(users.c.id == user_id))
            owner = found.one_or_none()
            if owner is None:
                raise ValueError(f"no user with id {user_id}")
            try:
                await conn.execute(insert(api_tokens).values(values))
            except IntegrityError as exc:
                raise ValueError("a token with this hash already exists") from exc
        return _token_info(values, _user(owner._mapping))

    async def find_token(self, token_hash: bytes) -> TokenInfo | None:
        """The token whose hash is ``token_hash``, revoked or expired ones
        included (the caller decides), or None."""
        stmt = _token_select().where(api_tokens.c.token_hash == bytes(token_hash))
        async with self._read() as conn:
            row = (await conn.execute(stmt)).one_or_none()
        return None if row is None else _token(row._mapping)

    async def list_tokens(self, user_name: str | None = None) -> list[TokenInfo]:
        """All tokens, or those of ``user_name``, oldest first."""
        stmt = _token_select().order_by(api_tokens.c.created_at, api_tokens.c.id)
        if user_name is not None:
            stmt = stmt.where(users.c.name == user_name)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_token(row._mapping) for row in rows]

    async def get_token(self, token_id: str) -> TokenInfo | None:
        """The token with id ``token_id`` (revoked or expired included), or None."""
        stmt = _token_select().where(api_tokens.c.id == token_id)
        async with self._read() as conn:
            row = (await conn.execute(stmt)).one_or_none()
        return None if row is None else _token(row._mapping)

    async def list_users(self) -> list[User]:
        """Every user, by name."""
        async with self._read() as conn:
            rows = (await conn.execute(select(users).order_by(users.c.name))).all()
        return [_user(row._mapping) for row in rows]

    async def revoke_token(self, token_id: str) -> bool:
        """Mark the token revoked now. False if unknown or already revoked."""
        stmt = (
            update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=utc_now())
        )
        async with self._write() as conn:
            result = await conn.execute(stmt)
        return result.rowcount == 1
