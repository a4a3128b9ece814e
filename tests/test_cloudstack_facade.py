"""The CloudStack facade against the simulator, over real HTTP with the real `cs` client."""

from __future__ import annotations

import socket

import cs
import pytest

from cloudstack_storpool.cloudstack.client import CloudStackClient
from cloudstack_storpool.cloudstack.records import (
    Configuration,
    DiskOffering,
    Host,
    ServiceOffering,
    VirtualMachine,
    Volume,
    Zone,
)
from cloudstack_storpool.cloudstack.signing import server_encode, sign
from cloudstack_storpool.errors import (
    CloudStackAuthError,
    CloudStackConfigError,
    CloudStackError,
    CloudStackJobError,
    CloudStackNoAnswer,
    CloudStackParamError,
    CloudStackTimeout,
    CloudStackUnreachable,
    ProjectError,
)
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


def test_client_id_from_the_sp_ourid_detail_never_the_host_parent(cs_sim: SimHandle) -> None:
    """`host.parent`, where the Java plugin's host listener keeps the client id, is not in listHosts
    (HostResponse has no such field): only the `SP_OURID` detail is, and only with details=all."""
    client = cs_sim.client()
    java = cs_sim.model.add_host("kvm-java", sp_ourid=None, parent="17")
    both = cs_sim.model.add_host("kvm-both", sp_ourid=5, parent="9")
    assert {h.name: h.sp_client_id for h in client.hosts() if h.id in (java.id, both.id)} == {
        "kvm-java": None, "kvm-both": 5}
    api = cs.CloudStack(endpoint=cs_sim.endpoint, key=cs_sim.key, secret=cs_sim.secret)
    raw = api.listHosts(id=both.id)["host"][0]
    assert "parent" not in raw and raw["details"]["SP_OURID"] == "5"
    assert "details" not in api.listHosts(id=both.id, details="min")["host"][0]


def test_vms_placement_tags_and_accounts(cs_sim: SimHandle) -> None:
    client = cs_sim.client()
    vms = client.vms()
    assert {v.name for v in vms} == {"vm1", "vm2", "user-vm"}  # listall: other accounts too
    vm1, vm2 = by_name(vms, "vm1"), by_name(vms, "vm2")
    assert vm1.state == "Running" and vm1.host_id and vm1.instance_name.startswith("i-")
    assert vm2.state == "Stopped" and vm2.host_id is None and vm2.placement_host_id is None
    assert vm1.placement_host_id == vm1.host_id
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
    assert stopped is not None and stopped.host_id is None and stopped.placement_host_id is None
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
    assert len(client.configurations("kvm.ha.activity.check")) >= 3
    conf = client.configuration("kvm.ha.activity.check.interval")
    assert conf is not None and conf.value == "60" and conf.default == "60" and conf.is_dynamic
    assert client.configuration("kvm.ha.activity.check") is None
    pool = client.storage_pools()[0]
    client.update_configuration("storpool.delete.after.interval", "600", storage_id=pool.id)
    scoped = client.configuration("storpool.delete.after.interval", storage_id=pool.id)
    assert scoped is not None and scoped.value == "600" and scoped.scope == "storagepool"
    assert client.configuration("storpool.delete.after.interval").value == "0"  # type: ignore[union-attr]
    with pytest.raises(CloudStackParamError) as info:
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
    with pytest.raises(CloudStackAuthError) as info:
        client.zones()
    assert info.value.errorcode == 401
    assert "a-wrong-secret-value" not in str(info.value) and "a-wrong-secret-value" not in repr(client)


def test_unreachable_is_its_own_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = CloudStackClient(f"http://127.0.0.1:{port}/client/api", "k", "very-secret-thing", timeout=2)
    with pytest.raises(CloudStackUnreachable) as info:
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
    with pytest.raises(CloudStackConfigError, match="CLOUDSTACK_ENDPOINT"):
        CloudStackClient.from_config()


def test_sign_encodes_like_the_server() -> None:
    assert server_encode("a~b c+d*") == "a%7Eb%20c%2Bd*"
    assert sign({"b": "x", "a": "~"}, "s") == sign({"a": "~", "b": "x", "signature": "z"}, "s")


def test_method_is_checked() -> None:
    with pytest.raises(ValueError, match="get or post"):
        CloudStackClient("http://127.0.0.1:1/client/api", "k", "s", method="put")


def test_no_answer_is_not_an_answered_error() -> None:
    """A caller catching "CloudStack said no" must not swallow "CloudStack did not answer"."""
    assert not issubclass(CloudStackUnreachable, CloudStackError)
    assert not issubclass(CloudStackTimeout, CloudStackError)
    assert not issubclass(CloudStackConfigError, CloudStackError)
    assert issubclass(CloudStackUnreachable, CloudStackNoAnswer) and issubclass(CloudStackTimeout, CloudStackNoAnswer)
    assert issubclass(CloudStackJobError, CloudStackError) and issubclass(CloudStackParamError, CloudStackError)


def test_records_are_built_from_their_field_tables() -> None:
    host = Host.from_api({
        "id": "h1", "name": "kvm1", "ipaddress": "10.0.0.1", "state": "Up", "resourcestate": "Enabled",
        "details": {"SP_OURID": " 7 ", "agent.port": "18259"}, "hostha": {"hastate": "Available"},
    })
    assert (host.sp_client_id, host.agent_port, host.ha_state, host.cluster_id) == (7, 18259, "Available", None)
    assert Host.from_api({"id": "h2", "hostha": "not an object"}).ha_state is None
    vm = VirtualMachine.from_api({"id": "v", "tags": [{"key": "cvm", "value": "x"}, {"value": "no key"}],
                                  "hostid": "h1"})
    assert vm.tags == {"cvm": "x"} and vm.placement_host_id == "h1"
    assert VirtualMachine.from_api({"id": "v", "lasthostid": "h1", "hostid": ""}).placement_host_id is None
    # Disk and service offerings read their StorPool details from differently named fields.
    assert DiskOffering.from_api({"id": "d", "details": {"SP_TEMPLATE": "ssd"}}).sp_template == "ssd"
    svc = ServiceOffering.from_api({"id": "s", "serviceofferingdetails": {"SP_QOSCLASS": "gold"}, "memory": "512"})
    assert svc.sp_qos_class == "gold" and svc.memory == 512 and svc.details == {"SP_QOSCLASS": "gold"}
    conf = Configuration.from_api({"name": "x", "value": "", "isdynamic": "true"})
    assert conf.value == "" and conf.default is None and conf.is_dynamic
    vol = Volume.from_api({"id": "vol", "size": "bad", "miniops": "100"})
    assert vol.size == 0 and vol.min_iops == 100 and vol.path is None
    with pytest.raises(ValueError, match="Zone without 'id'"):
        Zone.from_api({"name": "zone1"})


@pytest.mark.parametrize(("cause", "status"), [
    (CloudStackParamError("listVolumes", "bad id", errorcode=431), 502),
    (CloudStackUnreachable("listVolumes", "cannot reach http://cs/client/api"), 503),
    (CloudStackTimeout("generateAlert", "async job 7 did not finish in time", jobid="7"), 503),
])
def test_callers_keep_answered_and_unanswered_apart(cause: Exception, status: int) -> None:
    """An error rebuilt after an undo keeps its kind, so the service still tells "retry" (503)
    from "CloudStack said no" (502)."""
    from cloudstack_storpool.driver.snapshots import undo_and_fail
    from cloudstack_storpool.service.app import error_response

    undone: list[bool] = []
    rebuilt = undo_and_fail("taking the snapshot failed", cause, "the snapshot was removed",
                            lambda: undone.append(True))
    assert undone == [True] and "the snapshot was removed" in str(rebuilt)
    assert isinstance(rebuilt, CloudStackNoAnswer) == isinstance(cause, CloudStackNoAnswer)
    assert error_response(rebuilt)[0] == error_response(cause)[0] == status
