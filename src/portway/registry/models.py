"""The models a server runs, and resolving a client's ``model`` to one of them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from portway.auth.principal import Principal
from portway.backends.base import (
    ChatBackend,
    EmbeddingBackend,
    ImageBackend,
    Kind,
    ModelBackend,
)
from portway.errors import InvalidRequest, ModelNotFound
from portway.registry import refs
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


def version_id(*parts: object) -> str:
    """A stable version id (32 lower-case hex digits) from what defines a version."""
    text = json.dumps([str(part) for part in parts])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class Registry:
    def __init__(
        self, entries: Iterable[ModelEntry], aliases: dict[str, str] | None = None
    ) -> None:
        self._entries = {entry.ref: entry for entry in entries}
        self._aliases: dict[str, ModelRef] = {}
        for entry in self._entries.values():
            for alias in entry.aliases:
                self._aliases[alias] = entry.ref
        for alias, target in (aliases or {}).items():
            self._aliases[alias] = refs.parse(target).ref

    def entries(self) -> list[ModelEntry]:
        return sorted(self._entries.values(), key=lambda entry: entry.ref)

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
        if entry is None or not entry.visible_to(principal):
            raise ModelNotFound(text)
        if version is not None and version != entry.version_id:
            raise ModelNotFound(text, "names a version that is not served")
        return entry
