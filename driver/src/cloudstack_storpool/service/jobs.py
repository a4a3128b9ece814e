"""Background jobs for operations that may wait on a KVM host's copy.

A template fill or a snapshot backup can take minutes; holding an HTTP request open that long
would tie the management server's adapter to one connection and lose the answer on any
network hiccup. Such operations answer 202 with a job, polled with `GET /v1/jobs/{id}`.

Jobs live in the memory of the process that started them: a job id is valid only on that
process. That is enough because the driver itself is idempotent (deterministic names, tags):
after a restart, or against another service process, the caller retries the same request with
the same idempotency key and the driver converges on the same objects.

The idempotency rules are the shared ones (cloudstack_storpool/jobs.py); this module adds the
service's own: stricter key validation, errors mapped by the HTTP layer, a graceful stop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from cloudstack_storpool.errors import Conflict, ValidationError
from cloudstack_storpool.jobs import (
    ACTIVE,
    IDEMPOTENCY_FIELD,
    JOB_ID_PATTERN,
    MAX_KEY,
    JobManagerBase,
    KeyReused,
    fingerprint,
)
from cloudstack_storpool.jobs import Job as _Job

__all__ = ["ACTIVE", "IDEMPOTENCY_FIELD", "JOB_ID_PATTERN", "MAX_KEY", "ErrorMapper", "Job", "JobManager", "KeyReused",
           "Runner", "check_key", "fingerprint"]


@dataclass(kw_only=True)
class Job(_Job):
    """`progress` is the percent done of the agent copy the job waits for (None when it copies nothing)."""

    NAME_FIELD: ClassVar[str] = "operation"


def check_key(key: Any) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > MAX_KEY or not key.isprintable():
        raise ValidationError("idempotency_key", f"must be a non-empty printable string of at most {MAX_KEY} characters")
    return key


Runner = Callable[[Job], Any]
"""Runs the operation and returns its JSON result; raises on failure. May set progress as it goes."""
ErrorMapper = Callable[[BaseException, str], dict[str, Any]]
"""Turns an exception into the wire error object (the same mapping the synchronous path uses)."""


class JobManager(JobManagerBase[Job]):
    def __init__(self, error_json: ErrorMapper, *, max_running: int = 8, retention: float = 3600.0) -> None:
        super().__init__(retention=retention)
        self._error_json = error_json
        # Each running job may hold an agent copy; the hosts, not this process, are the limit,
        # but an unbounded number of threads waiting on them helps nobody.
        self._slots = threading.BoundedSemaphore(max_running)
        self._closing = threading.Event()

    def submit(self, operation: str, args_json: Any, key: str | None, run: Runner,
               subject: str | None = None) -> tuple[Job, bool]:
        """Start (or find) a job; returns (job, created)."""
        key = check_key(key)
        fp = fingerprint(operation, args_json)

        def make(job_id: str) -> Job:
            if self._closing.is_set():
                raise Conflict("the service is shutting down")
            return Job(id=job_id, name=operation, key=key, fingerprint=fp, subject=subject)

        job, created = self._admit(key, fp, make)
        if created:
            self._start(job, lambda: run(job), self._slots)
        return job, created

    def _failed(self, job: Job, exc: BaseException) -> None:
        job.error = self._error_json(exc, f"job {job.id} ({job.name})")
        job.state = "failed"

    def wait_all(self, timeout: float) -> bool:
        """Refuse new jobs and wait for the running ones (graceful stop); True if all finished."""
        self._closing.set()
        deadline = time.monotonic() + timeout
        for job in self.list():
            if not job.done.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True
