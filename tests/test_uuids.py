"""One canonical spelling of a CloudStack uuid, refused alike by every entry point."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cloudstack_storpool import uuids
from cloudstack_storpool.driver import naming
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.typedjson import parse
from cloudstack_storpool.uuids import Uuid

UID = "0b9c8f4e-2c33-4e0b-9e7a-1f6e2b9d1c11"
OTHER_SPELLINGS = [UID.replace("-", ""), f"urn:uuid:{UID}", f"{{{UID}}}", UID.upper(), f" {UID}", f"{UID}\n"]

CHECKS: dict[str, Callable[[str], object]] = {
    "uuids": lambda v: uuids.check_uuid(v, "volume_uuid"),
    "driver names": naming.volume,
    "request parser": lambda v: parse(Uuid, v, "volume_uuid"),
}


@pytest.mark.parametrize("where", sorted(CHECKS))
def test_the_canonical_spelling_is_kept_as_is(where: str) -> None:
    assert uuids.is_uuid(UID)
    assert UID in str(CHECKS[where](UID))


@pytest.mark.parametrize("where", sorted(CHECKS))
@pytest.mark.parametrize("spelling", OTHER_SPELLINGS)
def test_every_other_spelling_is_refused_naming_the_field(where: str, spelling: str) -> None:
    assert not uuids.is_uuid(spelling)
    with pytest.raises(ValidationError) as err:
        CHECKS[where](spelling)
    assert err.value.field == "volume_uuid" and "not a CloudStack uuid" in err.value.message


def test_non_strings_are_refused() -> None:
    assert not uuids.is_uuid(None) and not uuids.is_uuid(12)
    with pytest.raises(ValidationError, match="int is not a CloudStack uuid"):
        uuids.check_uuid(12, "vm_uuid")
