"""StorPool's naming rules, checked here so a bad name fails before any request is sent.

The regexes are StorPool's own (they match those in the official bindings); checking them
locally turns a late `invalidParam` from the cluster into an error that names the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeGuard

from cloudstack_storpool.errors import ValidationError

VOLUME_NAME = re.compile(r"^#?[A-Za-z0-9_\-.:]+$")
SNAPSHOT_NAME = re.compile(r"^\*?[A-Za-z0-9_\-.:@]+$")
TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
GLOBAL_ID = re.compile(r"^[a-z0-9]+\.[a-z0-9]+\.[a-z0-9]+$")
TAG_KEY = re.compile(r"^[A-Za-z0-9_\-.:]+$")
TAG_VALUE = re.compile(r"^[A-Za-z0-9_\-.:]*$")
MAX_LEN = 200
RESERVED = frozenset({"list", "status"})

BYID_PREFIX = "/dev/storpool-byid/"
LEGACY_PREFIX = "/dev/storpool/"


MAX_CLIENT_ID = 4095
"""StorPool client ids (SP_OURID) are 1..4095."""


def is_client_id(value: object) -> TypeGuard[int]:
    """Whether `value` is a StorPool client id: an int (not a bool) in 1..MAX_CLIENT_ID. One rule
    for the agent, the heartbeat, the connection layer, answers and CloudStack host records."""
    return type(value) is int and 1 <= value <= MAX_CLIENT_ID


def check_client_id(value: object, field_name: str = "client_id") -> int:
    """A StorPool client id, or ValidationError naming `field_name`."""
    if not is_client_id(value):
        raise ValidationError(field_name, f"StorPool client id must be an integer 1..{MAX_CLIENT_ID}, got {value!r}")
    return value


def _check(field: str, value: str, rx: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(field, f"{what} must be a non-empty string")
    if len(value) >= MAX_LEN:
        raise ValidationError(field, f"{what} must be shorter than {MAX_LEN} characters")
    if value.startswith("~"):
        if not GLOBAL_ID.match(value[1:]):
            raise ValidationError(field, f"{value!r} is not a valid ~globalId")
        return value
    if value in RESERVED:
        raise ValidationError(field, f"{value!r} is reserved by StorPool")
    if not rx.match(value):
        raise ValidationError(field, f"{value!r} is not a valid StorPool {what} (allowed: {rx.pattern})")
    return value


def volume_name(value: str, field: str = "name") -> str:
    """A volume name or `~globalId`."""
    return _check(field, value, VOLUME_NAME, "volume name")


def snapshot_name(value: str, field: str = "name") -> str:
    """A snapshot name or `~globalId`."""
    return _check(field, value, SNAPSHOT_NAME, "snapshot name")


def template_name(value: str, field: str = "template") -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "template name must be a non-empty string")
    if len(value) >= MAX_LEN or not TEMPLATE_NAME.match(value):
        raise ValidationError(field, f"{value!r} is not a valid StorPool template name (allowed: {TEMPLATE_NAME.pattern})")
    return value


LOCATION_NAME = re.compile(r"^[A-Za-z0-9_\-.:]+$")
LOCATION_MAX_LEN = 64


def location_name(value: str, field: str = "location") -> str:
    """A StorPool location name (`storpool location list`; what `sp.cluster.location` holds)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "location name must be a non-empty string")
    if len(value) > LOCATION_MAX_LEN or not LOCATION_NAME.match(value):
        raise ValidationError(field, f"{value!r} is not a valid StorPool location name "
                                     f"(allowed: {LOCATION_NAME.pattern}, at most {LOCATION_MAX_LEN} characters)")
    return value


def tags(values: Mapping[str, str], field: str = "tags") -> dict[str, str]:
    """Validate a tag map; an empty value is allowed (it removes the tag on update)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not TAG_KEY.match(key) or len(key) >= MAX_LEN:
            raise ValidationError(f"{field}.{key}", f"tag key {key!r} is not allowed by StorPool ({TAG_KEY.pattern})")
        if not isinstance(value, str) or not TAG_VALUE.match(value) or len(value) >= MAX_LEN:
            raise ValidationError(f"{field}.{key}", f"tag value {value!r} is not allowed by StorPool ({TAG_VALUE.pattern})")
        out[key] = value
    return out


def size(value: int, field: str = "size") -> int:
    """A size in bytes: positive and a multiple of 512, as StorPool requires."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, "size must be an integer number of bytes")
    if value <= 0:
        raise ValidationError(field, f"size must be positive, got {value}")
    if value % 512:
        raise ValidationError(field, f"size must be a multiple of 512 bytes, got {value}")
    return value


def global_id_name(global_id: str, field: str = "globalId") -> str:
    """The API name of an object addressed by its global id: `~<globalId>`."""
    if not GLOBAL_ID.match(global_id):
        raise ValidationError(field, f"{global_id!r} is not a StorPool global id")
    return "~" + global_id


def path_to_name(path: str, field: str = "path") -> str:
    """The API name for a path stored in CloudStack.

    New volumes are stored as `/dev/storpool-byid/<globalId>` (stable across renames); volumes
    created by old plugin versions may still carry `/dev/storpool/<name>`.
    """
    if path.startswith(BYID_PREFIX):
        return global_id_name(path[len(BYID_PREFIX):], field)
    if path.startswith(LEGACY_PREFIX):
        return volume_name(path[len(LEGACY_PREFIX):], field)
    if path.startswith("~"):
        return volume_name(path, field)
    raise ValidationError(field, f"{path!r} is not a StorPool device path ({BYID_PREFIX}<globalId> or {LEGACY_PREFIX}<name>)")


def name_to_path(name: str) -> str:
    """The path CloudStack stores for an object: by global id when we have one."""
    if name.startswith("~"):
        return BYID_PREFIX + name[1:]
    return LEGACY_PREFIX + volume_name(name)
