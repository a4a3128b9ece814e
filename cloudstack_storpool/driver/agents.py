"""Which KVM host agent does a piece of work, found through CloudStack.

The driver never keeps a list of hosts: CloudStack knows which hosts exist, which are up, where
each VM runs, and each host's StorPool client id (`SP_OURID` detail) and agent port
(`agent.port` detail, else the `storpool.agent.port` setting). Asking CloudStack each time means
a host added, moved or taken down is seen by the next operation, in every driver process.

Agents are dialled over TLS, verified against `ca_file` (CloudStack's CA when the agents serve
the certificates CloudStack issued them). Without a CA file only loopback agents are dialled
in plain HTTP, unless `insecure_http` says the network is trusted: the token is never sent in
clear to another machine by accident.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, TypeVar

from cloudstack_storpool.agent.client import AgentClient, AgentRequestError
from cloudstack_storpool.agent.tls import AGENT_CA_ENV
from cloudstack_storpool.errors import NotFound
from cloudstack_storpool.httpjson import is_loopback

if TYPE_CHECKING:
    from cloudstack_storpool.cloudstack.client import CloudStackClient
    from cloudstack_storpool.cloudstack.records import Host
    from cloudstack_storpool.poolconfig import PoolSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_AGENT_PORT = 8259


class AgentDirectory:
    """Agents of the KVM hosts CloudStack knows, one cached client per address.

    `token` is the shared agent token; it is handed to the clients and never shown.
    """

    def __init__(
        self,
        cloudstack: CloudStackClient,
        token: str,
        *,
        default_port: int = DEFAULT_AGENT_PORT,
        timeout: float = 30.0,
        poll_interval: float = 0.1,
        ca_file: str | None = None,
        insecure_http: bool = False,
    ) -> None:
        self._cloudstack = cloudstack
        self._token = str.__str__(token)
        self.default_port = default_port
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.ca_file = ca_file
        self.insecure_http = insecure_http
        self._clients: dict[tuple[str, int], AgentClient] = {}
        self._lock = threading.Lock()
        self._next = 0

    def __repr__(self) -> str:
        return f"AgentDirectory({self._cloudstack!r})"

    # ------------------------------------------------------------------ clients

    def for_address(self, ip_address: str, port: int, *, host_id: str | None = None) -> AgentClient:
        """The (cached) client of the agent listening at ip:port; `host_id` (the CloudStack host
        it serves) is named in the client's errors."""
        host = f"[{ip_address}]" if ":" in ip_address else ip_address
        key = (host, port)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = AgentClient(
                    f"{self._scheme(ip_address, port, host_id)}://{host}:{port}", self._token, timeout=self.timeout,
                    poll_interval=self.poll_interval, ca_file=self.ca_file, host_id=host_id,
                )
            elif host_id is not None:
                client.host_id = host_id  # the address now serves this host (a host re-added)
            return client

    def _scheme(self, ip_address: str, port: int, host_id: str | None) -> str:
        if self.ca_file:
            return "https"
        if self.insecure_http or is_loopback(ip_address):
            return "http"
        where = f"agent of host {host_id}" if host_id else "agent"
        raise AgentRequestError(
            f"no CA file to verify its TLS certificate (set ${AGENT_CA_ENV}); plain HTTP is used only for "
            "loopback agents", code="tls", agent=f"{where} ({ip_address}:{port})", host_id=host_id)

    def client(self, host: Host) -> AgentClient:
        """The agent of one CloudStack host (its `agent.port` detail overrides the default port)."""
        return self.for_address(host.ip_address, host.agent_port or self.default_port, host_id=host.id)

    def for_host(self, host_id: str) -> AgentClient:
        """The agent of a host by CloudStack id; NotFound when CloudStack does not know it."""
        host = self._cloudstack.host(host_id)
        if host is None:
            raise NotFound(f"host: CloudStack has no host {host_id}")
        return self.client(host)

    def host_of_vm(self, vm_id: str) -> Host | None:
        """Where commands about a VM's disks go: the host it is on (None for a stopped VM: CloudStack
        tells no last host, and a stopped VM's disks need no host). NotFound for a VM CloudStack
        does not know."""
        vm = self._cloudstack.vm(vm_id)
        if vm is None:
            raise NotFound(f"vm: CloudStack has no VM {vm_id}")
        host_id = vm.placement_host_id
        return self._cloudstack.host(host_id) if host_id else None

    def for_vm(self, vm_id: str) -> AgentClient | None:
        host = self.host_of_vm(vm_id)
        return self.client(host) if host is not None else None

    def hosts_for_pool(self, pool: PoolSpec, clusters: Collection[str] | None = None) -> list[Host]:
        """Up, enabled KVM hosts in the pool's zone; only those of the CloudStack `clusters` when
        given (the hosts that see one StorPool cluster, in a multi-cluster setup). Not filtered
        by a known client id: the agent attaches with its own, and the Java plugin's hosts have
        theirs in `host.parent`, which listHosts does not show.

        The list is rotated on each call so that copies (template fills) spread over hosts
        instead of always landing on the first one.
        """
        hosts = [
            h for h in self._cloudstack.hosts(zone_id=pool.zone or None)
            if h.state == "Up" and (h.resource_state in (None, "Enabled"))
            and (clusters is None or h.cluster_id in clusters)
        ]
        hosts.sort(key=lambda h: h.id)
        if not hosts:
            return hosts
        with self._lock:
            start = self._next % len(hosts)
            self._next += 1
        return hosts[start:] + hosts[:start]

    def _hosts_or_fail(self, pool: PoolSpec, clusters: Collection[str] | None = None) -> list[Host]:
        hosts = self.hosts_for_pool(pool, clusters)
        if not hosts:
            where = f"clusters {', '.join(sorted(clusters))}" if clusters is not None else f"zone {pool.zone or '(any)'}"
            raise NotFound(f"pool: no Up KVM host with a StorPool client id in {where}")
        return hosts

    def for_pool(self, pool: PoolSpec) -> AgentClient:
        """Any agent able to reach the pool (the first of the rotation)."""
        return self.client(self._hosts_or_fail(pool)[0])

    def run_on_pool(self, pool: PoolSpec, work: Callable[[AgentClient], T],
                    clusters: Collection[str] | None = None) -> T:
        """Run `work` on a host of the pool, moving to the next host while agents are unreachable.

        Only "unreachable" moves on: a command the agent ran and failed is the answer, and
        running it elsewhere would hide the failure.
        """
        last: AgentRequestError | None = None
        for host in self._hosts_or_fail(pool, clusters):
            try:
                return work(self.client(host))
            except AgentRequestError as exc:
                if exc.code != "unreachable":
                    raise
                log.warning("agent of host %s unreachable; trying the next host", host.name)
                last = exc
        assert last is not None
        raise last
