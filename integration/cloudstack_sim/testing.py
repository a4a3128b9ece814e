"""Start the CloudStack simulator in-process for tests, demos and benchmarks."""

from __future__ import annotations

import errno
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudstack_storpool.cloudstack.client import CloudStackClient
from integration.cloudstack_sim.model import CloudStackModel
from integration.cloudstack_sim.server import SimHTTPServer, make_server

DEFAULT_KEY = "sim-admin-key"


@dataclass
class SimHandle:
    endpoint: str
    key: str
    secret: str = field(repr=False)
    model: CloudStackModel
    server: SimHTTPServer = field(repr=False)

    def client(self, **kwargs: Any) -> CloudStackClient:
        """A facade client for this simulator; async jobs are polled quickly (tests wait less)."""
        kwargs.setdefault("poll_interval", 0.02)
        kwargs.setdefault("job_timeout", 10.0)
        return CloudStackClient(self.endpoint, self.key, self.secret, **kwargs)


API_PORT = 8080
"""The port a CloudStack management server serves its API on (client.api.port's default). A client
that builds its own URL to it uses this port: Marvin's user API clients do."""


@contextmanager
def _serving(server: SimHTTPServer) -> Iterator[SimHTTPServer]:
    # A short poll interval: shutdown() waits up to one interval, and tests start many simulators.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="cloudstack-sim",
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def serve_api_port(handle: SimHandle, *, port: int = API_PORT, tries: int = 20) -> Iterator[str]:
    """The same simulator also at CloudStack's API port, on a loopback address of its own
    (127.N.255.254), so that stacks side by side each have one; yields its endpoint."""
    for _ in range(tries):
        host = f"127.{secrets.randbelow(200) + 20}.255.254"
        try:
            server = make_server(handle.model, {handle.key: handle.secret}, host=host, port=port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        with _serving(server):
            yield server.endpoint
        return
    raise OSError(errno.EADDRINUSE, f"no free loopback address for port {port} after {tries} tries")


@contextmanager
def run_simulator(
    *,
    state: Path | None = None,
    key: str = DEFAULT_KEY,
    secret: str | None = None,
    seed: bool = True,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[SimHandle]:
    """Serve a simulator from a background thread until the block ends.

    With `state`, the world is loaded from (and saved to) that file; a fresh file is seeded.
    Without a secret a random one is made, so no fixed credential ends up in test logs.
    """
    model = CloudStackModel(state_path=state)
    if not model.load() and seed:
        model.seed()
        model.save()
    the_secret = secret if secret is not None else secrets.token_urlsafe(24)
    server = make_server(model, {key: the_secret}, host=host, port=port)
    with _serving(server):
        yield SimHandle(server.endpoint, key, the_secret, model, server)
