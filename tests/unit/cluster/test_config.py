"""Which flag combinations can run, and what the refusals say."""

from __future__ import annotations

import pytest

from portway.cluster import ClusterConfigError, check_settings
from portway.settings import Settings

REDIS = "redis://127.0.0.1:6379"
NATS = "nats://127.0.0.1:4222"


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"redis_url": REDIS, "nats_url": NATS},
        {"workers": 4, "redis_url": REDIS, "nats_url": NATS},
    ],
)
def test_runnable_layouts_pass(changes: dict[str, object]) -> None:
    check_settings(Settings(**changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"workers": 2},
            "--workers 2 needs --redis-url and --nats-url (shared limits and runners)",
        ),
        ({"workers": 3, "redis_url": REDIS}, "--workers 3 needs --redis-url and --nats-url"),
        ({"redis_url": REDIS}, "--redis-url needs --nats-url too"),
        ({"nats_url": NATS}, "--nats-url needs --redis-url too"),
        ({"workers": 0}, "--workers must be 1 or more"),
        ({"cluster_name": "a.b"}, "--cluster-name 'a.b' must be"),
        ({"cluster_name": ""}, "--cluster-name '' must be"),
    ],
)
def test_layouts_that_cannot_run_are_refused_by_name(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ClusterConfigError) as refused:
        check_settings(Settings(**changes))  # type: ignore[arg-type]
    assert message in str(refused.value)


def test_clustered_follows_the_flags() -> None:
    assert not Settings().clustered
    assert Settings(redis_url=REDIS, nats_url=NATS).clustered
    assert Settings(workers=2).clustered


def test_cluster_name_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTWAY_CLUSTER_NAME", "blue")
    assert Settings.from_env().cluster_name == "blue"
    assert Settings.from_env(cluster_name="green").cluster_name == "green"
