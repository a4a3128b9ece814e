"""The simulator's storage subsystem, seen from its call log: which plugin calls a user command
makes, in which order, with which data (orchestrator.py documents the CloudStack classes each
order follows). The workflow tests check the outcome on StorPool; this checks the calls."""

from __future__ import annotations

from typing import Any

import cs
import pytest

from cloudstack_storpool.driver import spclusters, templates
from integration.stack import LocalStack
from integration.tests.driver.conftest import stack  # noqa: F401  (re-exported fixture)
from integration.tests.workflows.conftest import cloud  # noqa: F401  (re-exported fixture)
from integration.tests.workflows.support import deploy, offering, template, volumes_of, with_image

pytestmark = pytest.mark.root


def calls_during(stack: LocalStack, work: Any) -> list[tuple[str, dict[str, Any]]]:  # noqa: F811
    plugin = stack.cs.model.plugin
    assert plugin is not None
    before = len(plugin.calls)
    work()
    return [(c.operation, c.args) for c in plugin.calls[before:]]


def test_calls_in_cloudstacks_order_with_cloudstacks_data(stack: LocalStack, cloud: cs.CloudStack) -> None:  # noqa: F811
    tpl = template(cloud)
    with_image(stack, tpl)
    pool = stack.pool_id("storpool-primary")
    vms: list[dict[str, Any]] = []

    first = calls_during(stack, lambda: vms.append(deploy(cloud, tpl, "one")))
    # VolumeServiceImpl.createVolumeFromTemplateAsync: the base image on the pool first, then
    # the volume from it; then provideVmInfo; then the host's StartCommand (hand-over).
    assert [op for op, _ in first] == ["cache_template", "create_volume_from_template", "volume_attached",
                                      "hand_over_vm"]
    root = volumes_of(cloud, vms[0]["id"])[0]
    fill, create, tag, start = (args for _, args in first)
    assert fill["pool"] == pool and fill["template_uuid"] == tpl["id"]
    assert fill["source"]["path"] == f"template/tmpl/1/{tpl['id']}/{tpl['id']}.qcow2"
    assert create["volume_uuid"] == root["id"] and create["volume_type"] == "ROOT"
    assert create["service_offering_id"] == vms[0]["serviceofferingid"]
    assert tag == {"pool": pool, "volume_uuid": root["id"], "vm_id": vms[0]["id"], "device_id": 0,
                   "path": root["path"]}
    assert start == {"vm_id": vms[0]["id"], "host_id": vms[0]["hostid"]}

    # The template is on the pool now (template_spool_ref): no second fill.
    second = calls_during(stack, lambda: vms.append(deploy(cloud, tpl, "two")))
    assert [op for op, _ in second] == ["create_volume_from_template", "volume_attached", "hand_over_vm"]

    attach = calls_during(stack, lambda: cloud.createVolume(name="d", zoneid=tpl["zoneid"], virtualmachineid=vms[0]["id"],
                                                            diskofferingid=offering(cloud, "sp-small")))
    # allocVolume, then attachVolumeToVM: created on the VM's pool, connected on its host, tagged.
    assert [op for op, _ in attach] == ["create_volume", "connect_physical_disk", "volume_attached"]
    assert attach[0][1]["pool"] == pool and attach[0][1]["size"] == 10 << 30
    data = volumes_of(cloud, vms[0]["id"])[1]
    assert attach[1][1] == {"host_id": vms[0]["hostid"], "path": data["path"]}

    # DettachCommand on the running VM's host, then the record, then the tags.
    detach = calls_during(stack, lambda: cloud.detachVolume(id=data["id"]))
    assert detach == [("disconnect_physical_disk", {"host_id": vms[0]["hostid"], "path": data["path"]}),
                      ("volume_detached", {"pool": pool, "volume_uuid": data["id"], "path": data["path"]})]
    # A stopped VM's attach and detach touch no host.
    cloud.stopVirtualMachine(id=vms[1]["id"])
    cold = calls_during(stack, lambda: (cloud.attachVolume(id=data["id"], virtualmachineid=vms[1]["id"]),
                                        cloud.detachVolume(id=data["id"])))
    assert [op for op, _ in cold] == ["volume_attached", "volume_detached"]

    destroy = calls_during(stack, lambda: cloud.destroyVirtualMachine(id=vms[0]["id"], expunge=True))
    # Running: StopCommand first (its disks let go on its host), then the expunge.
    assert [op for op, _ in destroy] == ["vm_stopped", "delete_volume", "vm_destroyed"]
    assert destroy[0][1] == {"vm_id": vms[0]["id"], "host_id": vms[0]["hostid"]}
    assert destroy[1][1]["volume_uuid"] == root["id"] and destroy[1][1]["path"] == root["path"]


def test_snapshot_template_and_vm_snapshot_calls(stack: LocalStack, cloud: cs.CloudStack) -> None:  # noqa: F811
    tpl = template(cloud)
    with_image(stack, tpl)
    vm = deploy(cloud, tpl, "snappy")
    root = volumes_of(cloud, vm["id"])[0]
    pool = stack.pool_id("storpool-primary")
    snaps: list[dict[str, Any]] = []

    def kept_path(snapshot_id: str) -> str:
        """What CloudStack keeps for the snapshot (snapshot_details, key: its uuid): every
        later operation on it hands the plugin that path."""
        path = stack.cs.model.snapshots[snapshot_id].details[snapshot_id]
        assert path.startswith("/dev/storpool-byid/")
        return path

    take = calls_during(stack, lambda: snaps.append(cloud.createSnapshot(volumeid=root["id"])["snapshot"]))
    assert [op for op, _ in take] == ["take_snapshot"]
    assert take[0][1] == {"volume_uuid": root["id"], "snapshot_uuid": snaps[0]["id"],
                          "secondary": {"store": str(stack.secondary),
                                        "path": f"snapshots/2/{root['id']}/{snaps[0]['id']}.qcow2"}}

    resize = calls_during(stack, lambda: cloud.resizeVolume(id=root["id"], size=1))
    assert resize == [("resize_volume", {"volume_uuid": root["id"], "new_size": 1 << 30, "shrink_ok": False,
                                         "host_ids": [vm["hostid"]], "instance_name": vm["instancename"]})]
    snaps.append(cloud.createSnapshot(volumeid=root["id"])["snapshot"])  # of the 1 GiB volume

    cloud.stopVirtualMachine(id=vm["id"])
    made: list[dict[str, Any]] = []
    template_calls = calls_during(stack, lambda: made.append(cloud.createTemplate(
        name="t", displaytext="t", ostypeid="1", snapshotid=snaps[0]["id"])["template"]))
    assert template_calls == [("create_template_from_snapshot", {
        "pool": pool, "template_uuid": made[0]["id"], "snapshot_uuid": snaps[0]["id"],
        "snapshot_path": kept_path(snaps[0]["id"]),
        "secondary": {"store": str(stack.secondary), "path": f"template/tmpl/2/{made[0]['id']}/{made[0]['id']}.qcow2"}})]

    vm_snaps: list[dict[str, Any]] = []
    group = calls_during(stack, lambda: vm_snaps.append(cloud.createVMSnapshot(virtualmachineid=vm["id"])["vmsnapshot"]))
    assert group == [("take_vm_snapshot", {"vm_uuid": vm["id"], "vm_snapshot_uuid": vm_snaps[0]["id"],
                                           "memory": False})]
    gone = calls_during(stack, lambda: cloud.destroyVirtualMachine(id=vm["id"], expunge=True))  # stopped already
    # VM snapshots go first (VMSnapshotManagerImpl.deleteAllVMSnapshots), then the volumes.
    assert [op for op, _ in gone] == ["delete_vm_snapshot", "delete_volume", "vm_destroyed"]

    first_path = kept_path(snaps[0]["id"])
    drop = calls_during(stack, lambda: cloud.deleteSnapshot(id=snaps[0]["id"]))
    assert drop == [("delete_snapshot", {"pool": pool, "snapshot_uuid": snaps[0]["id"], "path": first_path})]
    # The snapshot outlived its volume; a volume can still be made from it, on its pool.
    restored = calls_during(stack, lambda: cloud.createVolume(name="again", snapshotid=snaps[1]["id"]))
    assert [op for op, _ in restored] == ["create_volume_from_snapshot"]
    assert restored[0][1]["pool"] == pool and restored[0][1]["size"] == 1 << 30
    assert restored[0][1]["path"] == kept_path(snaps[1]["id"])


def test_host_side_calls_for_stop_start_and_live_migration(stack: LocalStack, cloud: cs.CloudStack) -> None:  # noqa: F811
    tpl = template(cloud)
    with_image(stack, tpl)
    first, second = (h["id"] for h in cloud.listHosts(type="Routing")["host"][:2])
    vm = deploy(cloud, tpl, "traveller", hostid=first)
    ident = {"vm_id": vm["id"]}

    stop = calls_during(stack, lambda: cloud.stopVirtualMachine(id=vm["id"]))
    assert stop == [("vm_stopped", {**ident, "host_id": first})]
    start = calls_during(stack, lambda: cloud.startVirtualMachine(id=vm["id"], hostid=second))
    assert start == [("hand_over_vm", {**ident, "host_id": second})]

    # PrepareForMigrationCommand on the destination, MigrateCommand, then the source lets go.
    move = calls_during(stack, lambda: cloud.migrateVirtualMachine(virtualmachineid=vm["id"], hostid=first))
    assert move == [("prepare_migration", {**ident, "dest_host_id": first}),
                    ("finish_migration", {**ident, "source_host_id": second, "dest_host_id": first,
                                          "succeeded": True})]

    # The move fails: the destination lets go instead, and the job fails.
    stack.cs.model.migration_faults.append("libvirt: unable to connect to the destination")
    failed: list[dict[str, Any]] = []

    def migrate_back() -> None:
        try:
            cloud.migrateVirtualMachine(virtualmachineid=vm["id"], hostid=second)
        except cs.CloudStackApiException as exc:
            failed.append(dict(exc.error or {}))

    back = calls_during(stack, migrate_back)
    assert back == [("prepare_migration", {**ident, "dest_host_id": second}),
                    ("finish_migration", {**ident, "source_host_id": first, "dest_host_id": second,
                                          "succeeded": False})]
    assert failed and failed[0]["errorcode"] == 530 and "unable to connect" in failed[0]["errortext"]
    # Reboot stays inside the hypervisor; a stopped VM's migration only moves its record.
    assert calls_during(stack, lambda: cloud.rebootVirtualMachine(id=vm["id"])) == []
    cloud.stopVirtualMachine(id=vm["id"])
    assert calls_during(stack, lambda: cloud.migrateVirtualMachine(virtualmachineid=vm["id"], hostid=second)) == []


def test_hosts_connect_when_the_plugin_arrives(stack: LocalStack, cloud: cs.CloudStack) -> None:  # noqa: F811
    """StorPoolHostListener.hostConnect for every host with an agent: `host_connected`, and the
    client id it answers is what CloudStack keeps as the host's `parent` (in its database: listHosts
    never shows that column, HostResponse has no such field)."""
    plugin = stack.cs.model.plugin
    assert plugin is not None
    connected = {c.args["host_id"] for c in plugin.calls if c.operation == "host_connected" and c.ok}
    assert connected == set(stack.agents)
    for host_id, agent in stack.agents.items():
        assert stack.cs.model.hosts[host_id].parent == str(agent.client_id)
    assert all("parent" not in h for h in cloud.listHosts(type="Routing")["host"])


def test_a_connecting_host_records_its_storpool_cluster_on_its_cluster(
        stack: LocalStack, cloud: cs.CloudStack) -> None:  # noqa: F811
    """StorPoolHelper.setSpClusterIdIfNeeded: the host's SP_CLUSTER_ID becomes its cluster's
    `sp.cluster.id` detail, which listClusters shows in `resourcedetails` and the cluster-scoped
    setting reads; a host reporting another id changes it, one reporting none clears it."""
    from integration.cloudstack_sim import orchestrator

    kvm1 = cloud.listHosts(type="Routing", name="kvm1")["host"][0]
    cluster = cloud.listClusters(id=kvm1["clusterid"])["cluster"][0]
    assert cluster["resourcedetails"] == {"sp.cluster.id": stack.sp.emulator.cluster_key}
    setting = cloud.listConfigurations(name="sp.cluster.id", clusterid=cluster["id"])["configuration"][0]
    assert setting["value"] == stack.sp.emulator.cluster_key

    # A host of a new cluster: its cluster gets the detail when the host connects, not before.
    second = stack.cs.model.add_cluster("cluster2", stack.zone_id)
    host = stack.add_kvm_host("kvm3", second.id, 3)
    assert cloud.listClusters(id=second.id)["cluster"][0]["resourcedetails"] == {}
    orchestrator.host_connected(stack.cs.model, host)
    assert cloud.listClusters(id=second.id)["cluster"][0]["resourcedetails"] == {
        "sp.cluster.id": stack.sp.emulator.cluster_key}

    orchestrator.listener_records(stack.cs.model, host, "3", "lab.x")
    assert cloud.listClusters(id=second.id)["cluster"][0]["resourcedetails"] == {"sp.cluster.id": "lab.x"}
    orchestrator.listener_records(stack.cs.model, host, "3", None)
    assert cloud.listClusters(id=second.id)["cluster"][0]["resourcedetails"] == {}


def test_recorded_cluster_id_of_the_pools_own_cluster_keeps_volumes_at_home(
        stack: LocalStack, cloud: cs.CloudStack) -> None:  # noqa: F811
    """With `sp.cluster.id` recorded by the host listener (the pool endpoint's own SP_CLUSTER_ID),
    a VM's volumes and its template's cache are made as with no setting: through the pool's
    endpoint, no `RemoteCommand/`, the cache under its usual name."""
    cluster = cloud.listClusters()["cluster"][0]
    assert cluster["resourcedetails"]["sp.cluster.id"] == stack.sp.emulator.cluster_key
    tpl = template(cloud)
    with_image(stack, tpl)
    vm = deploy(cloud, tpl, "home")
    pool = stack.ctx.pool(stack.pool_id())
    assert spclusters.target(stack.ctx, pool, cluster["id"]).home
    assert stack.sp.model.by_name.get(templates.cache_name(tpl["id"], pool))
    assert not [n for n in stack.sp.model.by_name if n.endswith("." + stack.sp.emulator.cluster_key)]
    for vol in volumes_of(cloud, vm["id"]):
        assert vol["path"].split("/")[3] in stack.sp.model.objects
    # The cache's create showed the endpoint's own id: the next VMs need no look at its clusters.
    assert stack.ctx.conn(pool).home_cluster == stack.sp.emulator.cluster_key
    looks = stack.sp.calls["ClustersList"]
    deploy(cloud, tpl, "home-2")
    assert stack.sp.calls["ClustersList"] == looks


def test_a_host_with_another_hosts_client_id_is_refused(stack: LocalStack, cloud: cs.CloudStack) -> None:  # noqa: F811
    """A new host whose storpool.conf repeats kvm1's SP_OURID: the listener's call fails naming
    `client_id`, and CloudStack records nothing for it."""
    from integration.cloudstack_sim import orchestrator
    from integration.cloudstack_sim.plugin_calls import PluginError

    dup = stack.cs.model.add_host("kvm-dup", "127.0.0.1")
    kvm1 = str(cloud.listHosts(type="Routing", name="kvm1")["host"][0]["id"])
    stack._start_agent(dup.id, dup.name, stack.agents[kvm1].client_id)
    with pytest.raises(PluginError, match="client_id"):
        orchestrator.host_connected(stack.cs.model, dup.id)
    assert stack.cs.model.hosts[dup.id].parent is None



def test_encrypted_volume_calls(stack: LocalStack, cloud: cs.CloudStack) -> None:  # noqa: F811
    """VolumeOrchestrator gives a volume of an encrypting offering a passphrase; the plugin then
    gets CloudStack's StorPoolPrimaryDataStoreDriver flow: the volume 2 MiB larger, then
    SetVolumeEncryption on a host (a root disk with the template's copy on the pool as source)."""
    tpl = template(cloud)
    with_image(stack, tpl)
    pool = stack.pool_id("storpool-primary")
    svc = cloud.createServiceOffering(name="enc", cpunumber=1, cpuspeed=1000, memory=256,
                                      encryptroot=True)["serviceoffering"]
    disk = cloud.createDiskOffering(name="enc-disk", disksize=1, encrypt=True)["diskoffering"]
    vms: list[dict[str, Any]] = []
    deployed = calls_during(stack, lambda: vms.append(cloud.deployVirtualMachine(
        zoneid=tpl["zoneid"], templateid=tpl["id"], serviceofferingid=svc["id"], diskofferingid=disk["id"],
        name="enc")["virtualmachine"]))
    assert [op for op, _ in deployed] == ["cache_template", "create_volume", "set_volume_encryption", "volume_attached",
                                         "create_volume", "set_volume_encryption", "volume_attached", "hand_over_vm"]
    root, data = volumes_of(cloud, vms[0]["id"])
    fill, root_create, root_enc = (args for _, args in deployed[:3])
    data_create, data_enc = deployed[4][1], deployed[5][1]
    cache = templates.cached(stack.ctx, pool, tpl["id"])
    assert fill["template_uuid"] == tpl["id"] and cache is not None
    assert root_create == {"pool": pool, "volume_uuid": root["id"], "size": tpl["size"], "volume_type": "ROOT",
                           "encrypted": True, "service_offering_id": svc["id"]}
    assert root_enc == {"volume_uuid": root["id"], "passphrase": stack.cs.model.volumes[root["id"]].passphrase,
                        "source_path": f"/dev/storpool-byid/{cache.global_id}"}
    assert data_create == {"pool": pool, "volume_uuid": data["id"], "size": 1 << 30, "volume_type": "DATADISK",
                           "encrypted": True, "disk_offering_id": disk["id"]}
    assert data_enc == {"volume_uuid": data["id"], "passphrase": stack.cs.model.volumes[data["id"]].passphrase}
    assert "'***'" in repr(root_enc) and str(stack.cs.model.volumes[root["id"]].passphrase) not in repr(deployed)

    # A snapshot of an encrypted volume tells the plugin so.
    stack.set_bypass(True, wait=True)
    take = calls_during(stack, lambda: cloud.createSnapshot(volumeid=data["id"]))
    assert [op for op, _ in take] == ["take_snapshot"] and take[0][1]["encrypted"] is True
