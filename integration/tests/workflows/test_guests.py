"""Real guests: a VM boots from its StorPool root disk, a file written over SSH survives a VM
snapshot revert and a volume snapshot revert, as CloudStack's own tests check it."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cs
import paramiko
import pytest

from integration.guests import wait_for_ssh
from integration.needs import need_tool
from integration.stack import LocalStack
from integration.tests.workflows.support import deploy, one, sp_volume, template, volumes_of

pytestmark = [pytest.mark.libvirt, pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def guest_stack(xfs_dir: Path) -> Iterator[LocalStack]:
    need_tool("qemu-system-x86_64")
    root = xfs_dir / f"guests-{uuid.uuid4().hex[:10]}"
    try:
        with LocalStack(root, make_xfs=False, guests=True) as s:
            s.publish_template_images()
            yield s
    finally:
        for console in (root / "consoles").glob("*.log"):  # the guests' consoles, for a failure's report
            print(f"--- console {console.name}\n{console.read_text(errors='replace')[-3000:]}")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def gcloud(guest_stack: LocalStack) -> cs.CloudStack:
    guest_stack.start_service()
    return cs.CloudStack(guest_stack.cs.endpoint, guest_stack.cs.key, guest_stack.cs.secret, fetch_result=True,
                         poll_interval=0.1, job_timeout=300)


def ssh(ip: str, command: str) -> str:
    """One command in the guest, as Marvin's SshClient runs it (root / password)."""
    wait_for_ssh(ip, timeout=300)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(ip, username="root", password="password", timeout=30, allow_agent=False, look_for_keys=False)
    try:
        _, out, err = client.exec_command(command, timeout=60)
        return str(out.read().decode() + err.read().decode())
    finally:
        client.close()


def nic_ip(cloud: cs.CloudStack, vm_id: str) -> str:
    vm = one(cloud, "listVirtualMachines", "virtualmachine", id=vm_id)
    return str(vm["nic"][0]["ipaddress"])


def test_guest_file_survives_vm_snapshot_and_volume_snapshot_reverts(
        guest_stack: LocalStack, gcloud: cs.CloudStack) -> None:
    vm = deploy(gcloud, template(gcloud), "guest-1")
    ip = nic_ip(gcloud, vm["id"])
    root = volumes_of(gcloud, vm["id"])[0]
    sp = guest_stack.sp.api()
    # The guest's root filesystem is the VM's StorPool root volume.
    assert sp_volume(sp, root["path"]) is not None
    assert "/dev/vda" in ssh(ip, "mount")

    assert ssh(ip, "echo before-vmsnap > /tmp/random.data; sync; cat /tmp/random.data").strip() == "before-vmsnap"
    vms = gcloud.createVMSnapshot(virtualmachineid=vm["id"], name="guest-snap")["vmsnapshot"]
    assert "No such file" in ssh(ip, "rm -f /tmp/random.data; sync; ls /tmp/random.data")
    gcloud.stopVirtualMachine(id=vm["id"])
    gcloud.revertToVMSnapshot(vmsnapshotid=vms["id"])
    gcloud.startVirtualMachine(id=vm["id"])
    assert ssh(ip, "cat /tmp/random.data").strip() == "before-vmsnap"

    ssh(ip, "echo before-volsnap > /tmp/random.data; sync")
    snap = gcloud.createSnapshot(volumeid=root["id"])["snapshot"]
    ssh(ip, "echo after-volsnap > /tmp/random.data; sync")
    gcloud.stopVirtualMachine(id=vm["id"])
    gcloud.revertSnapshot(id=snap["id"])
    gcloud.startVirtualMachine(id=vm["id"])
    assert ssh(ip, "cat /tmp/random.data").strip() == "before-volsnap"


def test_data_disk_hot_plugged_into_a_running_guest(guest_stack: LocalStack, gcloud: cs.CloudStack) -> None:
    vm = deploy(gcloud, template(gcloud), "guest-2")
    ip = nic_ip(gcloud, vm["id"])
    disk_offering = one(gcloud, "listDiskOfferings", "diskoffering", name="sp-small")["id"]
    vol = gcloud.createVolume(name="guest-2-data", zoneid=vm["zoneid"], diskofferingid=disk_offering)["volume"]
    gcloud.attachVolume(id=vol["id"], virtualmachineid=vm["id"])
    data: Any = ssh(ip, "for i in $(seq 1 50); do [ -b /dev/vdb ] && break; sleep 0.2; done; "
                        "echo guest-wrote | dd of=/dev/vdb bs=512 count=1 conv=sync 2>/dev/null; sync; echo ok")
    assert data.strip() == "ok"
    path = one(gcloud, "listVolumes", "volume", id=vol["id"])["path"]
    gid = path.rsplit("/", 1)[1]
    assert guest_stack.sp.read_object(gid, 0, 11) == b"guest-wrote"
