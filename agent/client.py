"""The driver's side of the agent API: one method per command, each starting a job and
waiting for it, with progress reported to a callback.

Each call carries an idempotency key (generated when the caller gives none) and re-sends the
same key when a POST's answer is lost, so a retry never starts a second copy.

An `https://` agent is verified against `ca_file` (and the address dialled); a certificate
that fails is a "tls" error, never "unreachable", so the work does not move to another host
as if this one were down and the operator sees why.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from cloudstack_storpool import logs
from cloudstack_storpool.errors import AgentError

__all__ = ["AgentClient", "AgentError", "AgentRequestError"]

ProgressFn = Callable[[float], None]


class AgentRequestError(AgentError):
    """The agent refused or failed a command, or could not be reached. `code`/`field` are the
    agent's; `status` is the HTTP status (None when the job itself failed). `agent` names the
    agent (the host's CloudStack id and the address dialled, when the client knows its host):
    the error's text starts with it, so every answer built from it says which host failed;
    `message` is the text without it."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "agent",
                 field: str | None = None, job_id: str | None = None, applied: bool | None = None,
                 agent: str | None = None, host_id: str | None = None) -> None:
        super().__init__(f"{agent}: {message}" if agent else message)
        self.message = message
        self.agent = agent
        self.host_id = host_id
        self.status = status
        self.code = code
        self.field = field
        self.job_id = job_id
        self.applied = applied
        """False when the agent confirmed the command changed nothing; None: not known."""

    def during(self, what: str) -> AgentRequestError:
        """The same failure, its message prefixed with the step it interrupted."""
        return AgentRequestError(f"{what}: {self.message}", status=self.status, code=self.code, field=self.field,
                                 job_id=self.job_id, applied=self.applied, agent=self.agent, host_id=self.host_id)


class AgentClient:
    def __init__(self, base_url: str, token: str, timeout: float = 30.0, *, poll_interval: float = 0.5,
                 post_retries: int = 3, session: requests.Session | None = None, ca_file: str | None = None,
                 host_id: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.host_id = host_id
        """The CloudStack host this agent serves, when known: named in every error."""
        if self.base_url.startswith("https://") and not ca_file:
            raise ValueError("an https agent needs the CA file that signed its certificate")
        self._token = token
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.post_retries = post_retries
        self._session = session or requests.Session()
        # Passed with every request: a session-wide `verify` loses to $REQUESTS_CA_BUNDLE.
        self._verify: str | bool = ca_file or True

    def __repr__(self) -> str:  # never the token
        return f"AgentClient({self.base_url!r})"

    @property
    def name(self) -> str:
        """How errors name this agent: its host's CloudStack id and the address dialled."""
        return f"agent of host {self.host_id} ({self.base_url})" if self.host_id else f"agent {self.base_url}"

    def _error(self, message: str, **kw: Any) -> AgentRequestError:
        return AgentRequestError(message, agent=self.name, host_id=self.host_id, **kw)

    # --- transport -------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        try:
            resp = self._session.request(
                method, self.base_url + path, json=body, timeout=self.timeout, verify=self._verify,
                headers={"Authorization": f"Bearer {self._token}", **logs.outgoing_headers()},
            )
        except requests.exceptions.SSLError as exc:
            reason = exc.args[0] if exc.args else exc
            reason = getattr(reason, "reason", reason)
            raise self._error(f"TLS verification failed: {reason}", code="tls") from exc
        except requests.RequestException as exc:
            raise self._error(f"unreachable: {type(exc).__name__}", code="unreachable",
                              applied=False if _never_connected(exc) else None) from exc
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code >= 400:
            err = (data or {}).get("error") if isinstance(data, dict) else None
            err = err or {}
            raise self._error(
                str(err.get("message") or f"HTTP {resp.status_code}"), status=resp.status_code,
                code=str(err.get("code") or "agent"), field=err.get("field"),
            )
        return resp.status_code, data

    # --- generic ---------------------------------------------------------------------------

    def heartbeat(self) -> dict[str, Any] | None:
        """This host's heartbeat loop status (`None` before its first round)."""
        result: dict[str, Any] | None = self._request("GET", "/v1/heartbeat")[1].get("status")
        return result

    def facts(self) -> dict[str, Any]:
        return dict(self._request("GET", "/v1/facts")[1])

    def start(self, command: str, args: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Start (or find, by idempotency key) a job; returns its JSON.

        A 4xx answer to the submission is the agent refusing it (bad field, unknown command,
        wrong token, key reused): no job was started, so the error says `applied=False`, unless
        an earlier attempt whose answer was lost may have started it. Only the submission: a
        404 while polling a job (an agent restarted without it) proves nothing about its work."""
        key = idempotency_key or uuid.uuid4().hex
        body = {"command": command, "args": args, "idempotency_key": key}
        maybe_sent = False
        for attempt in range(self.post_retries + 1):
            try:
                return dict(self._request("POST", "/v1/jobs", body)[1])
            except AgentRequestError as exc:
                if exc.status is not None and 400 <= exc.status < 500:
                    exc.applied = False
                # Same key: re-sending can only find the job the lost answer was about.
                maybe_sent = maybe_sent or exc.applied is not False
                if exc.code != "unreachable" or attempt == self.post_retries:
                    if maybe_sent:
                        exc.applied = None  # an earlier attempt may have started the job
                    raise
                time.sleep(min(2.0**attempt, 5.0))
        raise AssertionError("unreachable")

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/jobs/{job_id}")[1])

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self._request("DELETE", f"/v1/jobs/{job_id}")[1])

    def wait(self, job_id: str, *, timeout: float | None = None, progress: ProgressFn | None = None) -> dict[str, Any]:
        """Poll until the job ends; returns its result or raises AgentRequestError with the
        agent's message. On our own timeout the job is cancelled, not left running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = -1.0
        misses = 0
        while True:
            try:
                job = self.job(job_id)
                misses = 0
            except AgentRequestError as exc:
                misses += 1
                if exc.code != "unreachable":
                    raise
                if misses > 5:
                    # The job was accepted and may still be running there: its outcome is
                    # unknown, which is not "unreachable" (that would send the work to another
                    # host while this one may still be writing).
                    raise self._error(f"lost contact while job {job_id} ran", code="lost", job_id=job_id) from exc
                time.sleep(self.poll_interval)
                continue
            pct = float(job.get("progress") or 0.0)
            if progress is not None and pct != last:
                last = pct
                progress(pct)
            state = job.get("state")
            if state == "succeeded":
                return dict(job.get("result") or {})
            if state in ("failed", "cancelled"):
                err = job.get("error") or {}
                raise self._error(str(err.get("message") or state), code=str(err.get("code") or state),
                                  field=err.get("field"), job_id=job_id,
                                  applied=False if err.get("applied") is False else None)
            if deadline is not None and time.monotonic() >= deadline:
                with contextlib.suppress(AgentRequestError):
                    self.cancel(job_id)
                raise self._error(f"job {job_id} did not finish within {timeout} s", code="timeout", job_id=job_id)
            time.sleep(self.poll_interval)

    def run(self, command: str, args: dict[str, Any], *, idempotency_key: str | None = None,
            timeout: float | None = None, progress: ProgressFn | None = None) -> dict[str, Any]:
        """Start a job and wait for its result. `timeout` (seconds) is also sent to the agent
        as the job's own time limit, plus a margin for polling on our side."""
        if timeout is not None:
            args = {**args, "timeout": timeout}
        job = self.start(command, args, idempotency_key=idempotency_key)
        wait_for = None if timeout is None else timeout + 30.0
        return self.wait(str(job["id"]), timeout=wait_for, progress=progress)

    # --- one method per command -------------------------------------------------------------

    def copy_template(self, *, store: str, path: str, volume: str, source_format: str | None = None,
                      target_is_zero: bool = True, timeout: float | None = None,
                      idempotency_key: str | None = None, progress: ProgressFn | None = None) -> dict[str, Any]:
        args = {"store": store, "path": path, "volume": volume, "source_format": source_format,
                "target_is_zero": target_is_zero}
        return self.run("copy_template", args, idempotency_key=idempotency_key, timeout=timeout, progress=progress)

    def copy_to_volume(self, *, store: str, path: str, volume: str, source_format: str | None = None,
                       target_is_zero: bool = False, timeout: float | None = None,
                       idempotency_key: str | None = None, progress: ProgressFn | None = None) -> dict[str, Any]:
        args = {"store": store, "path": path, "volume": volume, "source_format": source_format,
                "target_is_zero": target_is_zero}
        return self.run("copy_to_volume", args, idempotency_key=idempotency_key, timeout=timeout, progress=progress)

    def backup_snapshot(self, *, snapshot: str, store: str, path: str, compress: bool = False,
                        timeout: float | None = None, idempotency_key: str | None = None,
                        progress: ProgressFn | None = None) -> dict[str, Any]:
        args = {"snapshot": snapshot, "store": store, "path": path, "compress": compress}
        return self.run("backup_snapshot", args, idempotency_key=idempotency_key, timeout=timeout, progress=progress)

    def copy_volume_out(self, *, volume: str, store: str, path: str, format: str = "qcow2",
                        compress: bool = False, timeout: float | None = None,
                        idempotency_key: str | None = None, progress: ProgressFn | None = None) -> dict[str, Any]:
        args = {"volume": volume, "store": store, "path": path, "format": format, "compress": compress}
        return self.run("copy_volume_out", args, idempotency_key=idempotency_key, timeout=timeout, progress=progress)

    def resize(self, *, volume: str, size: int, vm: str | None = None, timeout: float | None = None,
               idempotency_key: str | None = None) -> dict[str, Any]:
        args = {"volume": volume, "size": size, "vm": vm}
        return self.run("resize", args, idempotency_key=idempotency_key, timeout=timeout)

    def prepare_start(self, *, volumes: list[str], attach: bool = True, timeout: float | None = None,
                      idempotency_key: str | None = None) -> dict[str, Any]:
        args = {"volumes": list(volumes), "attach": attach}
        return self.run("prepare_start", args, idempotency_key=idempotency_key, timeout=timeout)

    def connect(self, *, volume: str, timeout: float | None = None,
                idempotency_key: str | None = None) -> dict[str, Any]:
        return self.run("connect", {"volume": volume}, idempotency_key=idempotency_key, timeout=timeout)

    def disconnect(self, *, volume: str, force: bool = True, timeout: float | None = None,
                   idempotency_key: str | None = None) -> dict[str, Any]:
        args = {"volume": volume, "force": force}
        return self.run("disconnect", args, idempotency_key=idempotency_key, timeout=timeout)

    def encrypt_volume(self, *, volume: str, passphrase: str, source: str | None = None,
                       timeout: float | None = None, idempotency_key: str | None = None,
                       progress: ProgressFn | None = None) -> dict[str, Any]:
        args = {"volume": volume, "passphrase": passphrase, "source": source}
        return self.run("encrypt_volume", args, idempotency_key=idempotency_key, timeout=timeout, progress=progress)

def _never_connected(exc: requests.RequestException) -> bool:
    """No connection was ever made (refused, no route, connect timeout): the agent cannot have
    received the request. A reset or a read timeout after sending proves nothing."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError)
