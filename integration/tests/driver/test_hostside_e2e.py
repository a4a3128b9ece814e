"""The KVM host's part on the local stack: VM start / stop, live migration with a real libvirt
domain, HA restart from a host whose client is down, host connect, connect / disconnect by
path, encrypted volumes and volume download through the driver and the service."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from cloudstack_storpool.driver import connect, encryption, extract, hostconnect, templates, volumes
from cloudstack_storpool.errors import Conflict, NotFound, ValidationError
from cloudstack_storpool.spconn import Ref
from integration.libvirt_domain import start_domain
from integration.needs import need
from integration.stack import LocalStack, new_uuid
from integration.tests.argv_watch import ArgvWatch

pytestmark = pytest.mark.root

MiB = 1 << 20


def _host(stack: LocalStack, client_id: int) -> str:
    return stack.agent_for_client(client_id).host_id


def _vm_with_disks(stack: LocalStack, sizes: tuple[int, ...] = (32 * MiB, 16 * MiB)) -> tuple[Any, list[str]]:
    """A stopped VM whose ROOT and data disks exist on StorPool (as the driver made them);
    returns the VM and the disks' global ids."""
    model = stack.cs.model
    vm = model.add_vm(f"hs-{uuid.uuid4().hex[:6]}", state="Stopped", host_id=_host(stack, 1),
                      storage_id=stack.pool_id())
    vm.instance_name = f"i-2-{uuid.uuid4().hex[:8]}-VM"
    root = next(v for v in model.volumes.values() if v.vm_id == vm.id)
    gids = []
    info = volumes.create(stack.ctx, stack.pool_id(), root.id, sizes[0])
    model.update_volume(root.id, path=info.path, size=sizes[0])
    gids.append(info.global_id)
    for i, size in enumerate(sizes[1:], start=1):
        vid = new_uuid()
        info = volumes.create(stack.ctx, stack.pool_id(), vid, size)
        model.add_volume(f"data-{vid[:6]}", size, vm_id=vm.id, storage_id=stack.pool_id(), path=info.path,
                         volume_id=vid, device_id=i)
        gids.append(info.global_id)
    return vm, gids


def _clients(stack: LocalStack, gid: str) -> list[tuple[int, str]]:
    conn = stack.ctx.conn(stack.pool_id())
    return sorted((int(a.client), str(a.rights)) for a in conn.attachments() if a.global_id == gid)


def test_start_attaches_to_the_host_only_and_stop_detaches(stack: LocalStack) -> None:
    vm, gids = _vm_with_disks(stack)
    conn = stack.ctx.conn(stack.pool_id())
    # A stale attachment on another host (a VM that ran there before and was not cleaned up).
    conn.attach(Ref("volume", "~" + gids[1]), 2, "rw")
    stack.start_vm(vm.id, _host(stack, 1))
    assert [_clients(stack, g) for g in gids] == [[(1, "rw")], [(1, "rw")]]
    stack.stop_vm(vm.id)
    assert [_clients(stack, g) for g in gids] == [[], []]
    # Stopping again (a retried stop) changes nothing and fails nothing.
    connect.vm_stopped(stack.ctx, vm_id=vm.id, host_id=_host(stack, 1))
    assert [_clients(stack, g) for g in gids] == [[], []]


# --- live migration with a real libvirt domain ---------------------------------------------------




def _qemu_io(dom: Any, command: str) -> str:
    """Run a qemu-io command inside the running qemu on its disk `vdb`: the guest's own I/O path
    (the domain has no OS; the block layer under it is the one a guest would use). qemu-io
    prints to qemu's stdout, which libvirt keeps in the domain's log: the answer is read there."""
    try:
        import libvirt_qemu
    except ImportError:
        need(False, "libvirt_qemu (libvirt-python)")
    alias = re.search(r"<target dev='vdb'.*?<alias name='([^']+)'/>", dom.XMLDesc(0), re.S)
    assert alias is not None
    log = Path(f"/var/log/libvirt/qemu/{dom.name()}.log")
    start = log.stat().st_size if log.exists() else 0
    libvirt_qemu.qemuMonitorCommand(dom, f'qemu-io -d /machine/peripheral/{alias.group(1)}/virtio-backend "{command}"',
                                    libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
    deadline = time.monotonic() + 10
    while True:
        with open(log, "rb") as f:
            f.seek(start)
            out = f.read().decode(errors="replace")
        if "bytes at offset" in out or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def _write(dom: Any, pattern: int, offset: int, length: int = 64 * 1024) -> None:
    out = _qemu_io(dom, f"write -P {pattern:#x} {offset} {length}")
    assert f"wrote {length}/{length} bytes" in out, out


def _verify(dom: Any, pattern: int, offset: int, length: int = 64 * 1024) -> None:
    out = _qemu_io(dom, f"read -P {pattern:#x} {offset} {length}")
    assert f"read {length}/{length} bytes" in out and "verification failed" not in out.lower(), out


@pytest.mark.libvirt
def test_live_migration_keeps_the_guest_disk_and_ends_on_the_target_only(stack: LocalStack, virt: Any) -> None:
    vm, gids = _vm_with_disks(stack, (32 * MiB,))
    gid = gids[0]
    src_host, dst_host = _host(stack, 1), _host(stack, 2)
    stack.start_vm(vm.id, src_host)
    source = start_domain(virt, vm.instance_name + "-src", str(stack.sp.device_path(1, gid)))
    target: Any = None
    try:
        _write(source, 0xA1, 0)

        def hypervisor_move() -> None:
            nonlocal target
            # Both hosts hold the volume rw only now, inside the migration.
            assert _clients(stack, gid) == [(1, "rw"), (2, "rw")]
            target = start_domain(virt, vm.instance_name + "-dst", str(stack.sp.device_path(2, gid)))
            _write(source, 0xB2, MiB)  # the guest keeps writing on the source until the switch
            source.destroy()  # the switch: the source qemu is gone
            _verify(target, 0xA1, 0)
            _verify(target, 0xB2, MiB)

        stack.live_migrate(vm.id, dst_host, hypervisor_move)
        assert _clients(stack, gid) == [(2, "rw")]
        assert stack.cs.model.vms[vm.id].host_id == dst_host
        _write(target, 0xC3, 2 * MiB)  # and keeps writing on the target after it
        _verify(target, 0xA1, 0)
        _verify(target, 0xB2, MiB)
        _verify(target, 0xC3, 2 * MiB)
        assert stack.sp.read_object(gid, 0, 65536) == b"\xa1" * 65536
        assert stack.sp.read_object(gid, MiB, 65536) == b"\xb2" * 65536
        assert stack.sp.read_object(gid, 2 * MiB, 65536) == b"\xc3" * 65536
    finally:
        for dom in (source, target):
            with contextlib.suppress(Exception):  # a transient domain that was destroyed is gone
                dom.destroy()


@pytest.mark.libvirt
def test_failed_live_migration_leaves_the_volume_on_the_source_only(stack: LocalStack, virt: Any) -> None:
    vm, gids = _vm_with_disks(stack, (16 * MiB, 16 * MiB))
    src_host, dst_host = _host(stack, 1), _host(stack, 2)
    stack.start_vm(vm.id, src_host)
    source = start_domain(virt, vm.instance_name, str(stack.sp.device_path(1, gids[0])))
    try:
        _write(source, 0x5E, 0)

        def broken_move() -> None:
            raise RuntimeError("migration aborted by the hypervisor")

        with pytest.raises(RuntimeError, match="aborted"):
            stack.live_migrate(vm.id, dst_host, broken_move)
        assert [_clients(stack, g) for g in gids] == [[(1, "rw")], [(1, "rw")]]
        assert stack.cs.model.vms[vm.id].host_id == src_host
        _write(source, 0x6F, MiB)
        _verify(source, 0x5E, 0)
        _verify(source, 0x6F, MiB)
    finally:
        source.destroy()


# --- HA -------------------------------------------------------------------------------------------


def test_ha_restart_from_a_host_whose_client_is_down(stack: LocalStack) -> None:
    vm, gids = _vm_with_disks(stack)
    old, new = _host(stack, 1), _host(stack, 2)
    stack.start_vm(vm.id, old)
    stack.sp.faults.client_down(1)  # the fenced host: its StorPool client cannot confirm anything
    try:
        stack.ha_restart(vm.id, new)
    finally:
        stack.sp.faults.client_up(1)
    assert [_clients(stack, g) for g in gids] == [[(2, "rw")], [(2, "rw")]]
    assert stack.cs.model.vms[vm.id].host_id == new


def test_hand_over_of_an_unknown_vm_or_host_changes_nothing(stack: LocalStack) -> None:
    vm, gids = _vm_with_disks(stack)
    from cloudstack_storpool.driver.ha import hand_over

    with pytest.raises(NotFound, match="host_id"):
        hand_over(stack.ctx, vm_id=vm.id, host_id=new_uuid())
    with pytest.raises(NotFound, match="vm_id"):
        hand_over(stack.ctx, vm_id=new_uuid(), host_id=_host(stack, 1))
    assert [_clients(stack, g) for g in gids] == [[], []]


# --- host connect ------------------------------------------------------------------------------------


def test_host_connect_records_the_client_id_and_refuses_a_duplicate(stack: LocalStack) -> None:
    stack.connect_hosts()
    model = stack.cs.model
    assert {model.hosts[h].parent for h in stack.agents} == {"1", "2"}
    facts = hostconnect.host_connected(stack.ctx, host_id=_host(stack, 1))
    assert facts.client_id == 1 and facts.client_status == "running" and facts.block_service_running is False

    # A new host whose storpool.conf says SP_OURID=1, like kvm1's: refused, nothing recorded.
    dup = model.add_host("kvm-dup", "127.0.0.1")
    stack._start_agent(dup.id, dup.name, 1)
    with pytest.raises(ValidationError) as exc:
        hostconnect.host_connected(stack.ctx, host_id=dup.id)
    assert exc.value.field == "client_id" and "kvm1" in str(exc.value)
    assert model.hosts[dup.id].parent is None

    fresh = model.add_host("kvm3", "127.0.0.1")
    stack._start_agent(fresh.id, fresh.name, 3)
    out = hostconnect.host_connected(stack.ctx, host_id=fresh.id)
    model.host_connected(fresh.id, out.parent)
    assert model.hosts[fresh.id].parent == "3"
    model.host_connected(fresh.id, "9")  # the listener writes `parent` only while it is empty
    assert model.hosts[fresh.id].parent == "3"


# --- the adaptor calls by path -------------------------------------------------------------------------


def test_connect_and_disconnect_by_path(stack: LocalStack) -> None:
    _vm, gids = _vm_with_disks(stack, (16 * MiB,))
    path = f"/dev/storpool-byid/{gids[0]}"
    h1, h2 = _host(stack, 1), _host(stack, 2)
    out = connect.connect_physical_disk(stack.ctx, host_id=h1, path=path)
    assert out.device.endswith(gids[0]) and _clients(stack, gids[0]) == [(1, "rw")]
    assert connect.connect_physical_disk(stack.ctx, host_id=h1, path=path).also_attached_to == []
    assert connect.disconnect_physical_disk_by_path(stack.ctx, host_id=h1, path=path).detached is True
    assert _clients(stack, gids[0]) == []
    assert connect.disconnect_physical_disk(stack.ctx, host_id=h2, path=path).detached is False
    # Another adaptor's disk: not ours, not an error.
    other = connect.disconnect_physical_disk_by_path(stack.ctx, host_id=h1, path="/var/lib/libvirt/images/x.qcow2")
    assert other.handled is False
    # Bad input names the field; nothing is attached anywhere.
    with pytest.raises(NotFound, match=r"^path: "):
        connect.connect_physical_disk(stack.ctx, host_id=h1, path="/dev/storpool-byid/no.such.vol")
    with pytest.raises(ValidationError) as exc:
        connect.connect_physical_disk(stack.ctx, host_id=h1, path="/dev/sda")
    assert exc.value.field == "path"
    with pytest.raises(NotFound, match="host_id"):
        connect.connect_physical_disk(stack.ctx, host_id=new_uuid(), path=path)
    assert stack.ctx.conn(stack.pool_id()).attachments() == []


# --- encryption and download through the driver and the service -----------------------------------------


def test_encrypted_volume_through_the_driver(stack: LocalStack) -> None:
    vid = new_uuid()
    info = volumes.create(stack.ctx, stack.pool_id(), vid, 16 * MiB, encrypted=True)
    stack.cs.model.add_volume(f"enc-{vid[:6]}", 16 * MiB, storage_id=stack.pool_id(), path=info.path, volume_id=vid)
    passphrase = "cs-generated-" + uuid.uuid4().hex
    out = encryption.set_volume_encryption(stack.ctx, volume_uuid=vid, passphrase=passphrase)
    assert out.formatted and out.payload_size == 16 * MiB and out.encrypt_format == "luks"
    assert stack.sp.read_object(info.global_id, 0, 6) == b"LUKS\xba\xbe"
    with pytest.raises(ValidationError) as exc:
        encryption.set_volume_encryption(stack.ctx, volume_uuid=vid, passphrase="another-" + passphrase)
    assert exc.value.field == "passphrase" and passphrase not in str(exc.value)
    with pytest.raises(ValidationError) as exc:
        encryption.set_volume_encryption(stack.ctx, volume_uuid=vid, passphrase="short")
    assert exc.value.field == "passphrase"
    with pytest.raises(NotFound):
        encryption.set_volume_encryption(stack.ctx, volume_uuid=new_uuid(), passphrase=passphrase)
    assert stack.ctx.conn(stack.pool_id()).attachments() == []


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _job(url: str, token: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        job: dict[str, Any] = requests.get(f"{url}/v1/jobs/{job_id}", headers=_auth(token), timeout=10).json()
        if job["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_encrypted_root_from_a_template_through_the_service(stack: LocalStack, caplog: pytest.LogCaptureFixture,
                                                             tmp_path: Path) -> None:
    """CloudStack's flow for an encrypted root disk: an empty volume 2 MiB larger, then
    SetVolumeEncryption with the template's cached snapshot as the source."""
    caplog.set_level(logging.DEBUG)
    tpl = stack.cs.model.add_template(f"enc-{uuid.uuid4().hex[:6]}", 8 * MiB)
    image = stack.template_image(tpl.id, 8 * MiB, {MiB: b"TEMPLATE-CONTENT"})
    cache = templates.ensure_cached(stack.ctx, stack.pool_id(), tpl.id, source=stack.source_of(image))
    vid = new_uuid()
    info = volumes.create(stack.ctx, stack.pool_id(), vid, 8 * MiB, encrypted=True)
    stack.cs.model.add_volume(f"encroot-{vid[:6]}", 8 * MiB, storage_id=stack.pool_id(), path=info.path,
                              volume_id=vid, type="ROOT")
    passphrase = "cs-root-" + uuid.uuid4().hex
    url = stack.start_service()
    assert stack.service_token
    with ArgvWatch(passphrase) as watch:
        resp = requests.post(f"{url}/v1/volumes/{vid}/encryption", headers=_auth(stack.service_token), timeout=30,
                             json={"passphrase": passphrase, "source_path": f"/dev/storpool-byid/{cache.global_id}"})
        assert resp.status_code == 202, resp.text
        job = _job(url, stack.service_token, resp.json()["id"])
    assert watch.seen_qemu and watch.seen == []
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["copied_from"] == "~" + cache.global_id and passphrase not in json.dumps(job)
    backing = stack.sp.object_file(info.global_id)
    assert b"TEMPLATE-CONTENT" not in backing.read_bytes()
    key = tmp_path / "key"
    key.write_text(passphrase)
    plain = tmp_path / "plain.raw"
    subprocess.run(["qemu-img", "convert", "--object", f"secret,id=k,file={key},format=raw", "--image-opts",
                    f"driver=luks,key-secret=k,file.filename={backing}", "-O", "raw", str(plain)], check=True)
    assert plain.read_bytes()[MiB:MiB + 16] == b"TEMPLATE-CONTENT"
    # A wrong passphrase through the service: 4xx-style job error naming the field, nothing changed.
    before = backing.read_bytes()[:2 * MiB]
    resp = requests.post(f"{url}/v1/volumes/{vid}/encryption", headers=_auth(stack.service_token), timeout=30,
                         json={"passphrase": "wrong-" + passphrase})
    job = _job(url, stack.service_token, resp.json()["id"])
    assert job["state"] == "failed" and job["error"]["field"] == "passphrase", job
    assert passphrase not in json.dumps(job) and backing.read_bytes()[:2 * MiB] == before
    assert all(passphrase not in r.getMessage() for r in caplog.records)


def test_download_volume_through_the_service_with_progress(stack: LocalStack) -> None:
    vm, gids = _vm_with_disks(stack, (24 * MiB,))
    stack.sp.write_object(gids[0], 5 * MiB, b"downloaded!")
    root = next(v for v in stack.cs.model.volumes.values() if v.vm_id == vm.id)
    url = stack.start_service()
    assert stack.service_token
    h = _auth(stack.service_token)
    resp = requests.post(f"{url}/v1/volumes/{root.id}/extract", headers=h, timeout=30,
                         json={"store": str(stack.secondary), "path": "volumes/dl/root.qcow2"})
    assert resp.status_code == 202, resp.text
    job = _job(url, stack.service_token, resp.json()["id"])
    assert job["state"] == "succeeded", job["error"]
    assert job["progress"] == 100 and job["result"]["format"] == "qcow2"
    assert job["result"]["virtual_size"] == 24 * MiB
    out = stack.secondary / "volumes" / "dl" / "root.qcow2"
    raw = stack.root / "dl.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(out), str(raw)], check=True)
    assert raw.read_bytes()[5 * MiB:5 * MiB + 11] == b"downloaded!"
    assert _clients(stack, gids[0]) == []
    # A running VM's disk is not downloaded (the copy would be of nothing consistent).
    stack.start_vm(vm.id, _host(stack, 1))
    with pytest.raises(Conflict):
        extract.extract_volume(stack.ctx, volume_uuid=root.id, store=str(stack.secondary), path="volumes/dl/x.qcow2")
    with pytest.raises(ValidationError) as exc:
        extract.extract_volume(stack.ctx, volume_uuid=root.id, store="relative", path="x.qcow2")
    assert exc.value.field == "secondary.store"
