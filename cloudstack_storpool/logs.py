"""Log lines an operator can search: which job, which CloudStack object, and never a secret.

Every line logged while an operation runs carries its job id (a service or agent job; a
`req-...` id for a synchronous request; `<task>-<n>` for a periodic run) and the CloudStack uuid it
concerns, taken from context variables set once where the operation starts, so no function in
between passes them along. Threads do not inherit context variables: each job thread sets its
own (`context`) when it starts.

Two formats for the long-running commands (`serve`, `agent serve`, `heartbeat run`):
`--log-format text` (default; `[job=... uuid=...]` after the logger name) and `--log-format json`
(one object a line: `ts`, `level`, `logger`, `message`, `job`, `uuid`, `exc`).

Secrets registered with `register_secret` (the service, agent and StorPool tokens, the CloudStack
secret) are masked in the final text of every line, tracebacks included, whatever formatted them.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar, Token
from typing import Any

JOB: ContextVar[str | None] = ContextVar("cssp_job", default=None)
SUBJECT: ContextVar[str | None] = ContextVar("cssp_subject", default=None)
FORMATS = ("text", "json")

SUBJECT_KEYS = ("volume_uuid", "snapshot_uuid", "vm_snapshot_uuid", "template_uuid", "vm_uuid", "vm_id", "host_id",
                "uuid", "pool")
"""Where an operation's arguments name the CloudStack object it concerns, most specific first."""

class Redactor:
    """Masks known secrets in text that leaves the process (log lines, the service's answers).
    Values shorter than 4 characters are ignored: masking them would mask letters of ordinary
    words."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        """Longest first, so a secret containing another is masked whole; replaced, never
        mutated, so masking reads it without the lock."""
        self.add(secrets)

    def add(self, secrets: Iterable[str | None]) -> None:
        with self._lock:
            self._secrets = tuple(sorted({*self._secrets, *(s for s in secrets if s and len(s) >= 4)},
                                         key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, "***")
        return text


_PROCESS = Redactor()
"""Every secret this process has seen: masked in every log line."""


def register_secret(*secrets: str | None) -> None:
    """Mask these in every log line from now on."""
    _PROCESS.add(secrets)


def redact(text: str) -> str:
    return _PROCESS(text)


def subject_of(args: Mapping[str, Any] | None) -> str | None:
    """The CloudStack uuid an operation's arguments are about (None when they name none)."""
    if not isinstance(args, Mapping):
        return None
    for key in SUBJECT_KEYS:
        value = args.get(key)
        if isinstance(value, str) and value:
            return value
    return None


class context:  # lower case: used as `with logs.context(...)`, like a function
    """Lines logged inside carry `job` and `subject` (each kept from the outer context when
    None). A class rather than a generator context manager: it wraps every request."""

    __slots__ = ("_job", "_job_token", "_subject", "_subject_token")

    def __init__(self, job: str | None = None, subject: str | None = None) -> None:
        self._job, self._subject = job, subject
        self._job_token: Token[str | None] | None = None
        self._subject_token: Token[str | None] | None = None

    def __enter__(self) -> None:
        if self._job is not None:
            self._job_token = JOB.set(self._job)
        if self._subject is not None:
            self._subject_token = SUBJECT.set(self._subject)

    def __exit__(self, *_exc: object) -> None:
        if self._subject_token is not None:
            SUBJECT.reset(self._subject_token)
        if self._job_token is not None:
            JOB.reset(self._job_token)


SUBJECT_HEADER = "X-CloudStack-Uuid"
CALLER_HEADER = "X-Request-Id"
_HEADER_VALUE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def outgoing_headers() -> dict[str, str]:
    """What the driver tells an agent about the operation a request belongs to, so that the
    agent's lines carry the same CloudStack uuid and name the caller's job."""
    out = {}
    if SUBJECT.get():
        out[SUBJECT_HEADER] = str(SUBJECT.get())
    if JOB.get():
        out[CALLER_HEADER] = str(JOB.get())
    return out


def incoming_header(value: str | None) -> str | None:
    """A correlation header's value if it is a plain id (anything else is ignored, never logged)."""
    return value if value is not None and _HEADER_VALUE.match(value) else None


class ContextFilter(logging.Filter):
    """Puts the current job and subject on every record (`record.job`, `record.uuid`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job = JOB.get()
        record.uuid = SUBJECT.get()
        return True


class TextFormatter(logging.Formatter):
    _second: tuple[int, str] = (-1, "")

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(where)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # strftime once a second, not for every line (the service logs every request).
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime(self.default_time_format, self.converter(second)))
        return f"{cached[1]},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        job, uuid = getattr(record, "job", None), getattr(record, "uuid", None)
        parts = [f"job={job}"] if job else []
        if uuid:
            parts.append(f"uuid={uuid}")
        record.where = f" [{' '.join(parts)}]" if parts else ""
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "job": getattr(record, "job", None),
            "uuid": getattr(record, "uuid", None),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str))


def handler(fmt: str, stream: Any = None) -> logging.Handler:
    """A stream handler in `fmt` with the context filter (tests attach one to a buffer)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    h = logging.StreamHandler(stream)
    h.addFilter(ContextFilter())
    h.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    return h


def setup(verbose: bool, fmt: str = "text", secrets: Iterable[str | None] = ()) -> None:
    """Configure the root logger of a long-running command."""
    register_secret(*secrets)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler(fmt))
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Neither format prints the caller's file and line, thread or process, so records need not
    # collect them: a stack walk and three look-ups less on every line, and a service logs two
    # lines per request (the logging docs' "Optimization" section names these switches).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
