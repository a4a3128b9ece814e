"""Background jobs for operations that may wait on a KVM host's copy.

A template fill or a snapshot backup can take minutes; holding an HTTP request open that long
would tie the management server's adapter to one connection and lose the answer on any
network hiccup. Such operations answer 202 with a job, polled with `GET /v1/jobs/{id}`.

Jobs live in the memory of the process that started them: a job id is valid only on that
process. That is enough because the driver itself is idempotent (deterministic names, tags):
after a restart, or against another service process, the caller retries the same request with
the same idempotency key and the driver converges on the same objects.

Idempotency keys: a key already known with the same request returns the existing job while it
is queued, running or has succeeded; after a failure the same key starts afresh (a retry after
a failure must really retry). A known key with a different request is a Conflict.
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

from cloudstack_storpool.errors import Conflict, ValidationError

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
IDEMPOTENCY_FIELD = "idempotency_key"
MAX_KEY = 200
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"


@dataclass
class Job:
    id: str
    operation: str
    key: str | None
    fingerprint: str = field(repr=False)
    state: str = "queued"
    progress: float | None = None
    """Percent done of the agent copy the job is waiting for (None when it copies nothing)."""
    result: Any = None
    error: dict[str, Any] | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "operation": self.operation,
            "idempotency_key": self.key,
            "state": self.state,
            "progress": self.progress,
            "result": self.result,
            "error": self.error,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }


def fingerprint(operation: str, args: Any) -> str:
    return hashlib.sha256(json.dumps([operation, args], sort_keys=True, default=str).encode()).hexdigest()


def check_key(key: Any) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > MAX_KEY or not key.isprintable():
        raise ValidationError("idempotency_key", f"must be a non-empty printable string of at most {MAX_KEY} characters")
    return key


class KeyReused(Conflict):
    """An idempotency key sent again with a different request: a client bug, never retried."""

    field = IDEMPOTENCY_FIELD


Runner = Callable[["Job"], Any]
"""Does the job's work; may set `job.progress` as it goes."""
"""Runs the operation and returns its JSON result; raises on failure."""
ErrorMapper = Callable[[BaseException, str], dict[str, Any]]
"""Turns an exception into the wire error object (the same mapping the synchronous path uses)."""


class JobManager:
    def __init__(self, error_json: ErrorMapper, *, max_running: int = 8, retention: float = 3600.0) -> None:
        self._error_json = error_json
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._by_key: dict[str, str] = {}
        # Each running job may hold an agent copy; the hosts, not this process, are the limit,
        # but an unbounded number of threads waiting on them helps nobody.
        self._slots = threading.BoundedSemaphore(max_running)
        self._retention = retention
        self._closing = threading.Event()

    def submit(self, operation: str, args_json: Any, key: str | None, run: Runner) -> tuple[Job, bool]:
        """Start (or find) a job; returns (job, created)."""
        key = check_key(key)
        fp = fingerprint(operation, args_json)
        with self._lock:
            self._expire()
            if key is not None and key in self._by_key:
                old = self._jobs.get(self._by_key[key])
                if old is not None:
                    if old.fingerprint != fp:
                        raise KeyReused(f"idempotency_key was already used for a different request (job {old.id})")
                    if old.state in (*ACTIVE, "succeeded"):
                        return old, False
            if self._closing.is_set():
                raise Conflict("the service is shutting down")
            job = Job(id=uuid.uuid4().hex, operation=operation, key=key, fingerprint=fp)
            self._jobs[job.id] = job
            if key is not None:
                self._by_key[key] = job.id
        thread = threading.Thread(target=self._run, args=(job, run), name=f"job-{operation}-{job.id[:8]}", daemon=True)
        thread.start()
        return job, True

    def _run(self, job: Job, run: Runner) -> None:
        try:
            with self._slots:
                job.started = time.time()
                job.state = "running"
                job.result = run(job)
                job.state = "succeeded"
        except BaseException as exc:
            job.error = self._error_json(exc, f"job {job.id} ({job.operation})")
            job.state = "failed"
        finally:
            job.finished = time.time()
            job.done.set()

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[Job]:
        with self._lock:
            self._expire()
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def wait_all(self, timeout: float) -> bool:
        """Refuse new jobs and wait for the running ones (graceful stop); True if all finished."""
        self._closing.set()
        deadline = time.monotonic() + timeout
        for job in self.list():
            if not job.done.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def _expire(self) -> None:
        limit = time.time() - self._retention
        for jid, job in list(self._jobs.items()):
            if job.finished is not None and job.finished < limit:
                del self._jobs[jid]
                if job.key is not None and self._by_key.get(job.key) == jid:
                    del self._by_key[job.key]
