"""What went wrong talking to CloudStack, as the project's errors (`errors.py`).

Three kinds, kept apart because callers act differently on each: CloudStack answered with an
error (`CloudStackError` and its 401/431/job-failure kinds: final for this request), CloudStack
did not answer (`CloudStackNoAnswer`: unreachable, or an async job still running when we
stopped waiting; may work later), and a malformed answer (a plain `CloudStackError`). Nothing
raised here contains the secret key or the signed URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cs
import requests

from cloudstack_storpool.cloudstack.fields import opt_int
from cloudstack_storpool.errors import (
    CloudStackAuthError,
    CloudStackError,
    CloudStackJobError,
    CloudStackParamError,
    CloudStackTimeout,
    CloudStackUnreachable,
    ProjectError,
)

NOT_FOUND_MARK = "entity does not exist"
"""Part of the 431 errortext with which the server answers a lookup by an id it does not know."""

_JOB_FAILURE = "Job failure"
_JOB_TIMEOUT = "Timeout waiting for async job result"


def translate(command: str, exc: Exception, endpoint: str) -> ProjectError:
    """The project error for an exception raised by one `cs` call of `command`."""
    if isinstance(exc, cs.CloudStackApiException):
        return _answered(command, exc)
    if isinstance(exc, cs.CloudStackException):
        return _odd_answer(command, exc)
    # str(exc) of a requests error carries the request URL (key and signature): name the endpoint only.
    return CloudStackUnreachable(command, f"cannot reach {endpoint}: {type(exc).__name__}")


TRANSLATED: tuple[type[Exception], ...] = (cs.CloudStackException, requests.RequestException)
"""The exceptions `translate` understands (cs.CloudStackApiException is a CloudStackException)."""


def is_unknown_id(exc: CloudStackParamError, id_param: str) -> bool:
    """Whether a 431 says that the id given as `id_param` names nothing."""
    return NOT_FOUND_MARK in exc.errortext and f"parameter {id_param} " in exc.errortext


def _answered(command: str, exc: cs.CloudStackApiException) -> CloudStackError:
    error: Mapping[str, Any] = exc.error if isinstance(exc.error, Mapping) else {}
    response = getattr(exc, "response", None)
    errorcode = opt_int(error.get("errorcode")) or getattr(response, "status_code", None)
    cserrorcode = opt_int(error.get("cserrorcode"))
    errortext = str(error.get("errortext") or (exc.args[0] if exc.args else "CloudStack error"))
    if exc.args and exc.args[0] == _JOB_FAILURE:
        return CloudStackJobError(command, errortext, jobid=_job_id(response), errorcode=errorcode,
                                  cserrorcode=cserrorcode)
    kind = {401: CloudStackAuthError, 431: CloudStackParamError}.get(errorcode or 0, CloudStackError)
    return kind(command, errortext, errorcode=errorcode, cserrorcode=cserrorcode)


def _job_id(response: Any) -> str | None:
    if response is None:
        return None
    try:
        jobid = response.json().get("queryasyncjobresultresponse", {}).get("jobid")
    except ValueError:
        return None
    return None if jobid is None else str(jobid)


def _odd_answer(command: str, exc: cs.CloudStackException) -> ProjectError:
    args = [str(a) for a in exc.args]
    if args and args[0].startswith(_JOB_TIMEOUT):
        jobid = args[1] if len(args) > 1 else None
        return CloudStackTimeout(command, f"async job {jobid} did not finish in time", jobid=jobid)
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return CloudStackError(command, "; ".join(args) or "unexpected answer", errorcode=status)
