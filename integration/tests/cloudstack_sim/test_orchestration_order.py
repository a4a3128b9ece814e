"""The simulator's storage subsystem, seen from its call log: which plugin calls a user command
makes, in which order, with which data (orchestrator.py documents the CloudStack classes each
order follows). The workflow tests check the outcome on StorPool; this checks the calls."""

from __future__ import annotations

from typing import Any

import cs

from integration.stack import LocalStack
from integration.tests.driver.conftest import stack  # noqa: F401  (re-exported fixture)
from integration.tests.workflows.support import deploy, offering, template, volumes_of, with_image


def calls_during(stack: LocalStack, work: Any) -> list[tuple[str, dict[str, Any]]]:  # noqa: F811
    plugin = stack.cs.model.plugin
    assert plugin is not None
    before = len(plugin.calls)
    work()
    return [(c.operation, c.args) for c in plugin.calls[before:]]


def test_calls_in_cloudstacks_order_with_cloudstacks_data(stack: LocalStack) -> None:  # noqa: F811
    stack.start_service()
    cloud = cs.CloudStack(stack.cs.endpoint, stack.cs.key, stack.cs.secret, fetch_result=True, poll_interval=0.05,
                          job_timeout=120)
    tpl = template(cloud)
    with_image(stack, tpl)
    pool = stack.pool_id("storpool-primary")
    vms: list[dict[str, Any]] = []

    first = calls_during(stack, lambda: vms.append(deploy(cloud, tpl, "one")))
    # VolumeServiceImpl.createVolumeFromTemplateAsync: the base image on the pool first, then
    # the volume from it; then provideVmInfo; then the host's StartCommand.
    assert [op for op, _ in first] == ["cache_template", "create_volume_from_template", "volume_attached",
                                      "agent:prepare_start"]
    root = volumes_of(cloud, vms[0]["id"])[0]
    fill, create, tag, start = (args for _, args in first)
    assert fill["pool"] == pool and fill["template_uuid"] == tpl["id"]
    assert fill["source"]["path"] == f"template/tmpl/1/{tpl['id']}/{tpl['id']}.qcow2"
    assert create["volume_uuid"] == root["id"] and create["volume_type"] == "ROOT"
    assert create["service_offering_id"] == vms[0]["serviceofferingid"]
    assert tag == {"pool": pool, "volume_uuid": root["id"], "vm_id": vms[0]["id"], "device_id": 0,
                   "path": root["path"]}
    assert start["volumes"] == [root["path"]]

    # The template is on the pool now (template_spool_ref): no second fill.
    second = calls_during(stack, lambda: vms.append(deploy(cloud, tpl, "two")))
    assert [op for op, _ in second] == ["create_volume_from_template", "volume_attached", "agent:prepare_start"]

    attach = calls_during(stack, lambda: cloud.createVolume(name="d", zoneid=tpl["zoneid"], virtualmachineid=vms[0]["id"],
                                                            diskofferingid=offering(cloud, "sp-small")))
    # allocVolume, then attachVolumeToVM: created on the VM's pool, connected on its host, tagged.
    assert [op for op, _ in attach] == ["create_volume", "agent:prepare_start", "volume_attached"]
    assert attach[0][1]["pool"] == pool and attach[0][1]["size"] == 10 << 30

    destroy = calls_during(stack, lambda: cloud.destroyVirtualMachine(id=vms[0]["id"], expunge=True))
    assert [op for op, _ in destroy] == ["delete_volume", "vm_destroyed"]
    assert destroy[0][1]["volume_uuid"] == root["id"] and destroy[0][1]["path"] == root["path"]
