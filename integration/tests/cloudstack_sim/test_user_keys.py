"""Users' own API keys and requests signed with them, against CloudStack's behaviour
(RegisterCmd, GetUserKeysCmd, AccountManagerImpl.createApiKeyAndSecretKey / getKeys / checkAccess,
ApiServer.verifyRequest and the role's API checker), through the stock `cs` client; and
`associateIpAddress` in the simulator's advanced zone with security groups (AssociateIPAddrCmd,
NetworkServiceImpl.allocateIP). Marvin's user API clients are made this way: `getUserKeys`, else
`registerUserKeys`, then every request signed with the user's keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cs
import pytest

from integration.cloudstack_sim import model as m
from integration.cloudstack_sim.network import guest_network_id
from integration.cloudstack_sim.testing import SimHandle, serve_api_port

CONFIG_WRITER = Path(__file__).resolve().parents[2] / "marvin_config.py"
ACCOUNT = {"email": "u@example.org", "firstname": "Ann", "lastname": "Smith", "password": "password"}


def admin(sim: SimHandle, endpoint: str | None = None) -> cs.CloudStack:
    return cs.CloudStack(endpoint or sim.endpoint, sim.key, sim.secret, fetch_result=True, poll_interval=0.02,
                         job_timeout=10)


def as_user(sim: SimHandle, keys: dict[str, str], endpoint: str | None = None) -> cs.CloudStack:
    return cs.CloudStack(endpoint or sim.endpoint, keys["apikey"], keys["secretkey"], fetch_result=True,
                         poll_interval=0.02, job_timeout=10)


def refused(call: Any, **params: Any) -> tuple[int, str]:
    with pytest.raises(cs.CloudStackApiException) as info:
        call(**params)
    return info.value.response.status_code, str(info.value.error["errortext"])


def new_user(sim: SimHandle, name: str) -> tuple[str, dict[str, str]]:
    """A `User`-role account (accounttype 0, as Marvin makes its test accounts) and its user's
    registered keys."""
    cloud = admin(sim)
    acc = cloud.createAccount(username=name, accounttype=0, **ACCOUNT)["account"]
    user_id = acc["user"][0]["id"]
    return user_id, cloud.registerUserKeys(id=user_id)["userkeys"]


def seeded_user(sim: SimHandle) -> dict[str, str]:
    """Keys for the seeded `user1` account's user (a `User`-role account owning `user-vm`)."""
    user = next(u for u in sim.model.users.values() if u.username == "user1")
    keys: dict[str, str] = admin(sim).registerUserKeys(id=user.id)["userkeys"]
    return keys


# ---------------------------------------------------------------------------- the keys


def test_a_user_without_keys_has_none_until_they_are_registered(cs_sim: SimHandle) -> None:
    cloud = admin(cs_sim)
    acc = cloud.createAccount(username="kim", accounttype=0, **ACCOUNT)["account"]
    user_id = acc["user"][0]["id"]
    assert cloud.getUserKeys(id=user_id) == {"userkeys": {}}  # nulls are left out of the answer
    made = cloud.registerUserKeys(id=user_id)["userkeys"]
    assert set(made) == {"apikey", "secretkey"} and made["apikey"] != made["secretkey"]
    assert len(made["apikey"]) == len(made["secretkey"]) == 86  # 64 bytes, URL-safe base64, unpadded
    assert cloud.getUserKeys(id=user_id)["userkeys"] == made


def test_the_keys_of_an_unknown_user_are_refused(cs_sim: SimHandle) -> None:
    status, text = refused(admin(cs_sim).getUserKeys, id="4e1c2f1a-0000-4000-8000-000000000000")
    assert status == 431 and "Invalid parameter id value=4e1c2f1a" in text
    assert refused(admin(cs_sim).registerUserKeys)[0] == 431  # id is required


def test_the_keys_are_never_in_the_state_file(tmp_path: Path) -> None:
    from integration.cloudstack_sim.testing import run_simulator

    with run_simulator(state=tmp_path / "cs.json") as sim:
        _, keys = new_user(sim, "kim")
        text = (tmp_path / "cs.json").read_text()
    assert keys["secretkey"] not in text and keys["apikey"] not in text


def test_registering_again_replaces_the_keys(cs_sim: SimHandle) -> None:
    user_id, old = new_user(cs_sim, "kim")
    assert as_user(cs_sim, old).listAccounts()["account"][0]["name"] == "kim"
    new = admin(cs_sim).registerUserKeys(id=user_id)["userkeys"]
    assert new != old
    assert refused(as_user(cs_sim, old).listAccounts)[0] == 401
    assert as_user(cs_sim, new).listAccounts()["account"][0]["name"] == "kim"


# ---------------------------------------------------------------------------- signed by a user


def test_a_request_signed_with_a_users_keys_runs_as_that_user(cs_sim: SimHandle) -> None:
    user = as_user(cs_sim, seeded_user(cs_sim))
    assert [a["name"] for a in user.listAccounts()["account"]] == ["user1"]
    assert [u["username"] for u in user.listUsers()["user"]] == ["user1"]
    # Its own VM only, even asking for all; admin's VMs are not its business.
    own = [v["name"] for v in user.listVirtualMachines(listall=True)["virtualmachine"]]
    assert own == ["user-vm"]
    assert {v["account"] for v in user.listVolumes(listall=True)["volume"]} == {"user1"}
    groups = user.listSecurityGroups()["securitygroup"]
    assert [(g["name"], g["account"]) for g in groups] == [("default", "user1")]
    # The admin's keys still see everything with listall.
    assert len(admin(cs_sim).listVirtualMachines(listall=True)["virtualmachine"]) == 3


def test_a_wrong_secret_with_a_users_key_is_refused(cs_sim: SimHandle) -> None:
    _, keys = new_user(cs_sim, "kim")
    status, text = refused(as_user(cs_sim, {**keys, "secretkey": keys["secretkey"][::-1]}).listAccounts)
    assert (status, text) == (401, "unable to verify user credentials and/or request signature")


def test_a_user_may_not_call_an_admins_command(cs_sim: SimHandle) -> None:
    _, keys = new_user(cs_sim, "kim")
    user = as_user(cs_sim, keys)
    for command in (user.listHosts, user.listStoragePools, user.listConfigurations):
        assert refused(command) == (401, "unable to verify user credentials and/or request signature")
    assert refused(user.createAccount, username="eve", accounttype=1, **ACCOUNT)[0] == 401


def test_a_user_reads_its_own_keys_and_no_one_elses(cs_sim: SimHandle) -> None:
    kim_id, kim = new_user(cs_sim, "kim")
    lee_id, _ = new_user(cs_sim, "lee")
    user = as_user(cs_sim, kim)
    assert user.getUserKeys(id=kim_id)["userkeys"] == kim
    status, text = refused(user.getUserKeys, id=lee_id)
    assert status == 531 and "kim does not have permission" in text
    assert refused(user.registerUserKeys, id=lee_id)[0] == 531


def test_a_user_acts_only_on_its_own_accounts_resources(cs_sim: SimHandle) -> None:
    _, keys = new_user(cs_sim, "kim")
    user = as_user(cs_sim, keys)
    admins_vm = next(v for v in cs_sim.model.vms.values() if v.account == "admin")
    admins_root = next(v for v in cs_sim.model.volumes.values() if v.vm_id == admins_vm.id)
    status, text = refused(user.createSnapshot, volumeid=admins_root.id)
    assert status == 531 and "kim does not have permission to operate with resource" in text
    assert refused(user.stopVirtualMachine, id=admins_vm.id)[0] == 531
    # Naming another account as the owner of something new is refused too.
    assert refused(user.createVolume, name="x", zoneid=admins_vm.zone_id, account="admin",
                   diskofferingid=next(iter(cs_sim.model.disk_offerings)))[0] == 531


def test_an_account_deleted_takes_its_users_keys_with_it(cs_sim: SimHandle) -> None:
    _, keys = new_user(cs_sim, "kim")
    acc = admin(cs_sim).listAccounts(name="kim")["account"][0]
    admin(cs_sim).deleteAccount(id=acc["id"])
    assert refused(as_user(cs_sim, keys).listAccounts)[0] == 401


# ---------------------------------------------------------------------------- public IPs


def test_associate_ip_address_in_an_advanced_zone_with_security_groups(cs_sim: SimHandle) -> None:
    """The zone's VMs are on its shared network with security groups: the account has no
    isolated network to take a public IP, and the shared network offers no NAT services."""
    cloud = admin(cs_sim)
    zone = next(iter(cs_sim.model.zones.values()))
    _, keys = new_user(cs_sim, "kim")
    assert refused(cloud.associateIpAddress, zoneid=zone.id, account="kim",
                   domainid=m.seeded_id("domain", "ROOT")) == (
        431, f"Account name=kim domain=ROOT doesn't have virtual networks in zone={zone.name}")
    assert refused(as_user(cs_sim, keys).associateIpAddress, zoneid=zone.id) == (
        431, f"Account name=kim domain=ROOT doesn't have virtual networks in zone={zone.name}")
    status, text = refused(cloud.associateIpAddress, networkid=guest_network_id(zone.id))
    assert status == 431 and text.startswith("Associate IP address can only be called on the shared networks")
    status, text = refused(cloud.associateIpAddress)
    assert status == 431 and text.startswith("Unable to figure out zone to assign IP to")
    status, text = refused(cloud.associateIpAddress, networkid="4e1c2f1a-0000-4000-8000-000000000000")
    assert status == 431 and "Invalid parameter networkid" in text
    assert not any(j.command == "associateIpAddress" for j in cs_sim.model.jobs.values())  # refused in create()
    api = next(a for a in cloud.listApis(name="associateIpAddress")["api"])
    assert api["isasync"] is True


# ---------------------------------------------------------------------------- the API port


def test_the_api_port_serves_the_same_simulator(cs_sim: SimHandle) -> None:
    with serve_api_port(cs_sim, port=0) as endpoint:
        assert endpoint.startswith("http://127.") and ".255.254:" in endpoint and endpoint != cs_sim.endpoint
        _, keys = new_user(cs_sim, "kim")  # registered through the first endpoint
        assert as_user(cs_sim, keys, endpoint).listAccounts()["account"][0]["name"] == "kim"
        assert admin(cs_sim, endpoint).listZones()["count"] == len(cs_sim.model.zones)


def test_the_marvin_config_names_the_api_port(tmp_path: Path) -> None:
    """Marvin's user API clients connect to port 8080 of the config's address: the config names
    the simulator where it serves that port."""
    run_dir = tmp_path / "run"
    (run_dir / "stack").mkdir(parents=True)
    (run_dir / "secrets.env").write_text(
        "CLOUDSTACK_ENDPOINT=http://127.0.0.1:41000/client/api\n"
        "CLOUDSTACK_API_PORT_ENDPOINT=http://127.77.255.254:8080/client/api\nCLOUDSTACK_KEY=key\n"
        "CLOUDSTACK_SECRET=secret\nSP_API_HTTP_HOST=127.0.0.1\nSP_API_HTTP_PORT=81\nSP_AUTH_TOKEN=token\n")
    (run_dir / "stack" / "pools.toml").write_text(
        '[[pool]]\nuuid = "u1"\nname = "storpool-primary"\nzone = "z"\nurl = "storpool://t@h:81/ssd"\n')
    out = tmp_path / "marvin.cfg"
    subprocess.run([sys.executable, str(CONFIG_WRITER), str(run_dir), str(out), str(tmp_path / "logs")], check=True)
    server = json.loads(out.read_text())["mgtSvr"][0]
    assert (server["mgtSvrIp"], server["port"]) == ("127.77.255.254", 8080)


def test_a_deleted_snapshot_listed_by_id_is_an_empty_list(tmp_path: Path) -> None:
    """ParamProcessWorker translates the uuid of a removed entity too (findByUuidIncludingRemoved):
    listing a deleted snapshot by id answers an empty list (CloudStack's StorPool test_04 checks
    this), while an id that never existed is refused; it holds across a restart."""
    from integration.cloudstack_sim import orchestrator as orch
    from integration.cloudstack_sim.testing import run_simulator

    with run_simulator(state=tmp_path / "cs.json") as sim:
        vol = next(v for v in sim.model.volumes.values())
        snap = sim.model.add_snapshot(vol.id, "gone")
        orch.delete_snapshot(sim.model, snap.id)
        sim.model.save()
        assert admin(sim).listSnapshots(id=snap.id) == {}
        assert refused(admin(sim).listSnapshots, id="4e1c2f1a-0000-4000-8000-000000000000")[0] == 431
    with run_simulator(state=tmp_path / "cs.json") as sim:
        assert admin(sim).listSnapshots(id=snap.id) == {}


def test_a_user_does_not_list_its_destroyed_volumes(cs_sim: SimHandle) -> None:
    """ListVolumesCmd for a non-admin caller leaves Destroy volumes out; the admin still lists them."""
    user = as_user(cs_sim, seeded_user(cs_sim))
    vol = next(v for v in cs_sim.model.volumes.values() if v.account == "user1")
    assert [v["id"] for v in user.listVolumes()["volume"]] == [vol.id]
    vol.state = "Destroy"
    assert user.listVolumes() == {}
    assert admin(cs_sim).listVolumes(id=vol.id)["volume"][0]["state"] == "Destroy"


def test_a_users_job_is_its_own(cs_sim: SimHandle) -> None:
    """A job belongs to the user who started it: queryAsyncJobResult answers that user's and
    account's ids, and another user may not see it (531); the admin may."""
    kim_id, kim = new_user(cs_sim, "kim")
    _, lee = new_user(cs_sim, "lee")
    raw = cs.CloudStack(cs_sim.endpoint, kim["apikey"], kim["secretkey"])
    group = raw.listSecurityGroups()["securitygroup"][0]["id"]
    job_id = raw.authorizeSecurityGroupIngress(securitygroupid=group, protocol="TCP", startport=22, endport=22,
                                               cidrlist="0.0.0.0/0")["jobid"]
    acc_id = cs_sim.model.users[kim_id].account_id
    answer = raw.queryAsyncJobResult(jobid=job_id)
    assert (answer["userid"], answer["accountid"]) == (kim_id, acc_id)
    status, text = refused(cs.CloudStack(cs_sim.endpoint, lee["apikey"], lee["secretkey"]).queryAsyncJobResult,
                           jobid=job_id)
    assert status == 531 and text == f"Account lee is not authorized to see job id={job_id}"
    assert cs.CloudStack(cs_sim.endpoint, cs_sim.key, cs_sim.secret).queryAsyncJobResult(jobid=job_id)["userid"] == kim_id
