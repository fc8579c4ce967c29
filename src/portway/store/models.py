"""Model versions and the models runners have served."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from portway.store.engine import Database, utc_now
from portway.store.records import RunnerModel
from portway.store.tables import model_versions, runner_models


class ModelRows(Database):
    """Versions first seen, and runner-served models' latest kind and visibility."""

    # -- model versions

    async def register_model_version(self, model: str, version_id: str) -> datetime:
        """Record that ``version_id`` of ``model`` exists (idempotent).

        Returns when the pair was first recorded; later calls, from any
        process, return the same instant.
        """
        stmt = select(model_versions.c.created_at).where(
            model_versions.c.model == model, model_versions.c.version_id == version_id
        )
        async with self._read() as conn:
            known: datetime | None = (await conn.execute(stmt)).scalar_one_or_none()
        if known is not None:
            return known
        values = {"model": model, "version_id": version_id, "created_at": utc_now()}
        async with self._write() as conn:
            await conn.execute(self._insert_ignore(model_versions, ["model", "version_id"], values))
            created: datetime = (await conn.execute(stmt)).scalar_one()
        return created

    async def remember_runner_model(self, model: str, kind: str, visibility: str) -> None:
        """Record that runners serve ``model`` (its latest kind and visibility)."""
        now = utc_now()
        values = {"model": model, "kind": kind, "visibility": visibility, "updated_at": now}
        maker = pg_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = maker(runner_models).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["model"],
            set_={"kind": kind, "visibility": visibility, "updated_at": now},
        )
        async with self._write() as conn:
            await conn.execute(stmt)

    async def runner_models(self) -> list[RunnerModel]:
        """Every model runners have served, by reference."""
        table = runner_models
        stmt = select(table.c.model, table.c.kind, table.c.visibility).order_by(table.c.model)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [RunnerModel(model, kind, visibility) for model, kind, visibility in rows]
