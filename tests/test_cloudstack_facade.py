"""The CloudStack facade against the simulator, over real HTTP with the real `cs` client."""

from __future__ import annotations

import socket

import pytest

from cloudstack_storpool import cloudstack as facade
from cloudstack_storpool.cloudstack import CloudStackClient
from cloudstack_storpool.errors import CloudStackError, ProjectError
from integration.cloudstack_sim.testing import SimHandle


def by_name(items, name):  # type: ignore[no-untyped-def]
    return next(i for i in items if i.name == name)


def test_hosts_carry_storpool_client_id_and_agent_port(cs_sim: SimHandle) -> None:
    client = cs_sim.client()
    hosts = client.hosts()
    assert {h.name: h.sp_client_id for h in hosts} == {"kvm1": 1, "kvm2": 2}
    kvm1 = by_name(hosts, "kvm1")
    assert kvm1.ip_address == "127.0.0.1" and kvm1.state == "Up" and kvm1.agent_port is None
    cs_sim.model.set_host_details(kvm1.id, **{"agent.port": "18259"})
    again = client.host(kvm1.id)
    assert again is not None and again.agent_port == 18259
    extra = cs_sim.model.add_host("kvm3", sp_ourid=None)
    assert client.host(extra.id).sp_client_id is None  # type: ignore[union-attr]
    cluster = client.clusters()[0]
    assert len(client.hosts(cluster_id=cluster.id)) == 3
    assert client.host("6a1c7d56-0000-4000-8000-000000000000") is None


def test_client_id_from_the_host_parent_first(cs_sim: SimHandle) -> None:
    """Where the Java plugin's host listener keeps it (`parent`), then the `SP_OURID` detail."""
    client = cs_sim.client()
    java = cs_sim.model.add_host("kvm-java", sp_ourid=None, parent="17")
    both = cs_sim.model.add_host("kvm-both", sp_ourid=5, parent="9")
    odd = cs_sim.model.add_host("kvm-odd", sp_ourid=6, parent="0")  # not a client id: the detail decides
    assert {h.name: h.sp_client_id for h in client.hosts() if h.id in (java.id, both.id, odd.id)} == {
        "kvm-java": 17, "kvm-both": 9, "kvm-odd": 6}


def test_vms_placement_tags_and_accounts(cs_sim: SimHandle) -> None:
    client = cs_sim.client()
    vms = client.vms()
    assert {v.name for v in vms} == {"vm1", "vm2", "user-vm"}  # listall: other accounts too
    vm1, vm2 = by_name(vms, "vm1"), by_name(vms, "vm2")
    assert vm1.state == "Running" and vm1.host_id and vm1.instance_name.startswith("i-")
    assert vm2.state == "Stopped" and vm2.host_id is None and vm2.last_host_id
    assert vm2.placement_host_id == vm2.last_host_id
    kvm2 = by_name(client.hosts(), "kvm2")
    cs_sim.model.move_vm(vm1.id, kvm2.id)
    cs_sim.model.set_vm_tag(vm1.id, "vc-policy", "gold-policy")
    moved = client.vm(vm1.id)
    assert moved is not None and moved.host_id == kvm2.id and moved.tags == {"vc-policy": "gold-policy"}
    assert [v.id for v in client.vms(tags={"vc-policy": "gold-policy"})] == [vm1.id]
    assert client.tags("UserVm", vm1.id) == {"vc-policy": "gold-policy"}
    assert {v.name for v in client.vms(host_id=kvm2.id)} == {"vm1", "user-vm"}
    cs_sim.model.stop_vm(vm1.id)
    stopped = client.vm(vm1.id)
    assert stopped is not None and stopped.host_id is None and stopped.last_host_id == kvm2.id
    cs_sim.model.delete_vm(vm1.id)
    assert client.vm(vm1.id) is None


def test_volumes(cs_sim: SimHandle) -> None:
    client = cs_sim.client()
    vm1 = by_name(client.vms(), "vm1")
    off = by_name(client.disk_offerings(), "sp-iops-500")
    pool = client.storage_pools()[0]
    added = cs_sim.model.add_volume("data1", 10 << 30, vm_id=vm1.id, storage_id=pool.id,
                                    disk_offering_id=off.id, path="/dev/storpool-byid/d.n.abc")
    vols = client.volumes(vm_id=vm1.id)
    assert sorted(v.type for v in vols) == ["DATADISK", "ROOT"]
    data = client.volume(added.id)
    assert data is not None
    assert (data.path, data.size, data.max_iops, data.min_iops, data.storage_id, data.device_id,
            data.disk_offering_id) == ("/dev/storpool-byid/d.n.abc", 10 << 30, 500, 100, pool.id, 1, off.id)
    assert client.volume("3b7c0000-0000-4000-8000-000000000000") is None


def test_offerings(cs_sim: SimHandle) -> None:
    client = cs_sim.client()
    offs = client.disk_offerings()
    assert by_name(offs, "sp-nvme-template").sp_template == "nvme"
    assert by_name(offs, "sp-gold").sp_qos_class == "gold"
    custom = by_name(offs, "sp-custom-iops")
    assert custom.customized_iops and custom.max_iops is None
    assert by_name(offs, "sp-iops-500").max_iops == 500
    sos = client.service_offerings()
    assert by_name(sos, "hybrid-root").sp_template == "hybrid"
    assert by_name(sos, "medium-iops").max_iops == 1000
    one = client.disk_offering(custom.id)
    assert one == custom


def test_templates_and_gc_question(cs_sim: SimHandle) -> None:
    client = cs_sim.client()
    tiny = by_name(client.templates(), "tiny-linux")
    assert tiny.format == "QCOW2" and tiny.ready and tiny.size == 64 << 20
    added = cs_sim.model.add_template("to-go", 1 << 20)
    assert client.template(added.id) is not None
    cs_sim.model.delete_template(added.id)
    assert client.template(added.id) is None
    assert added.id not in {t.id for t in client.templates()}
    [event] = [e for e in client.events("TEMPLATE.DELETE") if e.resource_id == added.id]
    assert event.created is not None and event.type == "TEMPLATE.DELETE"


def test_snapshots_and_vm_snapshots(cs_sim: SimHandle) -> None:
    client = cs_sim.client()
    vm1 = by_name(client.vms(), "vm1")
    root = client.volumes(vm_id=vm1.id)[0]
    snap = cs_sim.model.add_snapshot(root.id, "s1")
    vms1 = cs_sim.model.add_vm_snapshot(vm1.id, "group1")
    assert [s.id for s in client.snapshots(volume_id=root.id)] == [snap.id]
    got = client.snapshot(snap.id)
    assert got is not None and got.volume_id == root.id
    vsnap = client.vm_snapshot(vms1.id)
    assert vsnap is not None and vsnap.vm_id == vm1.id and vsnap.current and vsnap.type == "Disk"
    assert client.vm_snapshots(vm_id=vm1.id)[0].name == "group1"
    cs_sim.model.delete_vm_snapshot(vms1.id)
    assert client.vm_snapshot(vms1.id) is None


def test_configuration_exact_name_and_scopes(cs_sim: SimHandle) -> None:
    client = cs_sim.client()
    # listConfigurations' name is a substring filter; configuration() picks the exact one.
    assert len(client.configurations("storpool.heartbeat")) >= 3
    conf = client.configuration("storpool.heartbeat.interval")
    assert conf is not None and conf.value == "10" and conf.default == "10" and conf.is_dynamic
    assert client.configuration("storpool.heartbeat") is None
    pool = client.storage_pools()[0]
    client.update_configuration("storpool.delete.after.interval", "600", storage_id=pool.id)
    scoped = client.configuration("storpool.delete.after.interval", storage_id=pool.id)
    assert scoped is not None and scoped.value == "600" and scoped.scope == "storagepool"
    assert client.configuration("storpool.delete.after.interval").value == "0"  # type: ignore[union-attr]
    with pytest.raises(facade.CloudStackParamError) as info:
        client.update_configuration("no.such.thing", "1")
    assert info.value.errorcode == 431 and info.value.cserrorcode == 4350
    assert "no.such.thing" in info.value.errortext
    assert isinstance(info.value, CloudStackError) and isinstance(info.value, ProjectError)


def test_zones_clusters_pools(cs_sim: SimHandle) -> None:
    client = cs_sim.client()
    [zone] = client.zones()
    [cluster] = client.clusters(zone_id=zone.id)
    assert cluster.zone_id == zone.id and cluster.hypervisor == "KVM"
    [pool] = client.storage_pools(zone_id=zone.id)
    assert pool.provider == "StorPool" and pool.scope == "ZONE"
    assert client.zone(zone.id) == zone and client.cluster(cluster.id) == cluster
    assert client.storage_pool(pool.id) == pool


def test_wrong_secret_is_auth_error_without_the_secret(cs_sim: SimHandle) -> None:
    client = CloudStackClient(cs_sim.endpoint, cs_sim.key, "a-wrong-secret-value")
    with pytest.raises(facade.CloudStackAuthError) as info:
        client.zones()
    assert info.value.errorcode == 401
    assert "a-wrong-secret-value" not in str(info.value) and "a-wrong-secret-value" not in repr(client)


def test_unreachable_is_its_own_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = CloudStackClient(f"http://127.0.0.1:{port}/client/api", "k", "very-secret-thing", timeout=2)
    with pytest.raises(facade.CloudStackUnreachable) as info:
        client.zones()
    assert "very-secret-thing" not in str(info.value)
    assert "signature" not in str(info.value)


def test_from_config_reads_the_environment(cs_sim: SimHandle, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSTACK_ENDPOINT", cs_sim.endpoint)
    monkeypatch.setenv("CLOUDSTACK_KEY", cs_sim.key)
    monkeypatch.setenv("CLOUDSTACK_SECRET", cs_sim.secret)
    monkeypatch.setenv("CLOUDSTACK_METHOD", "post")
    client = CloudStackClient.from_config()
    assert client.method == "post"
    assert client.zones()[0].name == "zone1"
    assert cs_sim.model.calls[-1].method == "POST"


def test_from_config_without_anything_is_a_config_error(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("CLOUDSTACK_ENDPOINT", "CLOUDSTACK_KEY", "CLOUDSTACK_SECRET", "CLOUDSTACK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(facade.CloudStackConfigError, match="CLOUDSTACK_ENDPOINT"):
        CloudStackClient.from_config()


def test_sign_encodes_like_the_server() -> None:
    assert facade.server_encode("a~b c+d*") == "a%7Eb%20c%2Bd*"
    assert facade.sign({"b": "x", "a": "~"}, "s") == facade.sign({"a": "~", "b": "x", "signature": "z"}, "s")


def test_method_is_checked() -> None:
    with pytest.raises(ValueError, match="get or post"):
        CloudStackClient("http://127.0.0.1:1/client/api", "k", "s", method="put")
