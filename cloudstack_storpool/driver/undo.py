"""Undoing what a failed operation made, and reporting the failure and the undo together.

Every multi-step operation (a snapshot and its backup, a volume and the copy into it, a cache
and its secondary copy) removes what it made when a later step fails. The caller must learn
both why the step failed and whether the cleanup worked: a cleanup that fails too is reported
in the same error, never raised over the original cause.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cloudstack_storpool.errors import (
    AgentError,
    CloudStackError,
    CloudStackNoAnswer,
    Conflict,
    NotFound,
    ProjectError,
    StorPoolError,
    ValidationError,
)

log = logging.getLogger(__name__)


def undo_and_fail(failure: str, cause: BaseException, undone: str, undo: Callable[[], object]) -> ProjectError:
    """Run `undo` after step `failure` failed with `cause`, and build the error to raise.

    The error is of the same kind as the cause (an agent error stays an AgentError, a StorPool
    error keeps its name) and says what failed, why, and whether the undo worked (`undone`
    describes it when it did).
    """
    try:
        undo()
        outcome = undone
    except Exception as exc:  # reported together with the original error
        log.error("%s, and undoing it failed: %s", failure, exc)
        outcome = f"undoing it failed too, so it is left behind: {exc}"
    text = f"{failure}: {cause}; {outcome}"
    if isinstance(cause, StorPoolError):
        return type(cause)(cause.name, text, status=cause.status, query=cause.query)
    if isinstance(cause, ValidationError):
        return ValidationError(cause.field, text)
    if isinstance(cause, CloudStackError):
        return CloudStackError(cause.command, text, errorcode=cause.errorcode)
    if isinstance(cause, CloudStackNoAnswer):  # still "no answer": the caller may retry
        return type(cause)(cause.command, text)
    if isinstance(cause, AgentError):
        err = AgentError(text)
        err.code = cause.code  # "lost", "unreachable", ...: what the caller may do next depends on it
        return err
    if isinstance(cause, (NotFound, Conflict)):
        return type(cause)(text)
    return ProjectError(text)
