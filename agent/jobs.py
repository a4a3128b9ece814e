"""Commands run as jobs, so a copy that takes minutes does not hold an HTTP request open.

A job is started by POST, polled by GET and may be cancelled. Every job has a time limit
(the request's `timeout`, counted from when it starts running). A job submitted with an
idempotency key that is already known returns the existing job instead of starting a copy
twice, which is what makes a driver retry after a lost answer safe; a key whose job failed
or was cancelled starts afresh, so a retry after a failure really retries.

Jobs live in memory: after an agent restart the driver's retry with the same key simply runs
the (idempotent) command again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.commands import Context, RunControl, parse
from cloudstack_storpool.errors import Conflict, ProjectError, ValidationError

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")


@dataclass
class Job:
    id: str
    command: str
    args: dict[str, Any]
    key: str | None
    fingerprint: str
    state: str = "queued"
    progress: float = 0.0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    control: RunControl = field(default_factory=RunControl, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "command": self.command,
            "idempotency_key": self.key,
            "state": self.state,
            "progress": round(self.progress, 2),
            "result": self.result,
            "error": self.error,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }


def error_json(exc: BaseException) -> dict[str, Any]:
    """The wire form of an error: a stable code, the message, and the field when known."""
    out: dict[str, Any] = {"code": getattr(exc, "code", "internal"), "message": str(exc)}
    if isinstance(exc, ValidationError):
        out["field"] = exc.field
    if not isinstance(exc, ProjectError):
        out["code"] = "internal"
        out["message"] = f"{type(exc).__name__}: {exc}"
    return out


def _fingerprint(command: str, args: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([command, args], sort_keys=True).encode()).hexdigest()


class JobManager:
    def __init__(self, context_factory: Callable[[], Context], *, max_copies: int = 2,
                 retention: float = 3600.0) -> None:
        self._context_factory = context_factory
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._by_key: dict[str, str] = {}
        # Copies are I/O heavy; a hypervisor should not run more than a few at once.
        self._copy_slots = threading.BoundedSemaphore(max_copies)
        self._retention = retention

    def submit(self, command: str, args: Any, key: str | None = None) -> tuple[Job, bool]:
        """Validate and start a job; returns (job, created). Raises ValidationError / Conflict."""
        if key is not None and (not isinstance(key, str) or not key or len(key) > 200):
            raise ValidationError("idempotency_key", "must be a non-empty string of at most 200 characters")
        cmd, req = parse(command, args)
        args_dict = dict(args or {})
        # Fingerprint the parsed request, so spelling a default out or leaving it away is the
        # same request.
        fp = _fingerprint(command, req.to_json())
        with self._lock:
            self._expire()
            if key is not None and key in self._by_key:
                old = self._jobs.get(self._by_key[key])
                if old is not None:
                    if old.fingerprint != fp:
                        raise Conflict(f"idempotency_key {key!r} was used for a different request (job {old.id})")
                    if old.state in (*ACTIVE, "succeeded"):
                        return old, False
            job = Job(id=uuid.uuid4().hex, command=command, args=args_dict, key=key, fingerprint=fp)
            job.control = RunControl(progress=_progress_setter(job))
            self._jobs[job.id] = job
            if key is not None:
                self._by_key[key] = job.id
        thread = threading.Thread(target=self._run, args=(job, cmd.long_running, req.timeout),
                                  name=f"job-{command}-{job.id[:8]}", daemon=True)
        thread.start()
        return job, True

    def _run(self, job: Job, long_running: bool, timeout: float) -> None:
        slot = self._copy_slots if long_running else None
        try:
            if slot is not None:
                while not slot.acquire(timeout=0.2):
                    if job.control.cancel.is_set():
                        raise _CancelledBeforeStart()
            try:
                job.started = time.time()
                job.state = "running"
                job.control.deadline = time.monotonic() + timeout
                ctx = self._context_factory()
                cmd, req = parse(job.command, job.args)
                job.result = cmd.run(ctx, req, job.control)
                job.progress = 100.0
                job.state = "succeeded"
            finally:
                if slot is not None:
                    slot.release()
        except _CancelledBeforeStart:
            job.state = "cancelled"
            job.error = {"code": "cancelled", "message": "cancelled before it started"}
        except BaseException as exc:
            job.error = error_json(exc)
            job.state = "cancelled" if job.control.cancel.is_set() else "failed"
            if job.error["code"] == "internal":
                log.exception("job %s (%s) failed", job.id, job.command)
            else:
                log.warning("job %s (%s) failed: %s", job.id, job.command, job.error["message"])
        finally:
            job.finished = time.time()
            job.done.set()

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def cancel(self, job_id: str) -> Job | None:
        job = self.get(job_id)
        if job is not None and job.state in ACTIVE:
            job.control.cancel.set()
        return job

    def cancel_all(self, wait: float = 10.0) -> None:
        """On shutdown: stop every copy so no qemu-img outlives the agent, and let the jobs
        detach what they attached."""
        jobs = self.list()
        for j in jobs:
            j.control.cancel.set()
        deadline = time.monotonic() + wait
        for j in jobs:
            j.done.wait(max(0.0, deadline - time.monotonic()))

    def _expire(self) -> None:
        cutoff = time.time() - self._retention
        for jid, job in list(self._jobs.items()):
            if job.finished is not None and job.finished < cutoff:
                del self._jobs[jid]
                if job.key is not None and self._by_key.get(job.key) == jid:
                    del self._by_key[job.key]


def _progress_setter(job: Job) -> Callable[[float], None]:
    def set_progress(pct: float) -> None:
        job.progress = pct

    return set_progress


class _CancelledBeforeStart(Exception):
    pass
