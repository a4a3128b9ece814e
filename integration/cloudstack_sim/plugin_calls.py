"""How the simulated management server reaches the storage plugin: the driver service over HTTP,
with its token. What CloudStack's KVM agent does on a host through the storage adaptor goes
through the service too (its host-side operations pick the host and run the agent there), so
the simulator never dials an agent itself.

Every call is named by the service's operation name (`driver/src/cloudstack_storpool/service/operations.py`)
and recorded in `calls`, so tests and docs/adapter.md can check which
entry points the simulator drives. A failed call raises `PluginError` carrying the service's
message; the storage commands turn it into a failed async job (errorcode 530) as CloudStack
reports a `CloudRuntimeException` from a driver callback.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from cloudstack_storpool.service.operations import TABLE
from integration.cloudstack_sim.model import ApiError

JOB_TIMEOUT = 300.0


class PluginError(ApiError):
    """The plugin answered with an error: CloudStack's job fails with its text (530)."""


@dataclass(frozen=True)
class PluginCall:
    operation: str
    args: dict[str, Any]
    ok: bool


@dataclass
class StoragePlugin:
    """The plugin as the management server knows it: the service URL and its token (never
    logged, never in an error text)."""

    service_url: str
    token: str = field(repr=False)
    calls: list[PluginCall] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _session: requests.Session = field(default_factory=requests.Session, repr=False)

    def _record(self, name: str, args: dict[str, Any], ok: bool) -> None:
        with self._lock:
            self.calls.append(PluginCall(name, dict(args), ok))

    def operations_called(self) -> set[str]:
        with self._lock:
            return {c.operation for c in self.calls}

    def call(self, name: str, /, **args: Any) -> Any:
        """Run one service operation to its end (jobs are polled) and return its result."""
        op = TABLE.by_name.get(name)
        if op is None:
            raise KeyError(f"the service has no operation {name}")
        args = {k: v for k, v in args.items() if v is not None}
        path = op.path
        rest = dict(args)
        for key in list(rest):
            placeholder = "{" + key + "}"
            if placeholder in path:
                path = path.replace(placeholder, quote(str(rest.pop(key)), safe=""))
        headers = {"Authorization": f"Bearer {self.token}"}
        url = self.service_url.rstrip("/") + path
        try:
            if op.accepts_body:
                resp = self._session.request(op.method, url, json=rest, headers=headers, timeout=60)
            else:
                query = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in rest.items()}
                resp = self._session.request(op.method, url, params=query, headers=headers, timeout=60)
            result = self._answer(name, op.job, resp)
        except requests.RequestException as exc:
            self._record(name, args, False)
            raise PluginError(f"storage plugin unreachable during {name}: {type(exc).__name__}") from None
        except PluginError:
            self._record(name, args, False)
            raise
        self._record(name, args, True)
        return result

    def _answer(self, name: str, job: bool, resp: requests.Response) -> Any:
        if resp.status_code == 204:
            return None
        body = resp.json() if resp.content else None
        if resp.status_code >= 400:
            err = (body or {}).get("error", {}) if isinstance(body, dict) else {}
            raise PluginError(f"{name} failed: {err.get('message') or resp.status_code}")
        if job:
            assert isinstance(body, dict)
            return self._wait(name, str(body["id"]))
        return body

    def _wait(self, name: str, job_id: str) -> Any:
        deadline = time.monotonic() + JOB_TIMEOUT
        headers = {"Authorization": f"Bearer {self.token}"}
        while time.monotonic() < deadline:
            job = self._session.get(f"{self.service_url.rstrip('/')}/v1/jobs/{job_id}", headers=headers,
                                    timeout=30).json()
            if job["state"] == "succeeded":
                return job.get("result")
            if job["state"] == "failed":
                err = job.get("error") or {}
                raise PluginError(f"{name} failed: {err.get('message', 'unknown error')}")
            time.sleep(0.05)
        raise PluginError(f"{name} did not finish within {JOB_TIMEOUT:.0f} s")
