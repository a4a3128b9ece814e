"""The one spelling of a CloudStack uuid that the project accepts.

CloudStack names everything by a uuid and always sends it lower-case in the 8-4-4-4-12 form.
The driver derives StorPool names from it (`cs-vol-<uuid>`), so a second spelling of the same
uuid (no dashes, `urn:uuid:`, braces, upper case) would be a second StorPool name for one
CloudStack object, and a retry spelled differently would not find its own volume. Every entry
point (the driver, the CLI through the driver, the service's request parser, the pools file,
the agent) therefore refuses any other spelling instead of normalising it: a caller that sends
one has a bug worth seeing.
"""

from __future__ import annotations

import re
from typing import Annotated

from msgspec import Meta

from cloudstack_storpool.errors import ValidationError

PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
"""The canonical form (also the `pattern` of `format: uuid` fields in the OpenAPI document)."""

Uuid = Annotated[str, Meta(pattern=PATTERN, min_length=36, max_length=36, extra_json_schema={"format": "uuid"})]
"""A CloudStack uuid, as a parameter or field type: the service and the agent refuse any other
spelling naming the field, whatever the field is called (the rule is the type's, not the name's)."""
_CANONICAL = re.compile(PATTERN)


def is_uuid(value: object) -> bool:
    """Whether `value` is a uuid in the canonical form."""
    return isinstance(value, str) and _CANONICAL.fullmatch(value) is not None


def check_uuid(value: object, field: str) -> str:
    """`value` itself when it is a canonical uuid; else ValidationError naming `field`."""
    if is_uuid(value):
        assert isinstance(value, str)
        return value
    shown = repr(value[:60]) if isinstance(value, str) else type(value).__name__
    raise ValidationError(field, f"{shown} is not a CloudStack uuid (lower-case 8-4-4-4-12 hex digits)")
