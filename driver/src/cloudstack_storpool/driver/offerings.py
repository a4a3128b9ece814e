"""From CloudStack offerings to StorPool placement: template, QoS class tag and IOPS limit.

The rules (those of the Java StorPool plugin for volumes and IOPS):

* template: the disk offering's `SP_QOSCLASS` detail wins (tag `qc`, the pool's own template:
  StorPool applies QoS classes by tag); else the disk offering's `SP_TEMPLATE`; else, for ROOT
  disks, the service offering's `SP_TEMPLATE`; else the pool's template. A detail may name
  several templates (`ssd-r3,hybrid-r3`): the first with room for the volume is used.
* iops: the offering's max IOPS: custom IOPS given with the request, else the disk offering's,
  else (ROOT disks) the service offering's. No limit in CloudStack means the volume gets its
  StorPool template's own limit (normally none): on create `iops` is simply not sent; on a change
  of offering the template's limit (or 0, "no limit") is written explicitly, because StorPool keeps
  an old explicit limit otherwise.

Everything here is read-only and is done before any StorPool object is created, so a bad
offering (unknown id, forbidden template name, negative IOPS) is refused with nothing to undo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloudstack_storpool import names
from cloudstack_storpool.bounds import STORPOOL_MAX_IOPS
from cloudstack_storpool.driver import tags
from cloudstack_storpool.errors import ValidationError

if TYPE_CHECKING:
    from cloudstack_storpool.cloudstack.records import DiskOffering, ServiceOffering
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.poolconfig import PoolSpec

ROOT = "ROOT"
DATADISK = "DATADISK"
VOLUME_TYPES = (ROOT, DATADISK)
ENCRYPTION_OVERHEAD = 2 * 1024 * 1024
"""Encrypted volumes get 2 MiB extra for the LUKS header (as the Java plugin does)."""


@dataclass(frozen=True)
class Placement:
    """Where and how fast a volume lives. `iops` None: no CloudStack limit."""

    template: str
    qos_class: str | None = None
    iops: int | None = None
    candidates: tuple[str, ...] = ()
    """The templates the offering named, when it named several (first fit chose `template`)."""

    def create_args(self) -> dict[str, Any]:
        """Keyword arguments of `StorPoolConn.volume_create` for this placement."""
        out: dict[str, Any] = {"template": self.template}
        if self.iops:
            out["iops"] = self.iops
        return out

    def tags(self) -> dict[str, str]:
        """The `qc` tag (empty value when there is no class: that removes an old one on update)."""
        return {tags.QOS_CLASS: self.qos_class or ""}


def check_volume_type(volume_type: str) -> str:
    vt = str(volume_type).upper()
    if vt not in VOLUME_TYPES:
        raise ValidationError("volume_type", f"must be ROOT or DATADISK, got {volume_type!r}")
    return vt


def check_iops(value: int | None, field: str) -> int | None:
    """A max IOPS value as CloudStack gives it: None or 0 is "no limit"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(field, f"must be a non-negative integer (0 = no limit), got {value!r}")
    if value > STORPOOL_MAX_IOPS:
        raise ValidationError(field, f"must be at most {STORPOOL_MAX_IOPS} (StorPool's largest IOPS limit), got {value}")
    return value or None


def parse_templates(detail: str, field: str) -> tuple[str, ...]:
    """`ssd-r3,hybrid-r3` -> ("ssd-r3", "hybrid-r3"), each checked against StorPool's rule."""
    parts = [p.strip() for p in str(detail).split(",")]
    if not parts or any(not p for p in parts):
        raise ValidationError(field, f"{detail!r} must be one template name or a comma-separated list")
    return tuple(names.template_name(p, field) for p in parts)


def disk_offering(ctx: DriverContext, offering_id: str | None) -> DiskOffering | None:
    if not offering_id:
        return None
    found = ctx.cloudstack.disk_offering(offering_id)
    if found is None:
        raise ValidationError("disk_offering_id", f"CloudStack has no disk offering {offering_id}")
    return found


def service_offering(ctx: DriverContext, offering_id: str | None) -> ServiceOffering | None:
    if not offering_id:
        return None
    found = ctx.cloudstack.service_offering(offering_id)
    if found is None:
        raise ValidationError("service_offering_id", f"CloudStack has no service offering {offering_id}")
    return found


def first_fit(ctx: DriverContext, pool: PoolSpec, candidates: tuple[str, ...], size: int | None) -> str:
    """The first template with at least `size` bytes free (StorPool's own estimate).

    One VolumeTemplatesStatus call, only when an offering lists more than one template. When
    none has room the first is returned: StorPool then refuses with its own clear error, which
    is better than guessing.
    """
    if len(candidates) == 1:
        return candidates[0]
    status = {t.name: t for t in ctx.conn(pool).templates_status()}
    need = size or 0
    for name in candidates:
        entry = status.get(name)
        if entry is None:
            continue
        free = _free(entry)
        if free is not None and free >= need:
            return name
    known = [n for n in candidates if n in status]
    if not known:
        raise ValidationError("template", f"none of the StorPool templates {', '.join(candidates)} exists")
    return known[0]


def _free(entry: Any) -> int | None:
    stored = getattr(entry, "stored", None)
    free = getattr(stored, "free", None)
    return int(free) if isinstance(free, int) else None


def resolve(
    ctx: DriverContext,
    pool: PoolSpec,
    *,
    volume_type: str = DATADISK,
    disk_offering_id: str | None = None,
    service_offering_id: str | None = None,
    custom_iops: int | None = None,
    size: int | None = None,
) -> Placement:
    """The placement of a volume of these offerings on `pool` (see the module docstring)."""
    vt = check_volume_type(volume_type)
    custom = check_iops(custom_iops, "iops")
    disk = disk_offering(ctx, disk_offering_id)
    service = service_offering(ctx, service_offering_id) if vt == ROOT else None

    qos_class: str | None = None
    candidates: tuple[str, ...] = (pool.template,)
    if disk is not None and disk.sp_qos_class:
        qos_class = disk.sp_qos_class
        names.tags({tags.QOS_CLASS: qos_class}, "disk_offering.SP_QOSCLASS")
    elif disk is not None and disk.sp_template:
        candidates = parse_templates(disk.sp_template, "disk_offering.SP_TEMPLATE")
    elif service is not None and service.sp_template:
        candidates = parse_templates(service.sp_template, "service_offering.SP_TEMPLATE")

    iops: int | None = custom
    if iops is None and disk is not None:
        iops = check_iops(disk.max_iops, "disk_offering.max_iops")
    if iops is None and service is not None:
        iops = check_iops(service.max_iops, "service_offering.max_iops")

    template = first_fit(ctx, pool, candidates, size)
    return Placement(template=template, qos_class=qos_class, iops=iops,
                     candidates=candidates if len(candidates) > 1 else ())


def explicit_iops(ctx: DriverContext, pool: PoolSpec, placement: Placement) -> int:
    """The `iops` to write on an existing volume: the offering's, else its template's, else 0.

    Needed on updates only: StorPool keeps a volume's explicit limit across template changes.
    """
    if placement.iops:
        return placement.iops
    found = ctx.conn(pool).template(placement.template)
    return found.iops if found is not None else 0


def apply(ctx: DriverContext, pool: PoolSpec, name: str, placement: Placement) -> None:
    """Re-apply template, `qc` and iops to an existing volume (change of offering, after a
    revert or a migration). One VolumeUpdate (plus a template read when the offering sets no
    IOPS)."""
    iops = explicit_iops(ctx, pool, placement)
    ctx.conn(pool).volume_update(name, template=placement.template, iops=iops, tags=placement.tags())
