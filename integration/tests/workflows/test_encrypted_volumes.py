"""Encrypted root and data volumes chosen by offering (`encryptroot` on a service offering,
`encrypt` on a disk offering), through `cs` as CloudStack's own TestEncryptedVolumes drives them,
checked on StorPool: a LUKS header that the passphrase CloudStack generated opens, the template
or the guest's data in the encrypted payload and nowhere in plain."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import cs
import pytest

from cloudstack_storpool.agent import qemu_img
from integration.stack import LocalStack
from integration.tests.workflows.support import (
    GiB,
    MiB,
    job_error,
    one,
    sp_snapshot,
    sp_volume,
    template,
    volumes_of,
    with_image,
)
from integration.tests.workflows.test_guests import gcloud, guest_stack, nic_ip, ssh  # noqa: F401  (fixtures)
from integration.tests.workflows.test_snapshots import set_bypass

pytestmark = pytest.mark.root

LUKS_MAGIC = b"LUKS\xba\xbe"
HEADER = 2 * MiB


def encrypted_offerings(cloud: cs.CloudStack) -> tuple[str, str]:
    """A service offering with `encryptroot` and a disk offering with `encrypt`, as the Marvin
    test creates them."""
    svc = cloud.createServiceOffering(name=f"enc-root-{uuid.uuid4().hex[:6]}", displaytext="encrypted root",
                                      cpunumber=1, cpuspeed=1000, memory=256, encryptroot=True)["serviceoffering"]
    disk = cloud.createDiskOffering(name=f"enc-disk-{uuid.uuid4().hex[:6]}", displaytext="encrypted disk",
                                    disksize=1, encrypt=True)["diskoffering"]
    assert svc["encryptroot"] is True and disk["encrypt"] is True
    return str(svc["id"]), str(disk["id"])


def key_file(tmp_path: Path, passphrase: str) -> Path:
    key = tmp_path / f"key-{uuid.uuid4().hex[:6]}"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(passphrase)
    return key


def plaintext(tmp_path: Path, image: Path, passphrase: str, length: int) -> bytes:
    """The first `length` bytes of a LUKS image's payload, decrypted by the test's own qemu-img
    (a key file in the test's directory)."""
    out = tmp_path / f"plain-{uuid.uuid4().hex[:6]}.raw"
    key = key_file(tmp_path, passphrase)
    proc = subprocess.run(["qemu-img", "dd", "--object", f"secret,id=k,file={key},format=raw", "--image-opts",
                           "-O", "raw", "bs=65536", f"count={length // 65536}",
                           f"if=driver=luks,key-secret=k,file.filename={image}", f"of={out}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out.read_bytes()


def passphrase_of(stack: LocalStack, volume_id: str) -> str:
    """The passphrase CloudStack generated for the volume (its `passphrase` table, here the
    simulator's record): never in an API answer."""
    secret = stack.cs.model.volumes[volume_id].passphrase
    assert secret is not None and len(secret) == 64
    return secret


def check_luks(stack: LocalStack, sp: Any, vol: dict[str, Any], size: int) -> Path:
    """StorPool holds the volume 2 MiB larger, starting with a LUKS header its passphrase opens
    (and another passphrase does not); returns its backing file."""
    on_sp = sp_volume(sp, vol["path"])
    assert on_sp is not None and on_sp.size == size + HEADER
    backing = stack.sp.object_file(on_sp.globalId)
    assert stack.sp.read_object(on_sp.globalId, 0, len(LUKS_MAGIC)) == LUKS_MAGIC
    qemu_img.luks_check(str(backing), passphrase_of(stack, vol["id"]))
    with pytest.raises(qemu_img.WrongPassphrase):
        qemu_img.luks_check(str(backing), "not-" + passphrase_of(stack, vol["id"]))
    assert vol["encryptformat"] == "luks"
    return backing


def test_encrypted_root_and_data_volumes_by_offering(stack: LocalStack, cloud: cs.CloudStack, sp: Any,
                                                     tmp_path: Path) -> None:
    marker = b"encrypted-root template content"
    tpl = template(cloud)
    with_image(stack, tpl, marker)
    svc, disk = encrypted_offerings(cloud)

    # Deploy with an encrypted root and an encrypted data disk (both made while the VM starts).
    vm = cloud.deployVirtualMachine(zoneid=tpl["zoneid"], templateid=tpl["id"], serviceofferingid=svc,
                                    diskofferingid=disk, name="enc-1")["virtualmachine"]
    assert vm["state"] == "Running"
    root, data = volumes_of(cloud, vm["id"])
    assert root["type"] == "ROOT" and data["type"] == "DATADISK"
    assert root["size"] == tpl["size"] and data["size"] == GiB
    root_file = check_luks(stack, sp, root, int(tpl["size"]))
    check_luks(stack, sp, data, GiB)
    # The template is in the root's encrypted payload, and not in plain on StorPool.
    assert plaintext(tmp_path, root_file, passphrase_of(stack, root["id"]), MiB)[:len(marker)] == marker
    assert marker not in root_file.read_bytes()
    assert passphrase_of(stack, root["id"]) != passphrase_of(stack, data["id"])

    # An encrypted volume made Allocated, then attached to the running VM (the Marvin test's flow).
    vol = cloud.createVolume(name="enc-attach", zoneid=tpl["zoneid"], diskofferingid=disk)["volume"]
    assert vol["state"] == "Allocated" and "encryptformat" not in vol
    attached = cloud.attachVolume(id=vol["id"], virtualmachineid=vm["id"])["volume"]
    check_luks(stack, sp, attached, GiB)

    # No answer carries a passphrase; the simulator's call log shows it masked.
    answers = repr(cloud.listVolumes(listall=True)) + repr(cloud.listVirtualMachines(id=vm["id"]))
    calls = repr(stack.cs.model.plugin.calls) if stack.cs.model.plugin else ""
    assert "set_volume_encryption" in calls
    for v in (root, data, attached):
        assert passphrase_of(stack, v["id"]) not in answers + calls

    # A volume of an ordinary offering stays plain.
    plain = cloud.createVolume(name="plain", zoneid=tpl["zoneid"], diskofferingid=one(
        cloud, "listDiskOfferings", "diskoffering", name="sp-small")["id"], virtualmachineid=vm["id"])["volume"]
    assert "encryptformat" not in plain and stack.cs.model.volumes[plain["id"]].passphrase is None
    assert stack.sp.read_object(sp_volume(sp, plain["path"]).globalId, 0, len(LUKS_MAGIC)) != LUKS_MAGIC

    # A live migration to another pool (the Marvin test's last step): the ciphertext moves, the
    # same passphrase opens it, CloudStack's size stays the volume's own.
    target = one(cloud, "listStoragePools", "storagepool", name="storpool-hybrid")
    moved = cloud.migrateVolume(volumeid=root["id"], storageid=target["id"], livemigrate=True)["volume"]
    assert moved["storageid"] == target["id"] and moved["size"] == tpl["size"]
    root_file = check_luks(stack, sp, moved, int(tpl["size"]))
    assert plaintext(tmp_path, root_file, passphrase_of(stack, root["id"]), MiB)[:len(marker)] == marker

    # Snapshots of an encrypted volume stay on StorPool: refused with the backup to secondary
    # storage on, taken with the bypass (ciphertext, the same passphrase opens it).
    set_bypass(stack, cloud, False)
    with pytest.raises(cs.CloudStackApiException) as exc:
        cloud.createSnapshot(volumeid=root["id"])
    assert "encrypted" in job_error(exc.value)["errortext"]
    set_bypass(stack, cloud, True)
    snap = cloud.createSnapshot(volumeid=root["id"])["snapshot"]
    path = stack.cs.model.snapshots[snap["id"]].path
    assert path is not None
    snap_file = stack.sp.object_file(sp_snapshot(sp, path).globalId)
    assert plaintext(tmp_path, snap_file, passphrase_of(stack, root["id"]), MiB)[:len(marker)] == marker

    # A VM snapshot of encrypted disks, a revert and a restart.
    vms = cloud.createVMSnapshot(virtualmachineid=vm["id"], name="enc-vmsnap")["vmsnapshot"]
    assert vms["state"] == "Ready"
    cloud.stopVirtualMachine(id=vm["id"])
    cloud.revertToVMSnapshot(vmsnapshotid=vms["id"])
    cloud.startVirtualMachine(id=vm["id"])
    after = one(cloud, "listVolumes", "volume", id=root["id"])
    root_file = check_luks(stack, sp, after, int(tpl["size"]))
    assert plaintext(tmp_path, root_file, passphrase_of(stack, root["id"]), MiB)[:len(marker)] == marker


def test_failed_encryption_leaves_nothing_on_storpool(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    """The encrypted create's second step fails (no host of the zone is Up to write the LUKS
    header): the volume the first step made is deleted and the record is Allocated again; the
    next attach encrypts it."""
    tpl = template(cloud)
    with_image(stack, tpl)
    _, disk = encrypted_offerings(cloud)
    vm = cloud.deployVirtualMachine(zoneid=tpl["zoneid"], templateid=tpl["id"], name="enc-fail",
                                    serviceofferingid=one(cloud, "listServiceOfferings", "serviceoffering",
                                                          name="small")["id"])["virtualmachine"]
    vol = cloud.createVolume(name="enc-fail-data", zoneid=tpl["zoneid"], diskofferingid=disk)["volume"]
    before = {v.name for v in sp.volumesList()}
    hosts = list(stack.cs.model.hosts.values())
    for host in hosts:
        host.state = "Down"
    try:
        with pytest.raises(cs.CloudStackApiException) as exc:
            cloud.attachVolume(id=vol["id"], virtualmachineid=vm["id"])
        assert "set_volume_encryption" in job_error(exc.value)["errortext"]
    finally:
        for host in hosts:
            host.state = "Up"
    assert {v.name for v in sp.volumesList()} == before
    again = one(cloud, "listVolumes", "volume", id=vol["id"])
    assert again["state"] == "Allocated" and "path" not in again and "virtualmachineid" not in again
    attached = cloud.attachVolume(id=vol["id"], virtualmachineid=vm["id"])["volume"]
    check_luks(stack, sp, attached, GiB)


@pytest.mark.libvirt
@pytest.mark.root
@pytest.mark.slow
def test_guest_sees_plaintext_of_encrypted_root_and_data_disks(guest_stack: LocalStack,  # noqa: F811
                                                               gcloud: cs.CloudStack,  # noqa: F811
                                                               tmp_path: Path) -> None:
    """A real guest boots from its encrypted root (the KVM side opens it with the passphrase
    through QEMU's LUKS driver), writes a file and a hot-plugged encrypted data disk; StorPool
    holds only ciphertext, which CloudStack's passphrase turns back into what the guest wrote."""
    sp = guest_stack.sp.api()
    tpl = template(gcloud)
    svc, disk = encrypted_offerings(gcloud)
    vm = gcloud.deployVirtualMachine(zoneid=tpl["zoneid"], templateid=tpl["id"], serviceofferingid=svc,
                                     name="enc-guest")["virtualmachine"]
    ip = nic_ip(gcloud, vm["id"])
    root = volumes_of(gcloud, vm["id"])[0]
    root_file = check_luks(guest_stack, sp, root, int(tpl["size"]))
    assert "/dev/vda" in ssh(ip, "mount")
    assert ssh(ip, "echo on-encrypted-root > /tmp/random.data; sync; cat /tmp/random.data").strip() == \
        "on-encrypted-root"

    vol = gcloud.createVolume(name="enc-guest-data", zoneid=tpl["zoneid"], diskofferingid=disk)["volume"]
    gcloud.attachVolume(id=vol["id"], virtualmachineid=vm["id"])
    out = ssh(ip, "for i in $(seq 1 50); do [ -b /dev/vdb ] && break; sleep 0.2; done; "
                  "echo guest-wrote-plaintext | dd of=/dev/vdb bs=512 count=1 conv=sync 2>/dev/null; sync; "
                  "blockdev --getsize64 /dev/vdb")
    assert GiB <= int(out.strip()) < GiB + HEADER  # the guest sees the payload, not the header
    data = one(gcloud, "listVolumes", "volume", id=vol["id"])
    data_file = check_luks(guest_stack, sp, data, GiB)
    assert b"guest-wrote-plaintext" not in guest_stack.sp.read_object(sp_volume(sp, data["path"]).globalId, 0, 4 * MiB)
    assert plaintext(tmp_path, data_file, passphrase_of(guest_stack, vol["id"]), MiB)[:21] == b"guest-wrote-plaintext"

    # After a stop and a start the guest opens its encrypted root again and finds its file.
    gcloud.stopVirtualMachine(id=vm["id"])
    assert plaintext(tmp_path, root_file, passphrase_of(guest_stack, root["id"]), 64 * 1024)[1080:1082] == b"\x53\xef"
    gcloud.startVirtualMachine(id=vm["id"])
    assert ssh(ip, "cat /tmp/random.data").strip() == "on-encrypted-root"
