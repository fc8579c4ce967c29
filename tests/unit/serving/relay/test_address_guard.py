"""Re-hosting fetches only from addresses a model allows: the address rule in
IPv4, IPv6 and IPv4-in-IPv6 forms, the resolver that applies it to the addresses
connected to, and the fetcher's redirects and errors (against a local server)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.abc import ResolveResult

from portway.backends.base import PNG_MAGIC
from portway.serving.media import MediaStore
from portway.serving.relay.address_guard import (
    AddressPolicy,
    AddressRefused,
    GuardedResolver,
    is_public,
)
from portway.serving.relay.rehost import Rehoster, RehostFailed

REFUSED = [
    "127.0.0.1",
    "127.5.6.7",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # shared (carrier-grade NAT)
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "ff0e::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused_by_default(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))
    assert not AddressPolicy().permits(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_permitted(address: str) -> None:
    assert AddressPolicy().permits(address)


def test_allowed_networks_open_only_themselves() -> None:
    policy = AddressPolicy.of(["127.0.0.0/8", "fd00::/8"])
    assert policy.permits("127.0.0.1")
    assert policy.permits("::ffff:127.0.0.1")  # judged as the IPv4 address it carries
    assert policy.permits("fd12::1")
    assert not policy.permits("10.0.0.1")
    assert not policy.permits("::1")
    assert not policy.permits("not-an-address")


class _Answers:
    """A stand-in for the default resolver: fixed answers, no DNS."""

    def __init__(self, *hosts: str) -> None:
        self.hosts = hosts

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=found, port=port, family=family, proto=0, flags=0)
            for found in self.hosts
        ]

    async def close(self) -> None:
        return None


async def test_resolver_keeps_only_permitted_addresses() -> None:
    resolver = GuardedResolver(AddressPolicy())
    resolver._inner = _Answers("10.0.0.7", "93.184.215.14")  # type: ignore[assignment]
    found = await resolver.resolve("mixed.example", 443)
    assert [entry["host"] for entry in found] == ["93.184.215.14"]


async def test_resolver_refuses_a_name_with_only_private_addresses() -> None:
    resolver = GuardedResolver(AddressPolicy())
    resolver._inner = _Answers("127.0.0.1", "::1")  # type: ignore[assignment]
    with pytest.raises(AddressRefused):
        await resolver.resolve("rebound.example", 80)
    trusting = GuardedResolver(AddressPolicy(), frozenset({"proxy.internal"}))
    trusting._inner = _Answers("10.0.0.3")  # type: ignore[assignment]
    assert [entry["host"] for entry in await trusting.resolve("proxy.internal", 3128)] == [
        "10.0.0.3"
    ]


# ----------------------------------------------------------------- the fetcher

PNG = PNG_MAGIC + b"rest of a picture"


@pytest.fixture
async def images() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A local server: /png, /missing (404), /hop/N (a redirect to /hop/N-1,
    /hop/0 the PNG) and /to?where=URL (a redirect to URL); returns its base URL
    and how often each path was asked for."""
    hits: dict[str, int] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        hits[path] = hits.get(path, 0) + 1
        if path == "/png" or path == "/hop/0":
            return web.Response(body=PNG, content_type="image/png")
        if path.startswith("/hop/"):
            raise web.HTTPFound(f"/hop/{int(path.rsplit('/', 1)[1]) - 1}")
        if path == "/to":
            raise web.HTTPFound(request.query["where"])
        return web.Response(status=404, text="no such picture")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", hits
    await runner.cleanup()


@pytest.fixture
async def rehoster(tmp_path: Path) -> AsyncIterator[Rehoster]:
    found = Rehoster(MediaStore(tmp_path, b"k" * 32))
    yield found
    await found.close()


LOOPBACK = AddressPolicy.of(["127.0.0.1/32"])


def _deadline() -> float:
    return asyncio.get_running_loop().time() + 30


def _assert_generic(error: RehostFailed) -> None:
    assert error.status == 502 and error.code == "upstream_error"
    assert error.message == "An image of 'm' could not be fetched from its upstream."


async def test_a_loopback_image_url_is_refused_unless_allowed(
    rehoster: Rehoster, images: tuple[str, dict[str, int]]
) -> None:
    base, hits = images
    with pytest.raises(RehostFailed) as caught:
        await rehoster.fetch(f"{base}/png", "m", _deadline())
    _assert_generic(caught.value)
    assert isinstance(caught.value.__cause__, AddressRefused)
    assert hits == {}  # never connected
    assert await rehoster.fetch(f"{base}/png", "m", _deadline(), LOOPBACK) == PNG


async def test_a_name_resolving_to_loopback_is_refused(
    rehoster: Rehoster, images: tuple[str, dict[str, int]]
) -> None:
    base, hits = images
    named = base.replace("127.0.0.1", "localhost")
    with pytest.raises(RehostFailed) as caught:
        await rehoster.fetch(f"{named}/png", "m", _deadline())
    _assert_generic(caught.value)
    assert hits == {}


async def test_every_redirect_hop_is_checked(
    rehoster: Rehoster, images: tuple[str, dict[str, int]]
) -> None:
    base, hits = images
    port = base.rsplit(":", 1)[1]
    for elsewhere in (f"http://127.0.0.2:{port}/png", f"http://[::ffff:127.0.0.2]:{port}/png"):
        with pytest.raises(RehostFailed) as caught:
            await rehoster.fetch(f"{base}/to?where={elsewhere}", "m", _deadline(), LOOPBACK)
        _assert_generic(caught.value)
        assert isinstance(caught.value.__cause__, AddressRefused)
    assert hits == {"/to": 2}
    assert await rehoster.fetch(f"{base}/hop/3", "m", _deadline(), LOOPBACK) == PNG


async def test_too_many_redirects_and_upstream_statuses_stay_generic(
    rehoster: Rehoster, images: tuple[str, dict[str, int]]
) -> None:
    base, _ = images
    with pytest.raises(RehostFailed) as caught:
        await rehoster.fetch(f"{base}/hop/4", "m", _deadline(), LOOPBACK)
    _assert_generic(caught.value)
    with pytest.raises(RehostFailed) as caught:
        await rehoster.fetch(f"{base}/missing", "m", _deadline(), LOOPBACK)
    _assert_generic(caught.value)  # no "HTTP 404"
    with pytest.raises(RehostFailed) as caught:
        await rehoster.fetch("http://127.0.0.1:9/png", "m", _deadline(), LOOPBACK)
    _assert_generic(caught.value)  # no "ClientConnectorError"
