"""The management commands CloudStack's own StorPool tests call before and around storage:
domains, accounts, users, roles, security groups, offerings, resource details, pool tags, OS
types, API discovery, migration targets, snapshot details. Each against CloudStack's behaviour
(AccountManagerImpl, SecurityGroupManagerImpl, ConfigurationManagerImpl,
ResourceMetaDataManagerImpl, StorageManagerImpl, ApiDiscoveryServiceImpl), through the stock
`cs` client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cs
import pytest

from integration.cloudstack_sim.testing import SimHandle, run_simulator


def client(sim: SimHandle) -> cs.CloudStack:
    return cs.CloudStack(sim.endpoint, sim.key, sim.secret, fetch_result=True, poll_interval=0.02, job_timeout=10)


def refused(call: Any, **params: Any) -> tuple[int, str]:
    with pytest.raises(cs.CloudStackApiException) as info:
        call(**params)
    return info.value.response.status_code, str(info.value.error["errortext"])


def job(sim: SimHandle, job_id: str) -> dict[str, Any]:
    """The job's final queryAsyncJobResult answer."""
    raw = cs.CloudStack(sim.endpoint, sim.key, sim.secret)
    while True:
        answer: dict[str, Any] = raw.queryAsyncJobResult(jobid=job_id)
        if answer["jobstatus"] != 0:
            return answer


ACCOUNT = {"email": "u@example.org", "firstname": "Ann", "lastname": "Smith", "password": "password"}


# ---------------------------------------------------------------- domains, accounts, roles, users


def test_the_zone_is_a_core_zone_with_security_groups(cs_sim: SimHandle) -> None:
    zone = client(cs_sim).listZones()["zone"][0]
    assert (zone["type"], zone["securitygroupsenabled"], zone["allocationstate"]) == ("Core", True, "Enabled")


def test_one_root_domain(cs_sim: SimHandle) -> None:
    domains = client(cs_sim).listDomains()["domain"]
    assert [(d["name"], d["level"], d["path"]) for d in domains] == [("ROOT", 0, "ROOT")]
    assert client(cs_sim).listDomains(name="nope") == {}


def test_default_roles_by_uuid_and_by_internal_id(cs_sim: SimHandle) -> None:
    cloud = client(cs_sim)
    admin = cloud.listRoles(name="Root Admin")["role"]
    assert [(r["name"], r["type"]) for r in admin] == [("Root Admin", "Admin")]
    assert {r["type"] for r in cloud.listRoles()["role"]} == {"Admin", "ResourceAdmin", "DomainAdmin", "User"}
    # A uuid parameter also takes the internal id: Marvin's tests create accounts with roleid=1.
    acc = cloud.createAccount(username="ann", roleid="1", **ACCOUNT)["account"]
    assert (acc["rolename"], acc["roletype"], acc["accounttype"]) == ("Root Admin", "Admin", 1)
    assert acc["roleid"] == admin[0]["id"]


def test_create_account_makes_user_and_default_security_group(cs_sim: SimHandle) -> None:
    cloud = client(cs_sim)
    domain = cloud.listDomains()["domain"][0]["id"]
    acc = cloud.createAccount(username="bob", accounttype=0, domainid=domain, **ACCOUNT)["account"]
    assert acc["name"] == "bob" and acc["domainid"] == domain and acc["accounttype"] == 0
    assert [u["username"] for u in acc["user"]] == ["bob"]
    assert [a["name"] for a in cloud.listAccounts(name="bob")["account"]] == ["bob"]
    users = cloud.listUsers(account="bob", domainid=domain)["user"]
    assert [(u["username"], u["firstname"], u["accountid"]) for u in users] == [("bob", "Ann", acc["id"])]
    groups = cloud.listSecurityGroups(account="bob", domainid=domain)["securitygroup"]
    assert [(g["name"], g["account"], g["ingressrule"]) for g in groups] == [("default", "bob", [])]


def test_create_account_refuses_a_taken_name_and_a_missing_parameter(cs_sim: SimHandle) -> None:
    cloud = client(cs_sim)
    cloud.createAccount(username="carl", roleid="4", **ACCOUNT)
    status, text = refused(cloud.createAccount, username="carl", roleid="4", **ACCOUNT)
    assert status == 431 and "already exists" in text
    status, text = refused(cloud.createAccount, username="dora", roleid="4", email="x@y", firstname="a",
                           lastname="b")
    assert (status, text) == (431, "Unable to execute API command createaccount due to missing parameter password")
    assert refused(cloud.createAccount, username="eve", roleid="99", **ACCOUNT)[0] == 431


def test_resources_of_an_unknown_account_are_refused(cs_sim: SimHandle) -> None:
    status, text = refused(client(cs_sim).listSecurityGroups, account="nobody")
    assert status == 431 and "Unable to find account nobody" in text


def test_system_accounts_cannot_be_deleted(cs_sim: SimHandle) -> None:
    cloud = client(cs_sim)
    admin = cloud.listAccounts(name="admin")["account"][0]
    with pytest.raises(cs.CloudStackException):
        cloud.deleteAccount(id=admin["id"])
    assert cloud.listAccounts(name="admin")["count"] == 1


def test_delete_account_is_a_job_and_the_account_is_gone(cs_sim: SimHandle) -> None:
    cloud = client(cs_sim)
    acc = cloud.createAccount(username="fay", roleid="4", **ACCOUNT)["account"]
    raw = cs.CloudStack(cs_sim.endpoint, cs_sim.key, cs_sim.secret).deleteAccount(id=acc["id"])
    assert list(raw) == ["jobid"]  # an async command that creates nothing answers only its job
    done = job(cs_sim, raw["jobid"])
    assert done["jobstatus"] == 1 and done["jobresult"] == {"success": True}
    assert cloud.listAccounts(name="fay") == {}
    assert cloud.listUsers(username="fay") == {}


# ---------------------------------------------------------------- security groups


def test_authorize_ingress_is_a_job_that_answers_the_group_with_its_rules(cs_sim: SimHandle) -> None:
    cloud = client(cs_sim)
    cloud.createAccount(username="gil", roleid="4", **ACCOUNT)
    group = cloud.listSecurityGroups(account="gil")["securitygroup"][0]
    raw = cs.CloudStack(cs_sim.endpoint, cs_sim.key, cs_sim.secret).authorizeSecurityGroupIngress(
        securitygroupid=group["id"], protocol="TCP", startport=22, endport=22, cidrlist="0.0.0.0/0")
    assert list(raw) == ["jobid"]
    answer = cloud.authorizeSecurityGroupIngress(securitygroupid=group["id"], protocol="ICMP", icmptype=-1,
                                                 icmpcode=-1, cidrlist="0.0.0.0/0")
    rules = answer["securitygroup"]["ingressrule"]
    assert [(r["protocol"], r.get("startport"), r.get("icmptype"), r["cidr"]) for r in rules] == [
        ("tcp", 22, None, "0.0.0.0/0"), ("icmp", None, -1, "0.0.0.0/0")]
    listed = cloud.listSecurityGroups(id=group["id"])["securitygroup"][0]
    assert [r["ruleid"] for r in listed["ingressrule"]] == [r["ruleid"] for r in rules]
    status, text = refused(cloud.authorizeSecurityGroupIngress, securitygroupid=group["id"], protocol="tcp",
                           startport=30, endport=20, cidrlist="0.0.0.0/0")
    assert status == 431 and "Invalid port range" in text


# ---------------------------------------------------------------- offerings


def test_service_offering_made_listed_and_deleted(cs_sim: SimHandle) -> None:
    cloud = client(cs_sim)
    made = cloud.createServiceOffering(name="ssd", displaytext="SSD", cpunumber=1, cpuspeed=500, memory=512,
                                       storagetype="shared", tags=" ssd , fast", encryptroot=True,
                                       miniops=100, maxiops=200, hypervisorsnapshotreserve=200,
                                       serviceofferingdetails=[{"key": "SP_TEMPLATE", "value": "nvme"}])
    off = made["serviceoffering"]
    assert (off["storagetags"], off["encryptroot"], off["miniops"], off["maxiops"]) == ("ssd,fast", True, 100, 200)
    assert off["serviceofferingdetails"] == {"SP_TEMPLATE": "nvme"}
    assert cloud.listServiceOfferings(name="ssd")["serviceoffering"] == [off]
    assert cloud.deleteServiceOffering(id=off["id"]) == {"success": True}
    assert cloud.listServiceOfferings(name="ssd") == {}
    assert refused(cloud.deleteServiceOffering, id=off["id"])[0] == 431


def test_service_offering_rules(cs_sim: SimHandle) -> None:
    cloud = client(cs_sim)
    status, text = refused(cloud.createServiceOffering, name="x", cpunumber=1, cpuspeed=500, memory=512,
                           miniops=300, maxiops=200)
    assert (status, text) == (431, "The min IOPS must be less than or equal to the max IOPS.")
    status, _ = refused(cloud.createServiceOffering, name="x", cpunumber=1, memory=512)  # not all three
    assert status == 431
    custom = cloud.createServiceOffering(name="c", cpunumber=1, cpuspeed=500, memory=512, customizediops=True,
                                         miniops=100, maxiops=200)["serviceoffering"]
    assert custom["iscustomizediops"] is True and "miniops" not in custom  # customised: no fixed IOPS


def test_disk_offering_made_listed_and_deleted(cs_sim: SimHandle) -> None:
    cloud = client(cs_sim)
    off = cloud.createDiskOffering(name="Test-Small", displaytext="Small", disksize=5, tags="ssd", encrypt=True,
                                   details=[{"key": "SP_QOSCLASS", "value": "gold"}])["diskoffering"]
    assert (off["disksize"], off["tags"], off["encrypt"], off["details"]) == (5, "ssd", True, {"SP_QOSCLASS": "gold"})
    custom = cloud.createDiskOffering(name="Test-Custom", customized=True, customizediops=True)["diskoffering"]
    assert custom["iscustomized"] is True and custom["iscustomizediops"] is True
    assert {o["name"] for o in cloud.listDiskOfferings()["diskoffering"]} >= {"Test-Small", "Test-Custom"}
    cloud.deleteDiskOffering(id=off["id"])
    assert cloud.listDiskOfferings(name="Test-Small") == {}


def test_disk_offering_size_rules(cs_sim: SimHandle) -> None:
    cloud = client(cs_sim)
    assert refused(cloud.createDiskOffering, name="x") == (431, "Disksize is required for a non-customized disk offering")
    assert refused(cloud.createDiskOffering, name="x", customized=True, disksize=5) == (
        431, "Disksize is not allowed for a customized disk offering")
    assert refused(cloud.createDiskOffering, name="x", disksize=0) == (431, "Please specify a disk size of at least 1 GB.")


def test_resource_details_of_an_offering_are_its_details(cs_sim: SimHandle) -> None:
    """What the StorPool plugin reads (SP_TEMPLATE, SP_QOSCLASS) is the offering's details."""
    cloud = client(cs_sim)
    off = cloud.createDiskOffering(name="tier1", customized=True)["diskoffering"]
    cloud.addResourceDetail(resourceid=off["id"], resourcetype="DiskOffering",
                            details=[{"key": "SP_TEMPLATE", "value": "nvme"}, {"key": "SP_QOSCLASS", "value": "t1"}],
                            fordisplay=True)
    listed = cloud.listResourceDetails(resourceid=off["id"], resourcetype="DiskOffering", key="SP_QOSCLASS")
    assert [(d["key"], d["value"], d["resourceid"]) for d in listed["resourcedetail"]] == [
        ("SP_QOSCLASS", "t1", off["id"])]
    assert cloud.listDiskOfferings(id=off["id"])["diskoffering"][0]["details"] == {
        "SP_TEMPLATE": "nvme", "SP_QOSCLASS": "t1"}
    cloud.removeResourceDetail(resourceid=off["id"], resourcetype="DiskOffering", key="SP_TEMPLATE")
    assert cloud.listDiskOfferings(id=off["id"])["diskoffering"][0]["details"] == {"SP_QOSCLASS": "t1"}
    status, text = refused(cloud.addResourceDetail, resourceid="no-such", resourcetype="DiskOffering",
                           details=[{"key": "k", "value": "v"}])
    assert status == 431 and "Unable to find resource by id no-such" in text


# ---------------------------------------------------------------- pools, OS types, discovery, VMs


def test_update_storage_pool_tags(cs_sim: SimHandle) -> None:
    cloud = client(cs_sim)
    pool = cloud.listStoragePools()["storagepool"][0]
    assert pool["tags"] == pool["name"]  # as StorPool's lifecycle registers a pool without tags
    assert cloud.updateStoragePool(id=pool["id"], tags="ssd, fast")["storagepool"]["tags"] == "ssd,fast"
    assert cloud.listStoragePools(id=pool["id"])["storagepool"][0]["tags"] == "ssd,fast"


def test_list_clusters_answers_each_clusters_details(cs_sim: SimHandle) -> None:
    """ClusterResponse.resourcedetails (ApiResponseHelper.createClusterResponse): every row of the
    cluster's details, `{}` when it has none. A cluster-scoped setting's value is such a row
    (updateConfiguration with `clusterid` writes the cluster details); credentials are left out."""
    cloud = client(cs_sim)
    cluster = cloud.listClusters()["cluster"][0]
    assert cluster["resourcedetails"] == {}
    cloud.updateConfiguration(name="sp.cluster.id", value="abcd.b", clusterid=cluster["id"])
    cs_sim.model.set_cluster_detail(cluster["id"], "password", "secret")
    cs_sim.model.set_cluster_detail(cluster["id"], "username", "root")
    shown = cloud.listClusters(id=cluster["id"])["cluster"]
    assert [c["resourcedetails"] for c in shown] == [{"sp.cluster.id": "abcd.b"}]
    # A global value is no cluster's detail.
    cloud.updateConfiguration(name="sp.cluster.endpoint", value="SP_API_HTTP=10.0.0.1:81;SP_AUTH_TOKEN=t")
    assert cloud.listClusters(id=cluster["id"])["cluster"][0]["resourcedetails"] == {"sp.cluster.id": "abcd.b"}


def test_list_os_types(cs_sim: SimHandle) -> None:
    cloud = client(cs_sim)
    every = cloud.listOsTypes()["ostype"]
    linux = cloud.listOsTypes(description="Other Linux (64-bit)")["ostype"]
    assert [o["description"] for o in linux] == ["Other Linux (64-bit)"]
    assert cloud.listOsTypes(id=linux[0]["id"])["ostype"] == linux and len(every) > 1
    template = cloud.listTemplates(templatefilter="all")["template"][0]
    assert template["ostypeid"] == linux[0]["id"]


def test_list_apis_names_what_the_simulator_serves(cs_sim: SimHandle) -> None:
    cloud = client(cs_sim)
    apis = {a["name"]: a for a in cloud.listApis()["api"]}
    assert apis["deployVirtualMachine"]["isasync"] is True and apis["listZones"]["isasync"] is False
    assert "createAccount" in apis and "listApis" in apis
    assert [a["name"] for a in cloud.listApis(name="listZones")["api"]] == ["listZones"]
    assert refused(cloud.listApis, name="noSuchApi")[0] == 431


def test_vms_have_a_nic_with_their_own_address(cs_sim: SimHandle) -> None:
    vms = client(cs_sim).listVirtualMachines(listall=True)["virtualmachine"]
    nics = [vm["nic"][0] for vm in vms]
    assert all(n["ipaddress"].startswith("127.10.") for n in nics)
    assert len({n["ipaddress"] for n in nics}) == len(nics) and len({n["macaddress"] for n in nics}) == len(nics)
    assert {n["networkid"] for n in nics} == {nics[0]["networkid"]}


def test_find_hosts_for_migration(cs_sim: SimHandle) -> None:
    cloud = client(cs_sim)
    vm = cloud.listVirtualMachines(name="vm1")["virtualmachine"][0]
    hosts = cloud.findHostsForMigration(virtualmachineid=vm["id"])["host"]
    assert [h["name"] for h in hosts] == ["kvm2"] and hosts[0]["requiresStorageMotion"] is False
    stopped = cloud.listVirtualMachines(name="vm2")["virtualmachine"][0]
    assert refused(cloud.findHostsForMigration, virtualmachineid=stopped["id"])[0] == 431


def test_volume_snapshot_details_are_its_snapshot_details_rows(cs_sim: SimHandle) -> None:
    model = cs_sim.model
    vol = next(v for v in model.volumes.values() if v.type == "ROOT")
    snap = model.add_snapshot(vol.id, path="/dev/storpool-byid/abc.b.c")
    rows = client(cs_sim).getVolumeSnapshotDetails(snapshotid=snap.id)["apivolumesnapshotdetails"]
    assert [(r["snapshotDetailsName"], r["snapshotDetailsValue"]) for r in rows] == [
        (snap.id, "/dev/storpool-byid/abc.b.c")]


def test_extract_volume_of_a_stopped_vm_or_detached(cs_sim: SimHandle) -> None:
    """VolumeApiServiceImpl.extractVolume: HTTP_DOWNLOAD, only while no running VM uses it."""
    cloud = client(cs_sim)
    zone = cloud.listZones()["zone"][0]["id"]
    stopped = cloud.listVirtualMachines(name="vm2")["virtualmachine"][0]
    root = cloud.listVolumes(virtualmachineid=stopped["id"])["volume"][0]
    raw = cs.CloudStack(cs_sim.endpoint, cs_sim.key, cs_sim.secret).extractVolume(id=root["id"], zoneid=zone,
                                                                                  mode="HTTP_DOWNLOAD")
    assert list(raw) == ["jobid"]
    extracted = job(cs_sim, raw["jobid"])["jobresult"]["volume"]
    assert extracted["id"] == root["id"] and extracted["extractMode"] == "HTTP_DOWNLOAD" and extracted["url"]
    running = cloud.listVirtualMachines(name="vm1")["virtualmachine"][0]
    busy = cloud.listVolumes(virtualmachineid=running["id"])["volume"][0]
    status, text = refused(cloud.extractVolume, id=busy["id"], zoneid=zone, mode="HTTP_DOWNLOAD")
    assert status == 431 and "either detached or the VM should be in stopped state" in text
    assert refused(cloud.extractVolume, id=root["id"], zoneid=zone, mode="FTP")[0] == 431


def test_only_a_command_that_creates_answers_an_id_beside_its_job(cs_sim: SimHandle) -> None:
    """ApiServer.queueCommand: a BaseAsyncCreateCmd answers `id` and `jobid`, any other async
    command only `jobid`."""
    raw = cs.CloudStack(cs_sim.endpoint, cs_sim.key, cs_sim.secret)
    stopped = raw.listVirtualMachines(name="vm2")["virtualmachine"][0]
    assert list(raw.startVirtualMachine(id=stopped["id"])) == ["jobid"]
    offering = raw.listDiskOfferings(name="sp-small")["diskoffering"][0]
    zone = raw.listZones()["zone"][0]["id"]
    created = raw.createVolume(name="new", zoneid=zone, diskofferingid=offering["id"])
    assert sorted(created) == ["id", "jobid"]
    assert job(cs_sim, created["jobid"])["jobresult"]["volume"]["id"] == created["id"]


def test_accounts_groups_and_offerings_survive_a_restart(tmp_path: Path) -> None:
    """The state file keeps what these commands made (`--state`)."""
    state = tmp_path / "cs.json"
    with run_simulator(state=state) as sim:
        cloud = client(sim)
        cloud.createAccount(username="kim", roleid="4", **ACCOUNT)
        group = cloud.listSecurityGroups(account="kim")["securitygroup"][0]
        cloud.authorizeSecurityGroupIngress(securitygroupid=group["id"], protocol="tcp", startport=22, endport=22,
                                            cidrlist="0.0.0.0/0")
        off = cloud.createDiskOffering(name="kept", disksize=1, tags="ssd")["diskoffering"]
    with run_simulator(state=state) as again:
        cloud = client(again)
        assert [u["username"] for u in cloud.listUsers(account="kim")["user"]] == ["kim"]
        rules = cloud.listSecurityGroups(account="kim")["securitygroup"][0]["ingressrule"]
        assert [(r["protocol"], r["startport"]) for r in rules] == [("tcp", 22)]
        assert cloud.listDiskOfferings(id=off["id"])["diskoffering"][0]["tags"] == "ssd"
