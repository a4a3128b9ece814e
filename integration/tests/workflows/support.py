"""Helpers for the workflow tests: look-ups through `cs`, checks through the StorPool bindings."""

from __future__ import annotations

from typing import Any

import cs

from integration.stack import LocalStack

MiB = 1 << 20
GiB = 1 << 30
BYID = "/dev/storpool-byid/"


def one(cloud: cs.CloudStack, command: str, key: str, **params: Any) -> dict[str, Any]:
    """The single item a list command answers (fails the test otherwise)."""
    found = getattr(cloud, command)(**params).get(key, [])
    assert len(found) == 1, f"{command}({params}) gave {found}"
    return dict(found[0])


def template(cloud: cs.CloudStack, name: str = "tiny-linux") -> dict[str, Any]:
    return one(cloud, "listTemplates", "template", templatefilter="all", name=name)


def offering(cloud: cs.CloudStack, name: str, *, disk: bool = True) -> str:
    if disk:
        return str(one(cloud, "listDiskOfferings", "diskoffering", name=name)["id"])
    return str(one(cloud, "listServiceOfferings", "serviceoffering", name=name)["id"])


def with_image(stack: LocalStack, tpl: dict[str, Any], marker: bytes = b"template boot sector") -> None:
    """The template's image on the image store, where CloudStack put it when it was registered."""
    stack.template_image(tpl["id"], int(tpl["size"]), {0: marker})


def deploy(cloud: cs.CloudStack, tpl: dict[str, Any], name: str, **extra: Any) -> dict[str, Any]:
    zone = tpl["zoneid"]
    svc = offering(cloud, "small", disk=False)
    res = cloud.deployVirtualMachine(zoneid=zone, templateid=tpl["id"], serviceofferingid=svc, name=name, **extra)
    return dict(res["virtualmachine"])


def vm_with_data_disk(stack: LocalStack, cloud: cs.CloudStack, name: str, **extra: Any) -> dict[str, Any]:
    """A running VM from the seeded template with one `sp-small` data disk attached."""
    tpl = template(cloud)
    with_image(stack, tpl)
    vm = deploy(cloud, tpl, name, **extra)
    cloud.createVolume(name=f"{name}-data", zoneid=vm["zoneid"], diskofferingid=offering(cloud, "sp-small"),
                       virtualmachineid=vm["id"])
    return vm


def volumes_of(cloud: cs.CloudStack, vm_id: str) -> list[dict[str, Any]]:
    return sorted(cloud.listVolumes(virtualmachineid=vm_id).get("volume", []), key=lambda v: v.get("deviceid", 0))


def sp_volume(sp: Any, path: str) -> Any | None:
    """The StorPool volume CloudStack's `path` names (`/dev/storpool-byid/<globalId>`)."""
    assert path.startswith(BYID), path
    gid = path[len(BYID):]
    return next((v for v in sp.volumesList() if v.globalId == gid), None)


def sp_snapshot(sp: Any, path: str) -> Any | None:
    gid = path[len(BYID):]
    return next((s for s in sp.snapshotsList() if s.globalId == gid), None)


def job_error(exc: cs.CloudStackApiException) -> dict[str, Any]:
    return dict(exc.error or {})
