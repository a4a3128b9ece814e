"""Numeric limits of the systems a value travels to, in one place, as types that put them on a
request field (`Annotated[int, msgspec.Meta(ge=..., le=...)]`), so the service refuses an
out-of-range value with 400 naming the field before a job starts, and documents the range in
OpenAPI.

An integer the project accepts must fit wherever it goes next: StorPool's API for sizes and
IOPS limits, CloudStack's Java side for settings (a Java `int`) and ids.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

INT64_MAX = (1 << 63) - 1
JAVA_INT_MAX = (1 << 31) - 1
STORPOOL_MAX_IOPS = (1 << 32) - 1
"""The largest IOPS limit sent to StorPool (an unsigned 32-bit quantity); larger values, which a
CloudStack offering (a Java long) can carry, are refused rather than truncated or wrapped."""


def _within(lo: int, hi: int) -> Meta:
    return Meta(ge=lo, le=hi, extra_json_schema={"format": "int64"})


Seconds = Annotated[int, _within(0, JAVA_INT_MAX)]
"""A non-negative duration in seconds."""
Bytes = Annotated[int, _within(512, INT64_MAX)]
"""A size in bytes (the driver also checks StorPool's multiple of 512)."""
Iops = Annotated[int, _within(0, STORPOOL_MAX_IOPS)]
"""An IOPS limit; 0 is "no limit"."""
