"""The agent commands' request types: what the driver sends and the agent parses, one typed
request per command. They live here, below both, so that the management side checks a request
with the agent's own rules without importing the agent.

Requests are parsed from JSON (`typedjson.parse_object`: unknown fields, required fields, JSON
types, each error naming its field) and then validated by each command's own rules, before
anything is touched. The passphrase of `EncryptRequest` is a `Secret`: masked wherever a request
is shown or fingerprinted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from cloudstack_storpool import names
from cloudstack_storpool.agentapi.locations import check_relative, check_store
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.poolconfig import Secret
from cloudstack_storpool.typedjson import parse_object

FORMATS = ("raw", "qcow2")


def check_format(fmt: str, field: str) -> None:
    """The one rule for image formats, shared by request parsing and every qemu-img call."""
    if fmt not in FORMATS:
        raise ValidationError(field, f"must be one of {', '.join(FORMATS)}, got {fmt!r}")


R = TypeVar("R", bound="Request")


@dataclass(frozen=True, kw_only=True)
class Request:
    """Base of the commands' requests. `from_json` is the project's one request parser
    (`typedjson.parse_fields`: unknown fields, required fields, JSON types, each error naming
    its field); then `validate` applies each command's own rules. A field without a default
    is required."""

    timeout: float = 3600.0

    @classmethod
    def from_json(cls: type[R], data: Any) -> R:
        req: R = parse_object(cls, data, what="args")
        req.validate()
        return req

    def validate(self) -> None:
        if self.timeout <= 0:
            raise ValidationError("timeout", "must be positive")


def volume_ref(value: str, fname: str) -> str:
    """A volume named as CloudStack stores it (device path) or as StorPool does."""
    if value.startswith("/dev/"):
        return names.path_to_name(value, fname)
    return names.volume_name(value, fname)


def snapshot_ref(value: str, fname: str) -> str:
    if value.startswith("/dev/"):
        return names.path_to_name(value, fname)
    return names.snapshot_name(value, fname)


def check_location(store: str, path: str) -> None:
    """The form of a secondary-storage location; its roots are checked when it is resolved."""
    check_store(store, None, "store")
    check_relative(path, "path")


@dataclass(frozen=True, kw_only=True)
class CopyToVolumeRequest(Request):
    """An image on secondary storage (`store` + `path`) into an existing StorPool volume."""

    store: str
    path: str
    volume: str
    source_format: str | None = None
    # The caller guarantees the volume reads as zeros (freshly created): zero areas of the
    # image are skipped instead of written, which is much faster on big sparse images.
    target_is_zero: bool = False

    def validate(self) -> None:
        super().validate()
        check_location(self.store, self.path)
        volume_ref(self.volume, "volume")
        if self.source_format is not None:
            check_format(self.source_format, "source_format")


@dataclass(frozen=True, kw_only=True)
class CopyTemplateRequest(CopyToVolumeRequest):
    """A template into the (fresh) volume that will become its cached snapshot."""

    target_is_zero: bool = True


@dataclass(frozen=True, kw_only=True)
class BackupSnapshotRequest(Request):
    snapshot: str
    store: str
    path: str
    compress: bool = False

    def validate(self) -> None:
        super().validate()
        snapshot_ref(self.snapshot, "snapshot")
        check_location(self.store, self.path)


@dataclass(frozen=True, kw_only=True)
class CopyVolumeOutRequest(Request):
    volume: str
    store: str
    path: str
    format: str = "qcow2"
    compress: bool = False

    def validate(self) -> None:
        super().validate()
        volume_ref(self.volume, "volume")
        check_location(self.store, self.path)
        check_format(self.format, "format")
        if self.compress and self.format != "qcow2":
            raise ValidationError("compress", "only qcow2 output can be compressed")


@dataclass(frozen=True, kw_only=True)
class ResizeRequest(Request):
    volume: str
    size: int
    vm: str | None = None
    timeout: float = 120.0

    def validate(self) -> None:
        super().validate()
        volume_ref(self.volume, "volume")
        names.size(self.size, "size")


@dataclass(frozen=True, kw_only=True)
class PrepareStartRequest(Request):
    volumes: list[str]
    attach: bool = True
    timeout: float = 120.0

    def validate(self) -> None:
        super().validate()
        if not self.volumes:
            raise ValidationError("volumes", "must be a non-empty list of volumes")
        for i, v in enumerate(self.volumes):
            volume_ref(v, f"volumes[{i}]")


@dataclass(frozen=True, kw_only=True)
class FactsRequest(Request):
    timeout: float = 30.0




MAX_DETACH_RETRIES = 60


@dataclass(frozen=True, kw_only=True)
class ConnectRequest(Request):
    volume: str
    timeout: float = 120.0

    def validate(self) -> None:
        super().validate()
        volume_ref(self.volume, "volume")


@dataclass(frozen=True, kw_only=True)
class DisconnectRequest(Request):
    volume: str
    retries: int = 10
    delay: float = 1.0
    force: bool = True
    """Force the detach after the last retry (the Java adaptor's behaviour)."""
    timeout: float = 300.0

    def validate(self) -> None:
        super().validate()
        volume_ref(self.volume, "volume")
        if not 0 <= self.retries <= MAX_DETACH_RETRIES:
            raise ValidationError("retries", f"must be between 0 and {MAX_DETACH_RETRIES}")


MIN_PASSPHRASE = 8
MAX_PASSPHRASE = 1024


def check_passphrase(value: str, fname: str = "passphrase") -> None:
    """The passphrase's form; the value itself never appears in the error."""
    if not MIN_PASSPHRASE <= len(value) <= MAX_PASSPHRASE:
        raise ValidationError(fname, f"must be {MIN_PASSPHRASE} to {MAX_PASSPHRASE} characters")
    if any(ord(c) < 0x20 for c in value):
        raise ValidationError(fname, "must not contain control characters")


@dataclass(frozen=True, kw_only=True)
class EncryptRequest(Request):
    volume: str
    passphrase: Secret = field(repr=False)
    """Masked wherever the request is shown or fingerprinted (`Secret`); revealed only as bytes
    written to qemu-img's memfd."""
    source: str | None = None
    """A StorPool snapshot (or volume) to copy into the encrypted payload: a root disk's template."""
    timeout: float = 3600.0

    def validate(self) -> None:
        super().validate()
        volume_ref(self.volume, "volume")
        check_passphrase(self.passphrase)
        if self.source is not None:
            snapshot_ref(self.source, "source")
