"""Stored secrets: names and ciphertext (:mod:`portway.store.secrets` encrypts)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from portway.store.engine import Database, utc_now
from portway.store.records import SecretInfo
from portway.store.tables import stored_secrets


class SecretRows(Database):
    """Secrets' ciphertext by name."""

    # -- secrets (values are ciphertext: portway.store.secrets encrypts them)

    async def put_secret(self, name: str, ciphertext: bytes) -> None:
        """Store ``ciphertext`` under ``name``, replacing an earlier value."""
        now = utc_now()
        values = {"name": name, "ciphertext": ciphertext, "created_at": now, "updated_at": now}
        maker = pg_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = maker(stored_secrets).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"], set_={"ciphertext": ciphertext, "updated_at": now}
        )
        async with self._write() as conn:
            await conn.execute(stmt)

    async def get_secret(self, name: str) -> bytes | None:
        """The ciphertext stored under ``name``, or None."""
        stmt = select(stored_secrets.c.ciphertext).where(stored_secrets.c.name == name)
        async with self._read() as conn:
            found = (await conn.execute(stmt)).scalar_one_or_none()
        return None if found is None else bytes(found)

    async def list_secrets(self) -> list[SecretInfo]:
        """Every secret's name and dates, by name."""
        table = stored_secrets
        stmt = select(table.c.name, table.c.created_at, table.c.updated_at).order_by(table.c.name)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [SecretInfo(name, created, updated) for name, created, updated in rows]

    async def delete_secret(self, name: str) -> bool:
        """Delete the secret ``name``. False if there was none."""
        async with self._write() as conn:
            result = await conn.execute(delete(stored_secrets).where(stored_secrets.c.name == name))
        return result.rowcount == 1
