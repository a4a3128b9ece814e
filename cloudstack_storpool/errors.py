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


class SpTransient(StorPoolError):
    """Retrying later may succeed: StorPool said so, or the connection failed."""

    code = "transient"


class SpUnreachable(SpTransient):
    """No answer at all from the API (refused, reset, timeout). Never read as "object absent"."""

    code = "unreachable"


class CloudStackError(ProjectError):
    """An error answered by the CloudStack API; `errortext` is CloudStack's own message."""

    code = "cloudstack"

    def __init__(self, command: str, errortext: str, *, errorcode: int | None = None) -> None:
        super().__init__(f"CloudStack {command} failed ({errorcode}): {errortext}")
        self.command = command
        self.errortext = errortext
        self.errorcode = errorcode


class AgentError(ProjectError):
    """A KVM host agent refused or failed a command; the message is the agent's."""

    code = "agent"
