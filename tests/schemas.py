"""Validate bodies against OpenAI's own OpenAPI description, when it is present.

The description lives beside the project, at ``../shared/openai-openapi/openapi.yaml``
(a user's fresh clone has none); checks skip cleanly without it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

SPEC = Path(__file__).resolve().parents[2] / "shared" / "openai-openapi" / "openapi.yaml"


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` (which the file still uses) as JSON Schema."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@functools.cache
def _registry() -> Any:
    import yaml
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = _nullable(yaml.load(SPEC.read_text(), Loader=loader))
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    return Registry().with_resource("urn:openai", resource)


def validate(body: Any, schema_name: str) -> None:
    """Assert ``body`` matches ``#/components/schemas/{schema_name}``."""
    if not SPEC.exists():
        pytest.skip(f"OpenAI's OpenAPI description is not at {SPEC}")
    from jsonschema import Draft202012Validator

    schema = {"$ref": f"urn:openai#/components/schemas/{schema_name}"}
    validator = Draft202012Validator(schema, registry=_registry())
    errors = sorted(validator.iter_errors(body), key=lambda error: list(error.path))
    assert not errors, f"{schema_name}: " + "; ".join(
        f"{list(error.path)}: {error.message}" for error in errors[:5]
    )
