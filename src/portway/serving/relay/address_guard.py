"""Which network addresses Portway may fetch re-hosted images from.

An upstream's answer names the URL Portway fetches, so a hostile or compromised
upstream could point it at Portway's own network (server-side request forgery).
By default only public unicast addresses are fetched: loopback, private, shared
(100.64/10), link-local, multicast, reserved and unspecified addresses are refused,
in IPv4 and IPv6 alike, IPv4 addresses wrapped in IPv6 (``::ffff:a.b.c.d``,
NAT64, 6to4, Teredo) judged as the IPv4 address they carry. A model's catalogue
entry may allow networks of its own (``rehost_allowed_networks``).

:class:`GuardedResolver` applies the rule where it cannot be dodged: it is the
resolver of the connector that fetches, so the addresses checked are the very
ones connected to (a name that resolves differently a moment later, DNS
rebinding, gains nothing).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class AddressRefused(OSError):
    """Every address of a host is one Portway will not fetch from."""


def embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo
    client), else ``address`` itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return address


def is_public(address: IPAddress) -> bool:
    """True for a global unicast address (what the internet routes)."""
    address = embedded_ipv4(address)
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses, plus ``allowed`` networks (a model's own opt-in)."""

    allowed: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, networks: Iterable[str | IPNetwork]) -> AddressPolicy:
        return cls(tuple(ipaddress.ip_network(network, strict=False) for network in networks))

    def permits(self, address: str | IPAddress) -> bool:
        """True when ``address`` (an IP literal) may be fetched from."""
        found = ip_literal(address) if isinstance(address, str) else address
        if found is None:
            return False
        if is_public(found):
            return True
        bare = embedded_ipv4(found)
        return any(bare in network or found in network for network in self.allowed)


def ip_literal(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is one (brackets of IPv6 URLs removed)."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


class GuardedResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver and keeps only the addresses
    ``policy`` permits; :class:`AddressRefused` when none is left. Names in
    ``trusted`` (the operator's proxies) are resolved unchecked."""

    def __init__(self, policy: AddressPolicy, trusted: frozenset[str] = frozenset()) -> None:
        self.policy = policy
        self.trusted = trusted
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if host in self.trusted:
            return found
        kept = [entry for entry in found if self.policy.permits(entry["host"])]
        if not kept:
            raise AddressRefused(f"no address of {host} may be fetched from")
        return kept

    async def close(self) -> None:
        await self._inner.close()
