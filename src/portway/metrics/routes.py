"""The ``route`` label of a request: a bounded set of values, never a raw path."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Scope

OTHER = "other"
"""Requests that matched no route (404s, say): one value, whatever their path."""


class RouteLabels:
    """A request's route as its label: the matched route's template
    (``/v1/models/{model:path}``), or the path itself for ``direct`` paths (those
    answered without the router), or :data:`OTHER`."""

    def __init__(self, direct: Iterable[str]) -> None:
        self._direct = frozenset(direct)

    def __call__(self, scope: Scope) -> str:
        path: str = scope["path"]
        if path in self._direct:
            return path
        route = scope.get("route")
        template = getattr(route, "path", None)
        return template if isinstance(template, str) else OTHER
