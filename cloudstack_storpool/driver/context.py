"""What every driver operation needs, in one object: pools, StorPool connections, CloudStack,
settings and the agents. The driver keeps no state of its own beyond caches of connections, so
any number of driver processes can share one StorPool cluster.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudstack_storpool.errors import ProjectError
from cloudstack_storpool.poolconfig import PoolsFile, PoolSpec, parse_pool_url
from cloudstack_storpool.spconn import StorPoolConn

log = logging.getLogger(__name__)

ALT_ENABLED = "sp.enable.alternative.endpoint"
ALT_ENDPOINT = "sp.alternative.endpoint"

if TYPE_CHECKING:
    from cloudstack_storpool.cloudstack.client import CloudStackClient
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
    wait: Callable[[threading.Event, float], bool] = threading.Event.wait
    """A background thread's pause: up to the seconds given, or until the event is set (True).
    Work that stamps its liveness while it runs (liveness.Heartbeat) keeps time with it, so a
    test drives owner and waiter on one fake clock."""
    conn_options: dict[str, Any] = field(default_factory=dict)
    progress: Callable[[float], None] | None = None
    """Where agent copies report their percentage (a service job, a CLI progress bar)."""
    _conns: dict[tuple[str, int, str], StorPoolConn] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_config(cls, pools_file: str | Path, agent_token: str, *, region: str | None = None,
                    settings_ttl: float | None = None, settings_file: str | Path | None = None,
                    agent_ca: str | None = None) -> DriverContext:
        """The context of a deployed driver: the pools file, CloudStack credentials as the `cs`
        client reads them (`cloudstack.ini` / `CLOUDSTACK_*`), the project's settings file, agents
        on `storpool.agent.port` unless a host says otherwise, verified against `agent_ca` (else
        $CLOUDSTACK_STORPOOL_AGENT_CA; $CLOUDSTACK_STORPOOL_AGENT_INSECURE_HTTP=1 allows plain HTTP
        to agents off loopback). CloudStack values are cached for `settings_ttl` seconds (default:
        the file's `storpool.settings.cache.seconds`). Shared by `serve` and the operator commands."""
        import os

        from cloudstack_storpool.agent.tls import AGENT_CA_ENV, AGENT_INSECURE_ENV
        from cloudstack_storpool.cloudstack.client import CloudStackClient
        from cloudstack_storpool.driver.agents import AgentDirectory
        from cloudstack_storpool.poolconfig import load_pools
        from cloudstack_storpool.settings.localfile import SettingsFile
        from cloudstack_storpool.settings.store import Settings

        pools = load_pools(pools_file)
        local = SettingsFile(settings_file)
        ttl = settings_ttl if settings_ttl is not None else float(local.get("storpool.settings.cache.seconds"))
        cloudstack = CloudStackClient.from_config(region)
        settings = Settings(cloudstack, file=local, ttl=ttl)
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
        """One connection per API endpoint and token, shared by all pools on that cluster.

        When the endpoint does not answer, the connection moves to the pool's alternative
        endpoint if `sp.enable.alternative.endpoint` is true for it (read at that moment)."""
        spec = self.pool(pool) if isinstance(pool, str) else pool
        key = (spec.host, spec.port, spec.token.reveal())
        with self._lock:
            conn = self._conns.get(key)
            if conn is None:
                conn = self._conns[key] = StorPoolConn.from_pool(
                    spec, alternative=lambda: self.alternative_endpoint(spec), **self.conn_options)
            return conn

    def alternative_endpoint(self, spec: PoolSpec) -> tuple[str, int, str] | None:
        """`sp.alternative.endpoint` of the pool when `sp.enable.alternative.endpoint` is true."""
        if not spec.uuid:
            return None
        try:
            if self.settings.get(ALT_ENABLED, pool=spec.uuid) is not True:
                return None
            url = self.settings.get(ALT_ENDPOINT, pool=spec.uuid)
            alt = parse_pool_url(str(url or ""), ALT_ENDPOINT)
        except ProjectError as exc:
            log.warning("pool %s: no alternative StorPool endpoint (%s)", spec.name or spec.uuid, exc)
            return None
        return alt.host, alt.port, alt.token.reveal()

    def api_calls(self) -> dict[str, int]:
        """StorPool queries sent so far, summed over every connection (benchmarks, tests)."""
        total: dict[str, int] = {}
        for conn in self._conns.values():
            for query, n in conn.calls.items():
                total[query] = total.get(query, 0) + n
        return total
