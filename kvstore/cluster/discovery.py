"""DNS discovery through the headless Service: the manager's address and the set's peers.

Every lookup goes to DNS (no cache): the manager's IP changes when its pod is re-created, so a
follower resolves it on every connect and keeps no address past a failure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from kvstore.config import Settings
from kvstore.errors import ManagerUnavailable

log = logging.getLogger("kvstore.discovery")
LIFETIME = 2.0


@dataclass(frozen=True)
class Peer:
    name: str  # the pod's name, e.g. kv-1 (the address when only A records are known)
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{_bracket(self.host)}:{self.port}"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def make_resolver(dns_server: str | None) -> dns.asyncresolver.Resolver:
    if dns_server is None:
        try:
            resolver = dns.asyncresolver.Resolver(configure=True)
        except dns.resolver.NoResolverConfiguration:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = ["127.0.0.1"]
    else:
        host, _, port = dns_server.rpartition(":")
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host.strip("[]")]
        resolver.port = int(port)
    resolver.lifetime = LIFETIME
    resolver.timeout = LIFETIME / 2
    resolver.cache = None
    return resolver


class Discovery:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.resolver = make_resolver(settings.dns_server)

    async def address(self, name: str) -> str:
        """The first A record of `name`; ManagerUnavailable-style errors are the caller's."""
        answer = await self.resolver.resolve(name, "A", search=False)
        return str(answer[0])

    async def manager_url(self) -> str:
        """Resolve the manager's per-pod name now. Raises ManagerUnavailable if DNS has none."""
        name = self.settings.manager_fqdn
        try:
            addr = await self.address(name)
        except (dns.exception.DNSException, OSError) as exc:
            raise ManagerUnavailable(
                f"cannot resolve the manager {name}: {type(exc).__name__}", name=name
            ) from None
        return f"http://{_bracket(addr)}:{self.settings.port}"

    async def peers(self) -> list[Peer]:
        """The set's pods from the Service's SRV records, else its A records; [] if neither."""
        try:
            return await self._srv_peers()
        except (dns.exception.DNSException, OSError):
            pass
        try:
            answer = await self.resolver.resolve(self.settings.service_domain, "A", search=False)
        except (dns.exception.DNSException, OSError):
            return []
        return [Peer(str(r), str(r), self.settings.port) for r in answer]

    async def _srv_peers(self) -> list[Peer]:
        answer = await self.resolver.resolve(self.settings.srv_name, "SRV", search=False)
        peers = []
        for record in answer:
            target = str(record.target).rstrip(".")
            try:
                host = await self.address(target)
            except (dns.exception.DNSException, OSError):
                continue
            peers.append(Peer(target.split(".")[0], host, int(record.port)))
        return sorted(peers, key=lambda p: p.name)
