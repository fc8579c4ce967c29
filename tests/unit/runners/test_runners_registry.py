"""Runner models in the registry: attach and detach, versions, listing, refusals."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from portway.auth.principal import Principal
from portway.backends.scripted import ScriptedBackend
from portway.errors import ModelNotFound, PermissionDenied
from portway.registry.errors import RunnerConflict, RunnerUnavailable
from portway.registry.models import ModelEntry, Registry
from portway.registry.refs import ModelRef
from portway.runners.backend import RunnerChatBackend
from portway.runners.hub import RunnerHub
from portway.runners.wire import Capabilities, Hello, ModelInfo
from portway.store import Store, User
from portway.store.records import RunnerModel

OLD, NEW = "1" * 32, "2" * 32


class FakeStore:
    """Each new (model, version) is recorded a second after the previous one."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], datetime] = {}
        self.runner_models_seen: dict[str, RunnerModel] = {}

    async def remember_runner_model(self, model: str, kind: str, visibility: str) -> None:
        self.runner_models_seen[model] = RunnerModel(model, kind, visibility)

    async def runner_models(self) -> list[RunnerModel]:
        return sorted(self.runner_models_seen.values(), key=lambda known: known.model)

    async def register_model_version(self, model: str, version_id: str) -> datetime:
        await asyncio.sleep(0)  # let concurrent attaches interleave
        start = datetime(2026, 1, 1, tzinfo=UTC)
        return self.seen.setdefault((model, version_id), start + timedelta(len(self.seen)))


def who(name: str, *, admin: bool = False) -> Principal:
    """A runner token of ``name``; ``admin``: an admin user's, with the admin scope."""
    user = User(1, name, admin, datetime.now(UTC))
    scopes = ("runner", "admin") if admin else ("runner",)
    return Principal(user=user, token_id="tok_1", scopes=scopes)


def hello(reference: str = "alice/demo/models/echo", version: str = OLD, **info: Any) -> Hello:
    return Hello(type="hello", model=ModelInfo(reference=reference, version=version, **info))


def registry() -> Registry:
    scripted = ModelEntry(ModelRef("portway", "test", "scripted"), "s" * 32, ScriptedBackend(["x"]))
    declared = ModelEntry(
        ModelRef("alice", "demo", "declared"),
        "d" * 32,
        RunnerChatBackend("alice/demo/models/declared"),
        visibility="private",
    )
    return Registry([scripted, declared])


@pytest.fixture
def hub() -> RunnerHub:
    return RunnerHub(registry(), cast(Store, FakeStore()))


async def test_listed_while_attached_newest_version_unpinned(hub: RunnerHub) -> None:
    alice, names = who("alice"), lambda: [entry.name for entry in hub.registry.entries()]
    assert names() == ["alice/demo/models/declared", "portway/test/models/scripted"]
    old_link, old = await hub.attach(alice, hello(version=OLD))
    new_link, new = await hub.attach(alice, hello(version=NEW))
    assert "alice/demo/models/echo" in names()
    assert hub.registry.resolve("alice/demo/models/echo", alice) is new
    pinned = hub.registry.resolve(f"alice/demo/models/echo/versions/{OLD}", alice)
    assert pinned is old
    hub.detach(new_link, new)
    assert hub.registry.resolve("alice/demo/models/echo", alice) is old
    with pytest.raises(RunnerUnavailable) as caught:
        hub.registry.resolve(f"alice/demo/models/echo/versions/{NEW}", alice)
    assert caught.value.headers == {"Retry-After": "5"}
    with pytest.raises(ModelNotFound):
        hub.registry.resolve(f"alice/demo/models/echo/versions/{'3' * 32}", alice)
    hub.detach(old_link, old)
    assert "alice/demo/models/echo" not in names()
    with pytest.raises(RunnerUnavailable):
        hub.registry.resolve("alice/demo/models/echo", alice)
    with pytest.raises(ModelNotFound):
        hub.registry.resolve("alice/demo/models/never", alice)


async def test_declared_models_keep_their_visibility(hub: RunnerHub) -> None:
    with pytest.raises(RunnerUnavailable):
        hub.registry.resolve("alice/demo/models/declared", who("alice"))
    with pytest.raises(ModelNotFound):
        hub.registry.resolve("alice/demo/models/declared", who("bob"))
    _, entry = await hub.attach(who("alice"), hello("alice/demo/models/declared"))
    assert entry.visibility == "private"
    assert hub.registry.resolve("alice/demo/models/declared", who("alice")) is entry
    assert [e.name for e in hub.registry.visible(who("bob"))] == ["portway/test/models/scripted"]


async def test_refusals(hub: RunnerHub) -> None:
    with pytest.raises(PermissionDenied):
        await hub.attach(who("bob"), hello())
    admin_user_without_admin_scope = Principal(who("bob", admin=True).user, "tok_2", ("runner",))
    with pytest.raises(PermissionDenied, match="'admin' scope"):
        await hub.attach(admin_user_without_admin_scope, hello())
    _, entry = await hub.attach(who("bob", admin=True), hello())
    assert entry.ref.user == "alice"
    with pytest.raises(RunnerConflict, match="cannot take over"):
        await hub.attach(who("portway"), hello("portway/test/models/scripted"))
    with pytest.raises(RunnerConflict, match="another configuration"):
        await hub.attach(who("alice"), hello(capabilities=Capabilities(tools=True)))


async def test_health_shows_every_runner(hub: RunnerHub) -> None:
    await hub.attach(who("alice"), hello())
    await hub.attach(who("alice"), hello())
    [found] = hub.health()
    assert found["id"] == "alice/demo/models/echo"
    assert [runner["in_flight"] for runner in found["runners"]] == [0, 0]


async def test_private_runner_models(hub: RunnerHub) -> None:
    private = hello().model_copy(update={"visibility": "private"})
    link, entry = await hub.attach(who("alice"), private)
    assert entry.visibility == "private"
    assert hub.registry.resolve("alice/demo/models/echo", who("alice")) is entry
    assert hub.registry.resolve("alice/demo/models/echo", who("root", admin=True)) is entry
    with pytest.raises(ModelNotFound):
        hub.registry.resolve("alice/demo/models/echo", who("bob"))
    hub.detach(link, entry)
    with pytest.raises(ModelNotFound):
        hub.registry.resolve("alice/demo/models/echo", who("bob"))
    await hub.attach(who("alice"), hello())
    assert hub.registry.resolve("alice/demo/models/echo", who("bob")) is entry


async def test_a_declared_model_is_described_while_offline(hub: RunnerHub) -> None:
    alice = who("alice")
    declared = hub.registry.describe("alice/demo/models/declared", alice)
    assert declared.name == "alice/demo/models/declared"
    with pytest.raises(ModelNotFound):
        hub.registry.describe(f"alice/demo/models/declared/versions/{OLD}", alice)
    with pytest.raises(ModelNotFound):
        hub.registry.describe("alice/demo/models/declared", who("bob"))
    link, entry = await hub.attach(alice, hello("alice/demo/models/declared"))
    assert hub.registry.describe("alice/demo/models/declared", alice) is entry
    hub.detach(link, entry)
    with pytest.raises(RunnerUnavailable):
        hub.registry.describe(f"alice/demo/models/declared/versions/{OLD}", alice)


async def test_runners_of_a_new_version_attaching_at_once_share_one_backend(hub: RunnerHub) -> None:
    (one, first), (two, second) = await asyncio.gather(
        hub.attach(who("alice"), hello()), hub.attach(who("alice"), hello())
    )
    assert first is second
    assert isinstance(first.backend, RunnerChatBackend)
    assert first.backend.pool.links == [one, two]


async def test_runner_models_of_an_earlier_run_get_503_until_a_runner_attaches() -> None:
    store = FakeStore()
    first = RunnerHub(registry(), cast(Store, store))
    await first.attach(who("alice"), hello())
    secret = hello("alice/demo/models/secret").model_copy(update={"visibility": "private"})
    await first.attach(who("alice"), secret)
    assert sorted(store.runner_models_seen) == [
        "alice/demo/models/echo",
        "alice/demo/models/secret",
    ]

    restarted = RunnerHub(registry(), cast(Store, store))  # a new server process
    await restarted.restore()
    with pytest.raises(RunnerUnavailable):
        restarted.registry.resolve("alice/demo/models/echo", who("bob"))
    with pytest.raises(ModelNotFound):  # private: others must not learn it exists
        restarted.registry.resolve("alice/demo/models/secret", who("bob"))
    with pytest.raises(RunnerUnavailable):
        restarted.registry.resolve("alice/demo/models/secret", who("alice"))
    assert "alice/demo/models/echo" not in [entry.name for entry in restarted.registry.entries()]
    _, entry = await restarted.attach(who("alice"), hello())
    assert restarted.registry.resolve("alice/demo/models/echo", who("bob")) is entry


async def test_a_model_without_an_owner_is_the_runner_tokens_users(hub: RunnerHub) -> None:
    _, entry = await hub.attach(who("carol"), hello("demo/models/mine"))
    assert entry.name == "carol/demo/models/mine"
    assert hub.registry.resolve("carol/demo/models/mine", who("bob")) is entry
