"""The embedded DNS responder answers like the cluster DNS does for a headless Service."""

from __future__ import annotations

from collections.abc import Iterator

import dns.asyncquery
import dns.asyncresolver
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from kvstore.local.dns import BackgroundDNSServer, DNSServer, RecordTable

DOMAIN = "kv.default.svc.cluster.local"
SRV = f"_http._tcp.{DOMAIN}"
PODS = {"kv-0": "127.0.0.11", "kv-1": "127.0.0.12", "kv-2": "127.0.0.13"}


@pytest.fixture
def table() -> RecordTable:
    table = RecordTable(port=18080)
    for pod, address in PODS.items():
        table.set_pod(pod, address)
    return table


@pytest.fixture
def server(table: RecordTable) -> Iterator[BackgroundDNSServer]:
    with BackgroundDNSServer(table) as server:
        yield server


def resolver_for(port: int) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.lifetime = 5.0
    return resolver


async def addresses(resolver: dns.asyncresolver.Resolver, name: str, tcp: bool) -> list[str]:
    answer = await resolver.resolve(name, "A", tcp=tcp)
    return sorted(r.to_text() for r in answer)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_pod_a_records(server: BackgroundDNSServer, tcp: bool) -> None:
    resolver = resolver_for(server.port)
    for pod, address in PODS.items():
        assert await addresses(resolver, f"{pod}.{DOMAIN}", tcp) == [address]
    answer = await resolver.resolve(f"kv-1.{DOMAIN}", "A", tcp=tcp)
    assert answer.rrset is not None and answer.rrset.ttl <= 1


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_service_a_records_list_every_pod(server: BackgroundDNSServer, tcp: bool) -> None:
    assert await addresses(resolver_for(server.port), DOMAIN, tcp) == sorted(PODS.values())


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_srv_records(server: BackgroundDNSServer, tcp: bool) -> None:
    answer = await resolver_for(server.port).resolve(SRV, "SRV", tcp=tcp)
    records = sorted(answer, key=lambda r: r.to_text())
    assert [r.target.to_text() for r in records] == [f"{p}.{DOMAIN}." for p in sorted(PODS)]
    assert {r.port for r in records} == {18080}
    assert {r.priority for r in records} == {0}
    assert len({r.weight for r in records}) == 1
    glue = {rrset.name.to_text(): rrset[0].to_text() for rrset in answer.response.additional}
    assert glue == {f"{p}.{DOMAIN}.": a for p, a in PODS.items()}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_unknown_names(server: BackgroundDNSServer, tcp: bool) -> None:
    resolver = resolver_for(server.port)
    for name in (f"kv-7.{DOMAIN}", "other.default.svc.cluster.local"):
        with pytest.raises(dns.resolver.NXDOMAIN):
            await resolver.resolve(name, "A", tcp=tcp)
    with pytest.raises(dns.resolver.NoAnswer):
        await resolver.resolve(f"kv-0.{DOMAIN}", "AAAA", tcp=tcp)


async def test_names_outside_the_zone_are_refused(server: BackgroundDNSServer) -> None:
    query = dns.message.make_query("example.com", "A")
    response = await dns.asyncquery.udp(query, "127.0.0.1", port=server.port, timeout=5)
    assert response.rcode() == dns.rcode.REFUSED


async def test_changed_and_removed_records(server: BackgroundDNSServer, table: RecordTable) -> None:
    resolver = resolver_for(server.port)
    table.set_pod("kv-0", "127.0.0.99")
    assert await addresses(resolver, f"kv-0.{DOMAIN}", tcp=False) == ["127.0.0.99"]
    assert "127.0.0.99" in await addresses(resolver, DOMAIN, tcp=True)
    table.remove_pod("kv-2")
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver.resolve(f"kv-2.{DOMAIN}", "A")
    answer = await resolver.resolve(SRV, "SRV")
    assert len(answer) == 2


async def test_server_in_the_running_loop(table: RecordTable) -> None:
    server = DNSServer(table)
    await server.start()
    try:
        assert server.address == f"127.0.0.1:{server.port}"
        resolver = resolver_for(server.port)
        assert await addresses(resolver, f"kv-2.{DOMAIN}", tcp=False) == ["127.0.0.13"]
        assert await addresses(resolver, f"kv-2.{DOMAIN}", tcp=True) == ["127.0.0.13"]
    finally:
        await server.stop()


def test_background_server_from_sync_code(server: BackgroundDNSServer) -> None:
    query = dns.message.make_query(f"kv-1.{DOMAIN}", "A")
    response = dns.query.tcp(query, "127.0.0.1", port=server.port, timeout=5)
    assert response.answer[0][0].to_text() == "127.0.0.12"
    response = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=5)
    assert response.answer[0][0].to_text() == "127.0.0.12"
