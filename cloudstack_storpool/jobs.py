"""The job core shared by the KVM agent (agent/jobs.py) and the driver service (service/jobs.py).

Both answer long work with a job that is polled instead of holding an HTTP request open, and
both must make a client's retry after a lost answer safe. So both need the same bookkeeping:
an idempotency key finds the job it started as long as that job is queued, running or has
succeeded (after a failure the same key starts afresh, so a retry really retries); the same
key with a different request is a client bug (KeyReused); finished jobs are forgotten after a
retention time; a semaphore bounds how many run at once. Kept in one place so the two sides
cannot drift apart in these rules. What a job does, how its errors look on the wire and
whether it can be cancelled is each side's own.

Jobs live in memory: a job id is valid only in the process that made it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from cloudstack_storpool import logs
from cloudstack_storpool.errors import Conflict

ACTIVE = ("queued", "running")
IDEMPOTENCY_FIELD = "idempotency_key"
MAX_KEY = 200
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"


@dataclass(kw_only=True)
class Job:
    """One job's record; `to_json` is its wire form (GET /v1/jobs/{id})."""

    NAME_FIELD: ClassVar[str]
    """The wire name of `name` ("command" on the agent, "operation" on the service)."""

    id: str
    name: str
    key: str | None
    fingerprint: str = field(repr=False)
    state: str = "queued"
    progress: float | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    subject: str | None = field(default=None, repr=False)
    """The CloudStack uuid the job concerns: with its id, on every log line it writes (logs.py)."""

    def set_progress(self, pct: float) -> None:
        """The progress callback handed to the work: the work knows nothing of jobs."""
        self.progress = pct

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            self.NAME_FIELD: self.name,
            "idempotency_key": self.key,
            "state": self.state,
            "progress": None if self.progress is None else round(self.progress, 2),
            "result": self.result,
            "error": self.error,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }


def fingerprint(name: str, args: Any) -> str:
    """What makes two submissions "the same request" for an idempotency key."""
    return hashlib.sha256(json.dumps([name, args], sort_keys=True, default=str).encode()).hexdigest()


class KeyReused(Conflict):
    """An idempotency key sent again with a different request: a client bug, never retried."""

    field = IDEMPOTENCY_FIELD


J = TypeVar("J", bound=Job)


class JobManagerBase(ABC, Generic[J]):
    """Keeps the jobs of one process and runs each on its own thread."""

    def __init__(self, *, retention: float) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, J] = {}
        self._by_key: dict[str, str] = {}
        self._retention = retention

    def _admit(self, key: str | None, fp: str, make: Callable[[str], J]) -> tuple[J, bool]:
        """The job `key` already started for this request, else a new one from `make(job_id)`;
        returns (job, created). `make` runs under the lock after the key lookup, so it may still
        refuse a new job by raising while known keys keep finding their jobs."""
        with self._lock:
            self._expire()
            if key is not None and key in self._by_key:
                old = self._jobs.get(self._by_key[key])
                if old is not None:
                    if old.fingerprint != fp:
                        raise self._key_reused(key, old)
                    if old.state in (*ACTIVE, "succeeded"):
                        return old, False
            job = make(uuid.uuid4().hex)
            self._jobs[job.id] = job
            if key is not None:
                self._by_key[key] = job.id
        return job, True

    def _key_reused(self, key: str, old: J) -> Conflict:
        return KeyReused(f"idempotency_key was already used for a different request (job {old.id})")

    def _start(self, job: J, work: Callable[[], Any], slot: threading.BoundedSemaphore | None) -> None:
        """Run `work` as `job` on a new thread, holding `slot` (if any) while it runs."""
        thread = threading.Thread(target=self._run, args=(job, work, slot), name=f"job-{job.name}-{job.id[:8]}",
                                  daemon=True)
        thread.start()

    def _run(self, job: J, work: Callable[[], Any], slot: threading.BoundedSemaphore | None) -> None:
        with logs.context(job.id, job.subject):
            self._run_in_context(job, work, slot)

    def _run_in_context(self, job: J, work: Callable[[], Any], slot: threading.BoundedSemaphore | None) -> None:
        try:
            if slot is not None:
                self._wait_for(job, slot)
            try:
                job.started = time.time()
                job.state = "running"
                job.result = work()
                job.state = "succeeded"
            finally:
                if slot is not None:
                    slot.release()
        except BaseException as exc:
            self._failed(job, exc)
        finally:
            job.finished = time.time()
            job.done.set()

    def _wait_for(self, job: J, slot: threading.BoundedSemaphore) -> None:
        """Take `slot` for `job`; a side whose queued jobs can be cancelled raises instead."""
        slot.acquire()

    @abstractmethod
    def _failed(self, job: J, exc: BaseException) -> None:
        """Set `job.error` (the side's wire form of `exc`), then `job.state`."""

    def get(self, job_id: str) -> J | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[J]:
        with self._lock:
            self._expire()
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def _expire(self) -> None:
        limit = time.time() - self._retention
        for jid, job in list(self._jobs.items()):
            if job.finished is not None and job.finished < limit:
                del self._jobs[jid]
                if job.key is not None and self._by_key.get(job.key) == jid:
                    del self._by_key[job.key]
