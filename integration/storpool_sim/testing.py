"""Run the emulator inside a test (background thread) and talk to it the way the project does.

    with run_emulator(tmp / "data", tmp / "dev") as sp:
        api = sp.api()                       # storpool.spapi.Api, multiCluster=True
        api.volumeCreate({"name": "v", "size": 1 << 30, "template": "ssd"})
        sp.faults.fail_next("VolumeCreate", error="busy", transient=True)
        assert sp.calls["VolumeCreate"] == 1
"""

from __future__ import annotations

import functools
import http.client
import json
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from storpool import spapi

from cloudstack_storpool.poolconfig import PoolSpec, parse_pool_url
from integration.storpool_sim.faults import FaultInjector
from integration.storpool_sim.model import DEFAULT_TEMPLATES, Model, Template
from integration.storpool_sim.server import Emulator


@dataclass
class EmulatorHandle:
    """A running emulator as seen by a test."""

    emulator: Emulator
    data_dir: Path
    dev_root: Path

    @property
    def host(self) -> str:
        return self.emulator.host

    @property
    def port(self) -> int:
        return self.emulator.port

    @property
    def token(self) -> str:
        return self.emulator.token

    @property
    def model(self) -> Model:
        return self.emulator.model

    @property
    def faults(self) -> FaultInjector:
        return self.emulator.faults

    @property
    def calls(self) -> Counter[str]:
        """Authenticated calls per query name (`VolumeCreate`, ...), including failed ones."""
        return self.emulator.calls

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def pool_url(self, template: str = "ssd") -> str:
        """The CloudStack pool URL form for this emulator."""
        return f"SP_API_HTTP={self.host}:{self.port};SP_AUTH_TOKEN={self.token};SP_TEMPLATE={template}"

    def pool_spec(self, name: str, template: str = "ssd") -> PoolSpec:
        """A driver pool (fresh uuid) over this emulator, as its CloudStack pool URL would configure it."""
        spec = parse_pool_url(self.pool_url(template))
        return PoolSpec(spec.host, spec.port, spec.token, spec.template, uuid=str(uuidlib.uuid4()), name=name)

    def config_env(self, client_id: int | None = None) -> dict[str, str]:
        """`/etc/storpool.conf` keys (as environment variables) pointing at this emulator."""
        env = {"SP_API_HTTP_HOST": self.host, "SP_API_HTTP_PORT": str(self.port), "SP_AUTH_TOKEN": self.token}
        if client_id is not None:
            env["SP_OURID"] = str(client_id)
        return env

    def api(self, *, multi_cluster: bool = True, transient_retries: int = 0, timeout: int = 30) -> Any:
        """Official bindings client; no transient retries by default so faults surface at once."""
        return spapi.Api(self.host, self.port, auth=self.token, multiCluster=multi_cluster,
                         transientRetries=transient_retries, timeout=timeout)

    def raw(self, method: str, path: str, body: Any = None, *, token: str | None = None,
            args: Any = None) -> tuple[int, Any]:
        """One HTTP request as a hand-written client (the Java plugin) sends it: `body` as raw
        JSON, no bindings in between; returns (status, decoded JSON)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        headers = {}
        tok = self.token if token is None else token
        if tok != "":
            headers["Authorization"] = f"Storpool v1:{tok}"
        if args is not None:
            path += "?json=" + quote(json.dumps(args), safe="")
        data = json.dumps(body) if body is not None else None
        try:
            conn.request(method, path, data, headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def strict_api(self, **kwargs: Any) -> StrictApi:
        """Like `api()` but any response the bindings' types reject raises instead of passing."""
        return StrictApi(self.api(**kwargs))

    def device_path(self, client_id: int, global_id: str) -> Path:
        return self.dev_root / str(client_id) / "storpool-byid" / global_id

    def name_path(self, client_id: int, name: str) -> Path:
        return self.dev_root / str(client_id) / "storpool" / name

    def object_file(self, global_id: str) -> Path:
        """The backing file of a volume or snapshot (`globalId`, with or without its `~`)."""
        return self.emulator.dataplane.path(global_id.removeprefix("~"))

    def write_object(self, global_id: str, offset: int, data: bytes) -> None:
        """Write into an object's backing file, as a guest writing its disk would."""
        with open(self.object_file(global_id), "r+b") as f:
            f.seek(offset)
            f.write(data)

    def read_object(self, global_id: str, offset: int, length: int) -> bytes:
        """Read an object's content from its backing file, not through the driver."""
        with open(self.object_file(global_id), "rb") as f:
            f.seek(offset)
            return f.read(length)


class StrictApi:
    """Wraps a bindings `Api` so that validation failures raise.

    The bindings swallow a response that fails their type check and hand back a *partial*
    object (see `spapi._API_METHOD.compile`): a missing field would go unnoticed. Here every
    typed call is made raw and then validated with the very same return type, without the
    partial fallback.
    """

    def __init__(self, api: Any) -> None:
        self._api = api

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        fn = getattr(type(self._api), name, None)
        validate = getattr(fn, "__globals__", {}).get("returns") if callable(fn) else None
        if validate is None:
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            raw = attr(*args, returnRawAPIData=True, **kwargs)
            return validate(raw)

        return call


@contextmanager
def run_emulator(
    data_dir: Path,
    dev_root: Path,
    *,
    token: str = "test-token",  # noqa: S107 - a loopback test emulator's token
    clients: Iterable[int] = (1, 2, 3),
    use_loop: bool | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    templates: Iterable[Template] = DEFAULT_TEMPLATES,
    capacity: int = 1 << 40,
    clock: Callable[[], float] | None = None,
    cluster_name: str = "sim",
    cluster_id: str = "b",
    location_id: str = "lab",
    location_name: str = "lab-location",
) -> Iterator[EmulatorHandle]:
    """Start an emulator on a loopback port; on exit stop it and release its devices."""
    emu = Emulator(Path(data_dir), Path(dev_root), token=token, clients=list(clients), templates=list(templates),
                   capacity=capacity, use_loop=use_loop, host=host, port=port, clock=clock or time.time,
                   cluster_name=cluster_name, cluster_id=cluster_id, location_id=location_id,
                   location_name=location_name)
    emu.start()
    try:
        yield EmulatorHandle(emu, Path(data_dir), Path(dev_root))
    finally:
        emu.stop()
