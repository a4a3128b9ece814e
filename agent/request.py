"""The agent's request machinery: what every command is given (context, run control) and how
its typed request is parsed from JSON and checked, with errors naming the field.

Kept apart from the commands themselves so that command modules (commands.py, disks.py,
luks.py) build on it without importing each other.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from cloudstack_storpool import names
from cloudstack_storpool.agent.attach import SpConn
from cloudstack_storpool.agent.hostconfig import HostConfig
from cloudstack_storpool.errors import ProjectError, ValidationError


class Cancelled(ProjectError):
    code = "cancelled"


class TimedOut(ProjectError):
    code = "timeout"


@dataclass
class RunControl:
    """What a running command is given besides its request: a way to report progress, a
    cancel flag and a deadline (monotonic seconds) that every blocking step honours."""

    progress: Callable[[float], None] = lambda _pct: None
    cancel: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("cancelled")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TimedOut("time limit reached")

    def step_timeout(self, default: float) -> float:
        rem = self.remaining()
        return default if rem is None else max(1.0, min(default, rem))


@dataclass(frozen=True)
class Context:
    host: HostConfig
    conn: SpConn


# --- request parsing -------------------------------------------------------------------------

R = TypeVar("R", bound="Request")


def _field_type(value: Any, kind: str, fname: str) -> Any:
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise ValidationError(fname, "must be a non-empty string")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ValidationError(fname, "must be true or false")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(fname, "must be an integer")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(fname, "must be a positive number")
        try:
            value = float(value)
        except OverflowError:
            raise ValidationError(fname, "must be a positive finite number") from None
        # JSON as Python parses it may carry NaN and Infinity: a time limit must be a number.
        if not math.isfinite(value) or value <= 0:
            raise ValidationError(fname, "must be a positive finite number")
    elif kind == "list[str]":
        if not isinstance(value, list) or not value:
            raise ValidationError(fname, "must be a non-empty list of strings")
        for i, v in enumerate(value):
            if not isinstance(v, str) or not v:
                raise ValidationError(f"{fname}[{i}]", "must be a non-empty string")
    return value


@dataclass(frozen=True)
class Request:
    """Base: `from_json` checks unknown fields, required fields and JSON types, then
    `validate` applies each command's own rules."""

    timeout: float = 3600.0

    @classmethod
    def from_json(cls: type[R], data: Any) -> R:
        if not isinstance(data, Mapping):
            raise ValidationError("args", "must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ValidationError(str(key), f"unknown field (allowed: {', '.join(sorted(known))})")
        kwargs: dict[str, Any] = {}
        for name, f in known.items():
            kind = str(f.type)
            base = kind.removesuffix(" | None")
            if name not in data:
                continue  # defaults; required fields are checked by validate()
            if data[name] is None:
                if base == kind:
                    raise ValidationError(name, "must not be null")
                kwargs[name] = None
                continue
            kwargs[name] = _field_type(data[name], base, name)
        req = cls(**kwargs)
        req.validate()
        return req

    def validate(self) -> None:
        if self.timeout <= 0:
            raise ValidationError("timeout", "must be positive")

    def _require(self, *names: str) -> None:
        """Fields without a usable default: their defaults ("") only mark them as not given."""
        for name in names:
            if not getattr(self, name):
                raise ValidationError(name, "is required")

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def volume_ref(value: str, fname: str) -> str:
    """A volume named as CloudStack stores it (device path) or as StorPool does."""
    if value.startswith("/dev/"):
        return names.path_to_name(value, fname)
    return names.volume_name(value, fname)


def snapshot_ref(value: str, fname: str) -> str:
    if value.startswith("/dev/"):
        return names.path_to_name(value, fname)
    return names.snapshot_name(value, fname)



@dataclass(frozen=True)
class Command:
    name: str
    request: type[Request]
    run: Callable[[Context, Any, RunControl], dict[str, Any]]
    long_running: bool
