"""Commands run as jobs, so a copy that takes minutes does not hold an HTTP request open.

A job is started by POST, polled by GET and may be cancelled. Every job has a time limit
(the request's `timeout`, counted from when it starts running). A job submitted with an
idempotency key that is already known returns the existing job instead of starting a copy
twice, which is what makes a driver retry after a lost answer safe; a key whose job failed
or was cancelled starts afresh, so a retry after a failure really retries. Those rules are
shared with the driver service (cloudstack_storpool/jobs.py); cancellation and the copy
limit are the agent's own.

Jobs live in memory: after an agent restart the driver's retry with the same key simply runs
the (idempotent) command again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cloudstack_storpool import logs, metrics
from cloudstack_storpool.agent.commands import parse
from cloudstack_storpool.agent.running import Cancelled, Context, RunControl
from cloudstack_storpool.errors import Conflict, ProjectError, ValidationError
from cloudstack_storpool.jobs import ACTIVE, MAX_KEY, JobManagerBase, fingerprint
from cloudstack_storpool.jobs import Job as _Job
from cloudstack_storpool.typedjson import to_json

log = logging.getLogger(__name__)

__all__ = ["ACTIVE", "Job", "JobManager", "error_json"]


@dataclass(kw_only=True)
class Job(_Job):
    NAME_FIELD: ClassVar[str] = "command"

    progress: float | None = 0.0
    control: RunControl = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.control = RunControl(progress=self.set_progress)

    @property
    def command(self) -> str:
        return self.name


def error_json(exc: BaseException) -> dict[str, Any]:
    """The wire form of an error: a stable code, the message, and the field when known."""
    out: dict[str, Any] = {"code": getattr(exc, "code", "internal"), "message": str(exc)}
    if isinstance(exc, ValidationError):
        out["field"] = exc.field
    if getattr(exc, "applied", None) is False:
        out["applied"] = False  # the command confirms it changed nothing (agent/resize.py)
    if not isinstance(exc, ProjectError):
        out["code"] = "internal"
        out["message"] = f"{type(exc).__name__}: {exc}"
    return out


class JobManager(JobManagerBase[Job]):
    def __init__(self, context_factory: Callable[[], Context], *, max_copies: int = 2,
                 retention: float = 3600.0) -> None:
        super().__init__(retention=retention)
        self._context_factory = context_factory
        # Copies are I/O heavy; a hypervisor should not run more than a few at once.
        self._copy_slots = threading.BoundedSemaphore(max_copies)

    def submit(self, command: str, args: Any, key: str | None = None, *, subject: str | None = None,
               caller: str | None = None) -> tuple[Job, bool]:
        """Validate and start a job; returns (job, created). Raises ValidationError / Conflict."""
        if key is not None and (not isinstance(key, str) or not key or len(key) > MAX_KEY):
            raise ValidationError("idempotency_key", f"must be a non-empty string of at most {MAX_KEY} characters")
        cmd, req = parse(command, args)
        # Fingerprint the parsed request, so spelling a default out or leaving it away is the
        # same request.
        fp = fingerprint(command, to_json(req))
        subject = subject or logs.subject_of(args if isinstance(args, dict) else None)
        job, created = self._admit(key, fp, lambda job_id: Job(id=job_id, name=command, key=key, fingerprint=fp,
                                                               subject=subject))
        if not created:
            return job, False

        def work() -> Any:
            job.control.deadline = time.monotonic() + req.timeout
            log.info("%s started%s", command, f" for {caller}" if caller else "")
            with metrics.operation("agent", command):
                if cmd.long_running:
                    metrics.COPIES_IN_FLIGHT.inc()
                try:
                    result = cmd.run(self._context_factory(), req, job.control)
                finally:
                    if cmd.long_running:
                        metrics.COPIES_IN_FLIGHT.dec()
            if cmd.long_running and isinstance(result.get("virtual_size"), int):
                metrics.COPIED_BYTES.inc(result["virtual_size"])
            job.progress = 100.0
            return result

        self._start(job, work, self._copy_slots if cmd.long_running else None)
        return job, True

    def _key_reused(self, key: str, old: Job) -> Conflict:
        return Conflict(f"idempotency_key {key!r} was used for a different request (job {old.id})")

    def _wait_for(self, job: Job, slot: threading.BoundedSemaphore) -> None:
        # Poll, so a job cancelled while it waits for a copy slot never starts.
        while not slot.acquire(timeout=0.2):
            if job.control.cancel.is_set():
                raise Cancelled("cancelled before it started")

    def _failed(self, job: Job, exc: BaseException) -> None:
        job.error = error_json(exc)
        job.state = "cancelled" if job.control.cancel.is_set() else "failed"
        if job.error["code"] == "internal":
            log.exception("job %s (%s) failed", job.id, job.name)
        else:
            log.warning("job %s (%s) failed: %s", job.id, job.name, job.error["message"])

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
