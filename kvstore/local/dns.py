"""A DNS responder for a StatefulSet on one machine: what the cluster DNS answers for a headless
Service, built with dnspython and served over UDP and TCP on 127.0.0.1.

For the Service `kv` in namespace `default` and the domain `cluster.local` it answers:

- `kv-N.kv.default.svc.cluster.local`: A, the pod's address;
- `kv.default.svc.cluster.local`: A, every pod, ready or not (publishNotReadyAddresses);
- `_http._tcp.kv.default.svc.cluster.local`: SRV, one per pod (priority 0, equal weights, the
  shared port, target the pod's name), with the pods' A records in the additional section;
- NXDOMAIN for any other name under `svc.cluster.local`, REFUSED outside it.

`RecordTable` is thread-safe: a supervisor thread may change it while the server answers.
`DNSServer` runs in the caller's event loop; `BackgroundDNSServer` runs one in its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading
from dataclasses import dataclass
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

log = logging.getLogger(__name__)

TTL = 1
_UDP_MAX = 512


@dataclass(frozen=True)
class Answer:
    """What the table says about one question."""

    rcode: dns.rcode.Rcode
    answer: list[dns.rrset.RRset]
    additional: list[dns.rrset.RRset]
    authority: list[dns.rrset.RRset]


class RecordTable:
    """The pods of one StatefulSet and their addresses; every method is thread-safe."""

    def __init__(
        self,
        service: str = "kv",
        namespace: str = "default",
        cluster_domain: str = "cluster.local",
        port: int = 8080,
        port_name: str = "http",
    ) -> None:
        self.service = service
        self.namespace = namespace
        self.cluster_domain = cluster_domain
        self.port = port
        self.zone = dns.name.from_text(f"svc.{cluster_domain}")
        self.service_name = dns.name.from_text(f"{service}.{namespace}.svc.{cluster_domain}")
        self.srv_name = dns.name.from_text(f"_{port_name}._tcp.{self.service_name}")
        self._pods: dict[str, str] = {}
        self._lock = threading.Lock()

    def pod_fqdn(self, pod: str) -> str:
        """`kv-1` -> `kv-1.kv.default.svc.cluster.local`."""
        return f"{pod}.{self.service_name.to_text(omit_final_dot=True)}"

    def set_pod(self, pod: str, address: str) -> None:
        """Publish (or move) a pod's A record."""
        with self._lock:
            self._pods[pod] = address

    def remove_pod(self, pod: str) -> None:
        """Withdraw a pod's records: its name answers NXDOMAIN until it is set again."""
        with self._lock:
            self._pods.pop(pod, None)

    def pods(self) -> dict[str, str]:
        """A copy of the current pod -> address map."""
        with self._lock:
            return dict(self._pods)

    def _pod_name(self, pod: str) -> dns.name.Name:
        return dns.name.Name((pod.encode(), *self.service_name.labels))

    def _a(self, name: dns.name.Name, addresses: list[str]) -> dns.rrset.RRset:
        return dns.rrset.from_text_list(name, TTL, "IN", "A", addresses)

    def _soa(self) -> dns.rrset.RRset:
        soa = f"ns.dns.{self.zone} hostmaster.{self.zone} 1 7200 1800 86400 {TTL}"
        return dns.rrset.from_text(self.zone, TTL, "IN", "SOA", soa)

    def _srv(self, pods: dict[str, str]) -> tuple[list[dns.rrset.RRset], list[dns.rrset.RRset]]:
        if not pods:
            return [], []
        weight = max(1, 100 // len(pods))
        lines = [f"0 {weight} {self.port} {self._pod_name(p)}" for p in sorted(pods)]
        srv = dns.rrset.from_text_list(self.srv_name, TTL, "IN", "SRV", lines)
        extra = [self._a(self._pod_name(p), [pods[p]]) for p in sorted(pods)]
        return [srv], extra

    def lookup(self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType) -> Answer:
        """Answer one question the way the cluster DNS would."""
        if not qname.is_subdomain(self.zone):
            return Answer(dns.rcode.REFUSED, [], [], [])
        pods = self.pods()
        by_name = {self._pod_name(p): a for p, a in pods.items()}
        if qname == self.service_name:
            addrs = sorted(pods.values())
            found = qtype == dns.rdatatype.A and bool(addrs)
            return self._noerror([self._a(qname, addrs)] if found else [], [])
        if qname == self.srv_name:
            answer, extra = self._srv(pods) if qtype == dns.rdatatype.SRV else ([], [])
            return self._noerror(answer, extra)
        if qname in by_name:
            found = qtype == dns.rdatatype.A
            return self._noerror([self._a(qname, [by_name[qname]])] if found else [], [])
        return Answer(dns.rcode.NXDOMAIN, [], [], [self._soa()])

    def _noerror(self, answer: list[dns.rrset.RRset], extra: list[dns.rrset.RRset]) -> Answer:
        authority = [] if answer else [self._soa()]
        return Answer(dns.rcode.NOERROR, answer, extra, authority)


def respond(table: RecordTable, wire: bytes, max_size: int = 65535) -> bytes | None:
    """The wire-format response to one wire-format query; None if it cannot be parsed."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
    question = query.question[0]
    found = table.lookup(question.name, question.rdtype)
    response.set_rcode(found.rcode)
    response.answer.extend(found.answer)
    response.additional.extend(found.additional)
    response.authority.extend(found.authority)
    if query.edns >= 0:
        max_size = min(max_size, max(query.payload, _UDP_MAX))
    try:
        return response.to_wire(max_size=max_size)
    except dns.exception.TooBig:
        truncated = dns.message.make_response(query)
        truncated.flags |= dns.flags.AA | dns.flags.TC
        return truncated.to_wire()


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, table: RecordTable) -> None:
        self.table = table
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = respond(self.table, data, max_size=_UDP_MAX)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class DNSServer:
    """The responder, on one port for both UDP and TCP, running in the current event loop."""

    def __init__(self, table: RecordTable, host: str = "127.0.0.1", port: int = 0) -> None:
        self.table = table
        self.host = host
        self._wanted_port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._clients: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        """The bound port (after `start`)."""
        if self._udp is None:
            raise RuntimeError("the DNS server is not started")
        port: int = self._udp.get_extra_info("sockname")[1]
        return port

    @property
    def address(self) -> str:
        """`host:port`, the value for KV_DNS_SERVER."""
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind UDP and TCP on the same port; with port 0, find one free for both."""
        for _ in range(50):
            await self._bind_udp(self._wanted_port)
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port)
                return
            except OSError:
                self._close_udp()
                if self._wanted_port:
                    raise
        raise OSError("no port free for both UDP and TCP")

    async def _bind_udp(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UDPProtocol(self.table), local_addr=(self.host, port)
        )
        self._udp = transport

    def _close_udp(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    async def stop(self) -> None:
        """Close both listeners and any TCP connection still open."""
        self._close_udp()
        if self._tcp is not None:
            self._tcp.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._tcp.wait_closed()
            self._tcp = None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = respond(self.table, await reader.readexactly(length))
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


class BackgroundDNSServer:
    """A `DNSServer` in a thread with its own event loop, for synchronous owners and tests.

    Use as a context manager, or call `start()` and `stop()`.
    """

    def __init__(self, table: RecordTable, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = DNSServer(table, host, port)
        self.table = table
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return self.server.address

    def start(self, timeout: float = 10.0) -> None:
        """Start the thread and return once the server is bound (or raise why it is not)."""
        self._thread = threading.Thread(target=self._run, name="kv-dns", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the DNS server did not start")
        if self._error is not None:
            self._thread.join()
            raise self._error

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            await self.server.stop()

    def stop(self) -> None:
        """Stop the server and join its thread; safe to call twice."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopped is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join()
        self._thread = None

    def __enter__(self) -> BackgroundDNSServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
