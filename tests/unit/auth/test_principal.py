"""A token does what its scopes say, an admin user's token included."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from portway.auth.issue import ScopeError, check_scopes
from portway.auth.principal import Principal
from portway.errors import PermissionDenied
from portway.store import User


def token(*scopes: str, admin_user: bool = True) -> Principal:
    return Principal(User(1, "admin", admin_user, datetime.now(UTC)), "tok_1", scopes)


def test_an_admin_users_inference_token_has_no_other_powers() -> None:
    inference_only = token("inference")
    assert not inference_only.is_admin
    inference_only.require_scope("inference")
    for scope in ("runner", "admin"):
        with pytest.raises(PermissionDenied) as refused:
            inference_only.require_scope(scope)
        assert refused.value.code == "missing_scope"


def test_admin_powers_come_from_the_admin_scope() -> None:
    assert token("inference", "admin").is_admin
    assert token("admin", admin_user=False).is_admin


def test_the_admin_scope_implies_no_other() -> None:
    admin_only = token("admin")
    with pytest.raises(PermissionDenied):
        admin_only.require_scope("inference")
    with pytest.raises(PermissionDenied):
        admin_only.require_scope("runner")


def test_scopes_are_repeated_or_joined_with_commas() -> None:
    assert check_scopes(["inference,admin", "runner", "admin"]) == ("inference", "admin", "runner")
    assert check_scopes([]) == ("inference",)
    with pytest.raises(ScopeError, match="unknown scope"):
        check_scopes(["inference,root"])
