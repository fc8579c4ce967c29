"""The ``route`` label of a request: a bounded set of values, never a raw path."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Scope

OTHER = "other"
"""Requests that matched no route (404s, say): one value, whatever their path."""


class RouteLabels:
    """A request's route as its label: the matched route's template
    (``/models/{model:path}``), or the path itself for ``direct`` paths (those
    answered without the router), or :data:`OTHER`; without the API ``prefixes``
    (``/v1``...), so that one route has one label under every prefix."""

    def __init__(self, direct: Iterable[str] = (), prefixes: Iterable[str] = ()) -> None:
        self._prefixes = sorted(prefixes, key=len, reverse=True)
        self._direct = {path: self._unprefixed(path) for path in direct}
        self._templates: dict[str, str] = {}
        """The templates seen so far, and their labels."""

    def __call__(self, scope: Scope) -> str:
        label = self._direct.get(scope["path"])
        if label is not None:
            return label
        template = getattr(scope.get("route"), "path", None)
        if not isinstance(template, str):
            return OTHER
        label = self._templates.get(template)
        if label is None:
            label = self._templates[template] = self._unprefixed(template)
        return label

    def _unprefixed(self, path: str) -> str:
        for prefix in self._prefixes:
            if path.startswith(prefix + "/"):
                return path[len(prefix) :]
        return path
