"""Check a model's pip requirements against what is installed."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement


class MissingRequirements(RuntimeError):
    """Requirements that are not installed (or not in a matching version)."""

    def __init__(self, source: str, missing: list[str]) -> None:
        command = "pip install " + " ".join(shlex.quote(item) for item in missing)
        super().__init__(
            f"{source} needs packages that are not installed: {', '.join(missing)}. "
            f"Install them with: {command}"
        )
        self.missing = missing


def _satisfied(requirement: Requirement) -> bool:
    if requirement.marker is not None and not requirement.marker.evaluate():
        return True
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        return False
    return requirement.specifier.contains(installed, prereleases=True)


def check_requirements(requirements: Iterable[str], source: str) -> None:
    """Raise ``MissingRequirements`` naming every unmet requirement (``ValueError``
    for one that is not a valid requirement string)."""
    missing = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            raise ValueError(f"{source}: {text!r} is not a valid requirement: {exc}") from exc
        if not _satisfied(requirement):
            missing.append(text)
    if missing:
        raise MissingRequirements(source, missing)
