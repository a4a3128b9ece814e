"""What every driver operation needs, in one object: pools, StorPool connections, CloudStack,
settings and the agents. The driver keeps no state of its own beyond caches of connections, so
any number of driver processes can share one StorPool cluster.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudstack_storpool.poolconfig import PoolsFile, PoolSpec
from cloudstack_storpool.spconn import StorPoolConn

if TYPE_CHECKING:
    from cloudstack_storpool.cloudstack import CloudStackClient
    from cloudstack_storpool.driver.agents import AgentDirectory
    from cloudstack_storpool.settings.store import Settings


@dataclass
class DriverContext:
    pools: PoolsFile
    cloudstack: CloudStackClient
    settings: Settings
    agents: AgentDirectory
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    conn_options: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[float], None] | None = None
    """Where agent copies report their percentage (a service job, a CLI progress bar)."""
    _conns: dict[tuple[str, int, str], StorPoolConn] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_config(cls, pools_file: str | Path, agent_token: str, *, region: str | None = None,
                    settings_ttl: float = 30.0, agent_ca: str | None = None) -> DriverContext:
        """The context of a deployed driver: the pools file, CloudStack credentials as the `cs`
        client reads them (`cloudstack.ini` / `CLOUDSTACK_*`), agents on `storpool.agent.port`
        unless a host says otherwise, verified against `agent_ca` (else $CLOUDSTACK_STORPOOL_AGENT_CA;
        $CLOUDSTACK_STORPOOL_AGENT_INSECURE_HTTP=1 allows plain HTTP to agents off loopback).
        Shared by `serve` and the operator commands."""
        import os

        from cloudstack_storpool.agent.tls import AGENT_CA_ENV, AGENT_INSECURE_ENV
        from cloudstack_storpool.cloudstack import CloudStackClient
        from cloudstack_storpool.driver.agents import AgentDirectory
        from cloudstack_storpool.poolconfig import load_pools
        from cloudstack_storpool.settings.store import Settings

        pools = load_pools(pools_file)
        cloudstack = CloudStackClient.from_config(region)
        settings = Settings(cloudstack, ttl=settings_ttl)
        port = settings.get("storpool.agent.port")
        agents = AgentDirectory(cloudstack, agent_token, default_port=port if isinstance(port, int) else 8259,
                                ca_file=agent_ca or os.environ.get(AGENT_CA_ENV) or None,
                                insecure_http=os.environ.get(AGENT_INSECURE_ENV) == "1")
        return cls(pools=pools, cloudstack=cloudstack, settings=settings, agents=agents)

    def with_progress(self, progress: Callable[[float], None] | None) -> DriverContext:
        """The same context (same connections and caches) reporting copy progress to `progress`."""
        return dataclasses.replace(self, progress=progress)

    def pool(self, key: str) -> PoolSpec:
        """A pool by CloudStack uuid or name; unknown pools are a ValidationError naming `pool`."""
        return self.pools.get(key)

    def conn(self, pool: PoolSpec | str) -> StorPoolConn:
        """One connection per API endpoint and token, shared by all pools on that cluster."""
        spec = self.pool(pool) if isinstance(pool, str) else pool
        key = (spec.host, spec.port, spec.token.reveal())
        with self._lock:
            conn = self._conns.get(key)
            if conn is None:
                conn = self._conns[key] = StorPoolConn.from_pool(spec, **self.conn_options)
            return conn

    def api_calls(self) -> dict[str, int]:
        """StorPool queries sent so far, summed over every connection (benchmarks, tests)."""
        total: dict[str, int] = {}
        for conn in self._conns.values():
            for query, n in conn.calls.items():
                total[query] = total.get(query, 0) + n
        return total
