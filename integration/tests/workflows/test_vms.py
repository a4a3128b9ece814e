"""Deploying, starting, stopping, migrating and destroying VMs through CloudStack's API."""

from __future__ import annotations

from typing import Any

import cs

from integration.stack import LocalStack
from integration.tests.workflows.support import BYID, deploy, sp_volume, template, volumes_of, with_image


def test_two_vms_from_one_template_copy_it_once(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    tpl = template(cloud)
    with_image(stack, tpl)
    vm1 = deploy(cloud, tpl, "web-1")
    vm2 = deploy(cloud, tpl, "web-2")
    assert vm1["state"] == vm2["state"] == "Running"
    roots = [volumes_of(cloud, vm["id"])[0] for vm in (vm1, vm2)]
    assert all(r["type"] == "ROOT" and r["path"].startswith(BYID) for r in roots)
    on_sp = [sp_volume(sp, r["path"]) for r in roots]
    assert all(v is not None for v in on_sp)
    # One copy from the image store, then both roots are children of the same cached snapshot.
    assert len(stack.agent_jobs("copy_template")) == 1
    assert on_sp[0].parentName == on_sp[1].parentName and on_sp[0].parentName
    for vm, v in zip((vm1, vm2), on_sp, strict=True):
        assert v.tags["cvm"] == vm["id"] and v.tags["disk"] == "0"
        # The VM's host has the disk attached (the start connected it there).
        host_client = stack.agents[vm["hostid"]].client_id
        attached = {int(a.client) for a in sp.attachmentsList() if a.volume == v.name}
        assert attached == {host_client}
