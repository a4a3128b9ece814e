"""Resize on the local stack: a disk of a running libvirt domain (StorPool size, the host's
device and libvirt's capacity agree), a detached volume (no agent at all), and rollback when
the host fails."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cloudstack_storpool.agent.attach import device_size
from cloudstack_storpool.driver import resize, volumes
from cloudstack_storpool.driver.resize import ResizeFailed
from cloudstack_storpool.errors import NotFound
from cloudstack_storpool.spconn import Ref
from integration import processes
from integration.libvirt_domain import start_domain
from integration.stack import LocalStack, new_uuid

MiB = 1 << 20


def running_vm(stack: LocalStack, client_id: int = 1) -> Any:
    """A VM the simulator shows Running on the host with this StorPool client id, with an
    instance name no other test (or engineer) uses at the same time."""
    model = stack.cs.model
    host = next(h for h in model.hosts.values() if h.details.get("SP_OURID") == str(client_id))
    vm = model.add_vm(f"rs-{uuid.uuid4().hex[:6]}", host_id=host.id, state="Running", storage_id=stack.pool_id())
    vm.instance_name = f"i-2-{uuid.uuid4().hex[:8]}-VM"
    return vm


def volume_of(stack: LocalStack, size: int, vm_id: str | None, iops: int | None = None) -> tuple[str, str]:
    vid = new_uuid()
    info = volumes.create(stack.ctx, stack.pool_id(), vid, size, iops=iops)
    stack.cs.model.add_volume(f"data-{vid[:6]}", size, vm_id=vm_id, storage_id=stack.pool_id(), path=info.path,
                              volume_id=vid, max_iops=iops)
    return vid, info.global_id




def test_running_domain_sees_the_new_size(stack: LocalStack, virt: Any) -> None:
    vm = running_vm(stack)
    vid, gid = volume_of(stack, 64 * MiB, vm.id)
    conn = stack.ctx.conn(stack.pool_id())
    conn.attach(Ref("volume", "~" + gid), 1, "rw")
    device = str(stack.sp.device_path(1, gid))
    dom = start_domain(virt, vm.instance_name, device)
    try:
        assert dom.blockInfo("vdb", 0)[0] == 64 * MiB
        out = resize.resize_volume(stack.ctx, volume_uuid=vid, new_size=192 * MiB, host_ids=[vm.host_id],
                                   instance_name=vm.instance_name)
        assert out.notified and out.capacity == 192 * MiB
        assert conn.volume("~" + gid).size == 192 * MiB
        assert device_size(device) == 192 * MiB
        assert dom.blockInfo("vdb", 0)[0] == 192 * MiB  # what `virsh domblkinfo` prints as Capacity
    finally:
        dom.destroy()
        conn.detach(Ref("volume", "~" + gid), force=True)


def test_host_failure_leaves_the_old_size(stack: LocalStack, virt: Any) -> None:
    """The domain runs but has not got this disk (libvirt cannot resize it): StorPool goes back."""
    vm = running_vm(stack)
    vid, gid = volume_of(stack, 64 * MiB, vm.id, iops=300)
    other_vid, other_gid = volume_of(stack, 32 * MiB, None)
    conn = stack.ctx.conn(stack.pool_id())
    for g in (gid, other_gid):
        conn.attach(Ref("volume", "~" + g), 1, "rw")
    dom = start_domain(virt, vm.instance_name, str(stack.sp.device_path(1, other_gid)))
    try:
        iops_off = next(o for o in stack.cs.model.disk_offerings.values() if o.name == "sp-iops-500")
        with pytest.raises(ResizeFailed) as err:
            resize.resize_volume(stack.ctx, volume_uuid=vid, new_size=128 * MiB, disk_offering_id=iops_off.id,
                                 host_ids=[vm.host_id], instance_name=vm.instance_name)
        assert err.value.rolled_back and "has no disk backed by" in str(err.value)
        summary = conn.volume("~" + gid)
        assert summary.size == 64 * MiB and summary.iops == 300
        assert device_size(str(stack.sp.device_path(1, gid))) == 64 * MiB
    finally:
        dom.destroy()
        conn.detach([Ref("volume", "~" + g) for g in (gid, other_gid)], force=True)
    del other_vid


def test_detached_volume_touches_no_agent(stack: LocalStack) -> None:
    vid, gid = volume_of(stack, 16 * MiB, None)
    jobs = len(stack.agent_jobs())
    out = resize.resize_volume(stack.ctx, volume_uuid=vid, new_size=48 * MiB, host_ids=[], instance_name="none")
    assert out.host_id is None and len(stack.agent_jobs()) == jobs
    assert stack.ctx.conn(stack.pool_id()).volume("~" + gid).size == 48 * MiB


def test_unreachable_host_rolls_back(stack: LocalStack) -> None:
    """The VM's host does not answer at all (agent down): the size goes back."""
    vm = running_vm(stack, client_id=2)
    vid, gid = volume_of(stack, 16 * MiB, vm.id)
    stack.cs.model.set_host_details(vm.host_id, **{"agent.port": "1"})  # nothing listens there
    stack.ctx.agents.for_address("127.0.0.1", 1).post_retries = 0
    with pytest.raises(ResizeFailed, match="unreachable") as err:
        resize.resize_volume(stack.ctx, volume_uuid=vid, new_size=32 * MiB, host_ids=[vm.host_id],
                             instance_name=vm.instance_name)
    assert err.value.rolled_back and f"restored to {16 * MiB}" in str(err.value)
    assert stack.ctx.conn(stack.pool_id()).volume("~" + gid).size == 16 * MiB


def test_a_stopped_vm_s_last_host_is_told(stack: LocalStack) -> None:
    """A stopped VM is on no host, and CloudStack's API shows no last host: the caller hands it
    (ResizeVolumePayload.hosts), and the resize reaches that host's agent, which finds the
    domain not running there (it reads the new size when it starts)."""
    vm = running_vm(stack, client_id=2)
    last = vm.host_id
    stack.cs.model.stop_vm(vm.id)
    assert stack.ctx.cloudstack.vm(vm.id).host_id is None  # type: ignore[union-attr]
    vid, gid = volume_of(stack, 16 * MiB, vm.id)
    before = {h: len(a.server.jobs.list()) for h, a in stack.agents.items()}
    out = resize.resize_volume(stack.ctx, volume_uuid=vid, new_size=32 * MiB, host_ids=[last],
                               instance_name=vm.instance_name)
    assert out.host_id == last and not out.notified
    told = [j for j in stack.agents[last].server.jobs.list()[before[last]:] if j.command == "resize"]
    assert len(told) == 1 and told[0].state == "succeeded"
    assert told[0].result["volume"] == "~" + gid and told[0].result["size"] == 32 * MiB
    assert told[0].result["reason"] in ("domain is not running", f"domain {vm.instance_name} is not on this host")
    others = {h: len(a.server.jobs.list()) for h, a in stack.agents.items() if h != last}
    assert others == {h: n for h, n in before.items() if h != last}
    assert stack.ctx.conn(stack.pool_id()).volume("~" + gid).size == 32 * MiB


def test_an_unreachable_host_passes_to_the_next_and_unknown_hosts_are_refused(stack: LocalStack) -> None:
    vm = running_vm(stack, client_id=2)
    vid, gid = volume_of(stack, 16 * MiB, vm.id)
    with pytest.raises(NotFound, match="host_ids: CloudStack has no host"):
        resize.resize_volume(stack.ctx, volume_uuid=vid, new_size=32 * MiB, host_ids=[new_uuid()],
                             instance_name=vm.instance_name)
    assert stack.ctx.conn(stack.pool_id()).volume("~" + gid).size == 16 * MiB
    # A host whose agent does not answer (nothing listens on its port), Down for everything else.
    down = stack.cs.model.add_host("down-host", "127.0.0.1", details={"agent.port": "1"}, state="Down")
    stack.ctx.agents.for_address("127.0.0.1", 1).post_retries = 0
    try:
        out = resize.resize_volume(stack.ctx, volume_uuid=vid, new_size=32 * MiB, host_ids=[down.id, vm.host_id],
                                   instance_name=vm.instance_name)
    finally:
        stack.cs.model.delete_host(down.id)
    assert out.host_id == vm.host_id and not out.notified  # told; no domain of that name runs there
    assert stack.ctx.conn(stack.pool_id()).volume("~" + gid).size == 32 * MiB


def test_contact_lost_mid_resize_leaves_the_volume_grown(stack: LocalStack, tmp_path: Path) -> None:
    """Issue 13: the agent took the resize job, then died (kill -9) before answering: libvirt
    may already have grown the disk, so StorPool is not shrunk back under the guest."""
    vm = running_vm(stack, client_id=2)
    vid, gid = volume_of(stack, 16 * MiB, vm.id)
    token_file = tmp_path / "sp.token"
    token_file.write_text(stack.sp.token)
    token_file.chmod(0o600)
    agent = processes.agent(client_id=2, sp_host=stack.sp.host, sp_port=stack.sp.port, sp_token_file=str(token_file),
                            dev_root=str(stack.sp.dev_root / "2"), mount_root=str(tmp_path / "mnt"),
                            secondary_root=str(stack.secondary), status_file=str(tmp_path / "hb.json"),
                            token=stack.agent_token, tls=stack.agent_cert)
    outcome: list[BaseException] = []
    with agent:
        stack.cs.model.set_host_details(vm.host_id, **{"agent.port": agent.url.rsplit(":", 1)[1]})
        stack.sp.faults.add_latency("Volume", 3.0)  # the agent's job hangs at its first StorPool read

        def run() -> None:
            try:
                resize.resize_volume(stack.ctx, volume_uuid=vid, new_size=48 * MiB, host_ids=[vm.host_id],
                                     instance_name=vm.instance_name)
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 30
        while not any("POST /v1/jobs" in line for line in agent.output):
            assert time.monotonic() < deadline, "the agent never took the job"
            time.sleep(0.02)
        agent.kill()
        stack.sp.faults.add_latency("Volume", 0)
        worker.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], ResizeFailed), outcome
    assert not outcome[0].rolled_back and f"left at {48 * MiB} bytes" in str(outcome[0])
    assert stack.ctx.conn(stack.pool_id()).volume("~" + gid).size == 48 * MiB
