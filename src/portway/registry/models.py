"""The models a server runs, and resolving a client's ``model`` to one of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from portway.auth.principal import Principal
from portway.backends.base import (
    AttachableBackend,
    ChatBackend,
    EmbeddingBackend,
    ImageBackend,
    Kind,
    ModelBackend,
)
from portway.errors import InvalidRequest, ModelNotFound
from portway.registry import refs
from portway.registry.errors import RunnerConflict, RunnerUnavailable
from portway.registry.refs import ModelRef


@dataclass
class ModelEntry:
    """One served model version and the backend that runs it."""

    ref: ModelRef
    version_id: str
    backend: ModelBackend
    visibility: Literal["public", "private"] = "public"
    aliases: tuple[str, ...] = ()
    created: int = 0

    @property
    def name(self) -> str:
        return str(self.ref)

    @property
    def kind(self) -> Kind:
        return self.backend.kind

    def wrong_kind(self, wanted: str) -> InvalidRequest:
        """The error for a request to this model on an endpoint of another kind."""
        served = {
            "chat": "/chat/completions",
            "embedding": "/embeddings",
            "image": "/images/generations",
        }
        article = "an" if self.kind[0] in "aeiou" else "a"
        return InvalidRequest(
            f"The model '{self.name}' is {article} {self.kind} model: it serves "
            f"{served[self.kind]}, not {wanted}.",
            param="model",
            code="wrong_model_kind",
        )

    def chat_backend(self) -> ChatBackend:
        if not isinstance(self.backend, ChatBackend):
            raise self.wrong_kind("/chat/completions")
        return self.backend

    def embedding_backend(self) -> EmbeddingBackend:
        if not isinstance(self.backend, EmbeddingBackend):
            raise self.wrong_kind("/embeddings")
        return self.backend

    def image_backend(self) -> ImageBackend:
        if not isinstance(self.backend, ImageBackend):
            raise self.wrong_kind("/images/generations")
        return self.backend

    @property
    def fingerprint(self) -> str:
        return "fp_" + self.version_id[:10]

    def visible_to(self, principal: Principal) -> bool:
        return (
            self.visibility == "public"
            or principal.user.name == self.ref.user
            or principal.is_admin
        )


@dataclass
class _RunnerVersion:
    entry: ModelEntry
    registered: float
    """When the version was first recorded (the newest attached version serves)."""


class Registry:
    """Catalogue models, plus runner-served versions that come and go.

    A runner model (declared in the catalogue with ``backend = "runner"``, or
    first described by an attaching runner) resolves, unpinned, to its newest
    version with a runner attached; pinned, to that version only. Known but
    without a runner: 503 with ``Retry-After``; never seen: 404.
    """

    def __init__(
        self, entries: Iterable[ModelEntry], aliases: dict[str, str] | None = None
    ) -> None:
        self._entries = {entry.ref: entry for entry in entries}
        self._runner_versions: dict[ModelRef, dict[str, _RunnerVersion]] = {}
        self._offline_runners: dict[ModelRef, ModelEntry] = {}
        self._aliases: dict[str, ModelRef] = {}
        for entry in self._entries.values():
            for alias in entry.aliases:
                self._aliases[alias] = entry.ref
        for alias, target in (aliases or {}).items():
            self._aliases[alias] = refs.parse(target).ref

    def entries(self) -> list[ModelEntry]:
        """Every model listed now: a runner model's newest attached version, or its
        catalogue declaration while no runner is attached."""
        found = dict(self._entries)
        for ref in self._runner_versions:
            live = self._newest_live(ref)
            if live is not None:
                found[ref] = live
        return sorted(found.values(), key=lambda entry: entry.ref)

    def visible(self, principal: Principal) -> list[ModelEntry]:
        return [entry for entry in self.entries() if entry.visible_to(principal)]

    def resolve(self, text: str, principal: Principal) -> ModelEntry:
        """The entry ``text`` names, if this principal may use it; else 404."""
        if text in self._aliases:
            ref, version = self._aliases[text], None
        elif refs.looks_like_reference(text):
            parsed = refs.parse(text)
            ref, version = parsed.ref, parsed.version
        else:
            raise ModelNotFound(text)
        entry = self._entries.get(ref)
        if self._is_runner_model(ref):
            return self._resolve_runner(text, ref, version, principal)
        if entry is None or not entry.visible_to(principal):
            raise ModelNotFound(text)
        if version is not None and version != entry.version_id:
            raise ModelNotFound(text, "names a version that is not served")
        return entry

    def describe(self, text: str, principal: Principal) -> ModelEntry:
        """What ``GET /models/{model}`` shows: the entry ``resolve`` gives, or for
        a catalogue-declared runner model without runners, its declaration."""
        try:
            return self.resolve(text, principal)
        except RunnerUnavailable:
            parsed = None if text in self._aliases else refs.parse(text)
            ref = self._aliases[text] if parsed is None else parsed.ref
            declared = self.declared_runner(ref)
            if (
                declared is None
                or (parsed and parsed.version)
                or not declared.visible_to(principal)
            ):
                raise
            return declared

    # -- runner models

    def declared_runner(self, ref: ModelRef) -> ModelEntry | None:
        """The catalogue's ``backend = "runner"`` entry for ``ref``, if any."""
        entry = self._entries.get(ref)
        return entry if entry is not None and isinstance(entry.backend, AttachableBackend) else None

    def runner_version(self, ref: ModelRef, version: str) -> ModelEntry | None:
        found = self._runner_versions.get(ref, {}).get(version)
        return found.entry if found is not None else None

    def check_runner_name(self, ref: ModelRef) -> None:
        """Raise RunnerConflict (409) if ``ref`` is a catalogue model of another backend."""
        if ref in self._entries and self.declared_runner(ref) is None:
            raise RunnerConflict(
                f"The model '{ref}' is served by this server's catalogue; "
                "a runner cannot take over its name."
            )

    def add_runner_version(self, entry: ModelEntry, registered: float) -> None:
        """Make a runner-served version resolvable (see :meth:`check_runner_name`)."""
        self.check_runner_name(entry.ref)
        versions = self._runner_versions.setdefault(entry.ref, {})
        versions.setdefault(entry.version_id, _RunnerVersion(entry, registered))

    def add_offline_runner(self, entry: ModelEntry) -> None:
        """A runner model of an earlier run, known (503, not 404) but not listed
        until a runner attaches; the catalogue's own models win."""
        if entry.ref not in self._entries:
            self._offline_runners[entry.ref] = entry

    def runner_entries(self) -> list[ModelEntry]:
        """Every runner-served version this server has seen, attached or not."""
        return [
            version.entry
            for ref in sorted(self._runner_versions)
            for version in self._runner_versions[ref].values()
        ]

    def _is_runner_model(self, ref: ModelRef) -> bool:
        return (
            ref in self._runner_versions
            or ref in self._offline_runners
            or self.declared_runner(ref) is not None
        )

    def _newest_live(self, ref: ModelRef) -> ModelEntry | None:
        live = [
            version
            for version in self._runner_versions.get(ref, {}).values()
            if isinstance(version.entry.backend, AttachableBackend)
            and version.entry.backend.attached
        ]
        return max(live, key=lambda version: version.registered).entry if live else None

    def _resolve_runner(
        self, text: str, ref: ModelRef, version: str | None, principal: Principal
    ) -> ModelEntry:
        known = [self.declared_runner(ref), self._offline_runners.get(ref)] + [
            found.entry for found in self._runner_versions.get(ref, {}).values()
        ]
        if not any(entry is not None and entry.visible_to(principal) for entry in known):
            raise ModelNotFound(text)
        if version is not None:
            entry = self.runner_version(ref, version)
            if entry is None:
                raise ModelNotFound(text, "names a version that is not served")
        else:
            entry = self._newest_live(ref)
        if entry is None or not isinstance(entry.backend, AttachableBackend):
            raise RunnerUnavailable(text)
        if not entry.visible_to(principal):
            raise ModelNotFound(text)
        if not entry.backend.attached:
            raise RunnerUnavailable(text)
        return entry
