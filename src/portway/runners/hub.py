"""``RunnerHub``: attaches runners to the registry and detaches them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, cast, get_args

from portway.auth.principal import Principal
from portway.backends.base import Kind
from portway.errors import PermissionDenied
from portway.registry import refs
from portway.registry.errors import RunnerConflict
from portway.registry.models import ModelEntry, Registry
from portway.registry.runner_spec import RunnerTimeouts
from portway.runners.backend import RunnerBackend
from portway.runners.kinds import runner_backend
from portway.runners.link import RunnerLink
from portway.runners.wire import Hello, ModelInfo
from portway.store import Store

log = logging.getLogger("portway.runners")

Visibility = Literal["public", "private"]


class RunnerHub:
    """Every attached runner, by the model version it serves."""

    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store
        self.links: dict[RunnerLink, ModelEntry] = {}
        """Runners attached to this process, and the version each serves."""
        self.draining: set[RunnerLink] = set()
        self.process: str | None = None
        """This process's name in ``/health`` when runners are shared with others."""
        self.listeners: list[Callable[[], None]] = []
        """Called when a runner attaches, drains or detaches here."""

    async def attach(self, principal: Principal, hello: Hello) -> tuple[RunnerLink, ModelEntry]:
        """Check who may attach what, record the version, and attach a new link.

        Raises PermissionDenied (not the owner) or RunnerConflict (the name is a
        catalogue model of another backend, or the version was described otherwise).
        """
        info = hello.model
        if info.reference.count("/") == 2:  # no owner named: the token's user
            reference = f"{principal.user.name}/{info.reference}"
            info = info.model_copy(update={"reference": reference})
        ref = refs.parse(info.reference).ref
        if principal.user.name != ref.user and not principal.is_admin:
            raise PermissionDenied(
                f"Only '{ref.user}' (or a token with the 'admin' scope) may attach runners "
                f"to '{ref}'.",
                code="not_model_owner",
            )
        self.registry.check_runner_name(ref)
        declared = self.registry.declared_runner(ref)
        if declared is not None and declared.kind != info.kind:
            raise RunnerConflict(f"The catalogue declares '{ref}' as a {declared.kind} model.")
        visibility = declared.visibility if declared else hello.visibility
        entry = await self.version_entry(info, visibility)
        await self.store.remember_runner_model(str(ref), info.kind, visibility)
        link = RunnerLink(hello.runner or "runner", info, hello.concurrency, principal.user.name)
        assert isinstance(entry.backend, RunnerBackend)
        entry.backend.add(link)
        self.links[link] = entry
        log.info("runner %s attached to %s version %s", link.name, ref, info.version)
        self._changed()
        return link, entry

    async def version_entry(self, info: ModelInfo, visibility: Visibility) -> ModelEntry:
        """The registry entry of the version ``info`` describes (``info.reference``
        names its owner), recorded and made resolvable if new.

        Raises RunnerConflict if the version is attached with another description.
        """
        ref = refs.parse(info.reference).ref
        entry = self.registry.runner_version(ref, info.version)
        if entry is None:
            declared = self.registry.declared_runner(ref)
            registered = await self.store.register_model_version(str(ref), info.version)
            new = ModelEntry(
                ref=ref,
                version_id=info.version,
                backend=runner_backend(str(ref), info.kind, info, timeouts=_timeouts(declared)),
                visibility=visibility,
                created=int(registered.timestamp()),
            )
            self.registry.add_runner_version(new, registered.timestamp())
            entry = self.registry.runner_version(ref, info.version) or new  # first one wins
        backend = entry.backend
        assert isinstance(backend, RunnerBackend)
        if backend.info != info:
            raise RunnerConflict(
                f"Version {info.version} of '{ref}' is attached with another configuration."
            )
        entry.visibility = visibility  # the latest runner's choice
        return entry

    async def restore(self) -> None:
        """Runner models of earlier runs: until a runner of theirs attaches again,
        they get 503 with ``Retry-After`` (not 404), and are not listed."""
        for known in await self.store.runner_models():
            ref = refs.parse(known.model).ref
            kind = cast(Kind, known.kind if known.kind in get_args(Kind) else "chat")
            entry = ModelEntry(ref, "", runner_backend(known.model, kind))
            entry.visibility = "private" if known.visibility == "private" else "public"
            self.registry.add_offline_runner(entry)

    def drain(self, link: RunnerLink, entry: ModelEntry) -> None:
        """The runner is stopping: no new requests go to it; its calls go on."""
        if isinstance(entry.backend, RunnerBackend):
            entry.backend.remove(link)
        if link in self.links:
            self.draining.add(link)
        log.info("runner %s of %s is draining", link.name, entry.ref)
        self._changed()

    def detach(self, link: RunnerLink, entry: ModelEntry) -> None:
        """The runner left: its started calls fail, the others move to other runners."""
        if link not in self.links:
            return
        del self.links[link]
        self.draining.discard(link)
        link.lose()
        backend = entry.backend
        if isinstance(backend, RunnerBackend):
            backend.remove(link)
        log.info("runner %s detached from %s version %s", link.name, entry.ref, entry.version_id)
        self._changed()

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    def close(self) -> None:
        """Server shutdown: stop writing to every runner (their connections close)."""
        for link in self.links:
            link.close()

    def health(self) -> list[dict[str, Any]]:
        """Each runner-served version and its runners, for admins' ``/health``."""
        found = []
        for entry in self.registry.runner_entries():
            if isinstance(entry.backend, RunnerBackend):
                detail = entry.backend.health()
                if self.process is not None:  # a runner of another process names its own
                    for runner in detail["runners"]:
                        runner.setdefault("process", self.process)
                found.append({"id": entry.name, "version": entry.version_id, **detail})
        return found


def _timeouts(declared: ModelEntry | None) -> RunnerTimeouts | None:
    """The deadlines the catalogue declares for a runner model, if any."""
    backend = declared.backend if declared is not None else None
    return backend.declared_timeouts if isinstance(backend, RunnerBackend) else None
