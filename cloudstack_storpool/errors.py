"""The project's exceptions.

Callers (the service, the CLI) turn these into structured errors, so each one carries what an
operator needs to act: the field that was wrong, or StorPool's own error name and description.
"""

from __future__ import annotations


class ProjectError(Exception):
    """Base of every error this project raises on purpose."""

    code = "error"


class ValidationError(ProjectError, ValueError):
    """Bad input, refused before anything changed. `field` names what was wrong."""

    code = "invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(ProjectError):
    """A CloudStack or project object that the request named does not exist."""

    code = "not-found"


class Conflict(ProjectError):
    """The request cannot be done in the current state (e.g. pool still holds objects)."""

    code = "conflict"


class StorPoolError(ProjectError):
    """An error answered by the StorPool API, or the API could not be reached.

    `name` and `descr` are StorPool's own (`objectDoesNotExist`, ...), kept verbatim so that
    logs match what `storpool` CLI users know.
    """

    code = "storpool"

    def __init__(self, name: str, descr: str, *, status: int | None = None, query: str = "") -> None:
        where = f" ({query})" if query else ""
        super().__init__(f"StorPool {name}{where}: {descr}")
        self.name = name
        self.descr = descr
        self.status = status
        self.query = query


class SpNotFound(StorPoolError):
    code = "not-found"


class SpExists(StorPoolError):
    code = "exists"


class SpBusy(StorPoolError):
    """The object is busy or in use (e.g. a device still open on a host)."""

    code = "busy"


class SpMalformed(StorPoolError):
    """StorPool answered, but not with what the project's records need: a field missing or of
    another type. A version mismatch or a broken proxy, never to be read as "absent" or "no
    objects". `field` names the part of the answer that was wrong (`data[12].globalId`)."""

    code = "storpool-malformed"

    def __init__(self, field: str, message: str, *, query: str) -> None:
        super().__init__("malformedAnswer", f"{field}: {message}", query=query)
        self.field = field


class SpTransient(StorPoolError):
    """Retrying later may succeed: StorPool said so, or the connection failed."""

    code = "transient"


class SpUnreachable(SpTransient):
    """No answer at all from the API (refused, reset, timeout). Never read as "object absent"."""

    code = "unreachable"


class CloudStackError(ProjectError):
    """CloudStack answered, with an error. `errortext` is CloudStack's own message, verbatim;
    `errorcode` the HTTP-like code (401, 431, 530, ...), `cserrorcode` CloudStack's own number.

    Deliberately not the base of `CloudStackNoAnswer`: "CloudStack said no" is final for the
    request, "CloudStack did not answer" may work on retry; a caller that means both names both.
    """

    code = "cloudstack"

    def __init__(
        self, command: str, errortext: str, *, errorcode: int | None = None, cserrorcode: int | None = None
    ) -> None:
        super().__init__(f"CloudStack {command} failed ({errorcode}): {errortext}")
        self.command = command
        self.errortext = errortext
        self.errorcode = errorcode
        self.cserrorcode = cserrorcode


class CloudStackAuthError(CloudStackError):
    """401: wrong key or secret, a clock too far off (expired signature), or a bad signature."""

    code = "unauthorized"


class CloudStackParamError(CloudStackError):
    """431: CloudStack refused a parameter (unknown id, bad value, unknown setting name)."""

    code = "invalid"


class CloudStackJobError(CloudStackError):
    """An async job ended in failure; `errortext` is the job's own, `jobid` lets an operator
    look the job up in CloudStack."""

    def __init__(self, command: str, errortext: str, *, jobid: str | None = None, **codes: int | None) -> None:
        super().__init__(command, errortext, **codes)
        self.jobid = jobid


class CloudStackNoAnswer(ProjectError):
    """CloudStack gave no answer to act on: retrying later may succeed. Never read as "object
    absent" nor as a refusal."""

    code = "unreachable"

    def __init__(self, command: str, message: str) -> None:
        super().__init__(f"CloudStack {command}: {message}")
        self.command = command
        self.errortext = message


class CloudStackUnreachable(CloudStackNoAnswer):
    """No HTTP answer at all (refused, reset, timed out)."""


class CloudStackTimeout(CloudStackNoAnswer):
    """An async job did not finish in time. It may still finish later: not a failure."""

    code = "timeout"

    def __init__(self, command: str, message: str, *, jobid: str | None = None) -> None:
        super().__init__(command, message)
        self.jobid = jobid


class CloudStackConfigError(ProjectError):
    """No usable CloudStack endpoint/credentials in the environment or cloudstack.ini."""

    code = "config"


class AgentError(ProjectError):
    """A KVM host agent refused or failed a command; the message is the agent's."""

    code = "agent"
