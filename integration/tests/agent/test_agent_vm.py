"""Resize notification into a real libvirt domain, and safe VM start, against the emulator."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cloudstack_storpool.agent.attach import device_size
from cloudstack_storpool.agent.commands import execute
from cloudstack_storpool.spconn import Ref
from integration.libvirt_domain import start_domain
from integration.needs import need, need_tool
from integration.tests.agent.conftest import Lab, MiB

pytestmark = pytest.mark.root

URI = "qemu:///system"


def _libvirt() -> Any:
    need_tool("qemu-system-x86_64")
    try:
        import libvirt
    except ImportError:
        need(False, "libvirt-python")
    try:
        conn = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        need(False, f"a running libvirtd at {URI} ({exc.get_error_message()})")
    return conn


def _start(conn: Any, name: str, device: str) -> Any:
    return start_domain(conn, name, device)


@pytest.fixture
def vm_conn() -> Iterator[Any]:
    conn = _libvirt()
    try:
        yield conn
    finally:
        conn.close()


@pytest.mark.libvirt
def test_resize_makes_a_running_vm_see_the_new_size(lab: Lab, vm_conn: Any) -> None:

    vol = lab.volume(64 * MiB)
    ctx = lab.ctx(1)
    prep = execute(ctx, "prepare_start", {"volumes": [vol]})
    device = prep["volumes"][0]["device"]
    name = f"spagent-test-{uuid.uuid4().hex[:8]}"
    # The domain names the loop device itself: qemu runs as libvirt-qemu and cannot walk into
    # the test's private tmp dir where the byid link lives. The agent must still find the disk
    # (it matches by the device a path resolves to).
    dom = _start(vm_conn, name, os.path.realpath(device))
    try:
        assert dom.isActive()
        assert dom.blockInfo("vdb", 0)[0] == 64 * MiB
        # The driver grows the volume in StorPool; every attached device grows with it ...
        lab.conn.volume_update(vol, size=192 * MiB)
        assert os.path.getsize(device) in (0, 192 * MiB)
        assert dom.blockInfo("vdb", 0)[0] == 64 * MiB  # ... but qemu does not know yet.
        out = execute(ctx, "resize", {"volume": "/dev/storpool-byid/" + lab.gid(vol), "size": 192 * MiB,
                                      "vm": name})
        assert out["notified"] is True and out["disk"] == "vdb"
        assert out["capacity"] == 192 * MiB
        assert dom.blockInfo("vdb", 0)[0] == 192 * MiB
        # By uuid too, and repeating it is harmless.
        again = execute(ctx, "resize", {"volume": vol, "size": 192 * MiB, "vm": dom.UUIDString()})
        assert again["capacity"] == 192 * MiB
        # A VM not running here needs no notification.
        away = execute(ctx, "resize", {"volume": vol, "size": 192 * MiB, "vm": "no-such-vm-" + name})
        assert away["notified"] is False
    finally:
        dom.destroy()
    execute(ctx, "resize", {"volume": vol, "size": 192 * MiB, "vm": name})  # gone: no error
    lab.conn.detach(Ref("volume", vol), 1)


def test_resize_refuses_a_size_storpool_does_not_have(lab: Lab) -> None:
    vol = lab.volume(64 * MiB)
    with pytest.raises(Exception) as exc:
        execute(lab.ctx(1), "resize", {"volume": vol, "size": 128 * MiB, "vm": "x"})
    assert getattr(exc.value, "field", None) == "size"


def test_safe_start_detaches_the_volume_from_every_other_client(lab: Lab) -> None:
    vol = lab.volume(32 * MiB)
    other = lab.volume(32 * MiB)
    lab.conn.attach(Ref("volume", vol), 2, "rw")
    lab.conn.attach(Ref("volume", other), 3, "ro")
    assert lab.attached_clients(vol) == [(2, "rw")]
    # Client 2 even holds its device open (a qemu that did not die): the detach is forced.
    fd = os.open(lab.host(2).device_path(lab.gid(vol)), os.O_RDONLY)
    try:
        out = execute(lab.ctx(1), "prepare_start", {"volumes": [vol, "/dev/storpool-byid/" + lab.gid(other)]})
    finally:
        os.close(fd)
    assert [v["detached_from"] for v in out["volumes"]] == [[2], [3]]
    assert lab.attached_clients(vol) == [(1, "rw")]
    assert lab.attached_clients(other) == [(1, "rw")]
    assert device_size(out["volumes"][0]["device"]) == 32 * MiB
    # Idempotent: nothing else to detach the second time.
    again = execute(lab.ctx(1), "prepare_start", {"volumes": [vol]})
    assert again["volumes"][0]["detached_from"] == []
    only_detach = execute(lab.ctx(2), "prepare_start", {"volumes": [vol], "attach": False})
    assert only_detach["volumes"][0]["detached_from"] == [1]
    assert lab.attached_clients(vol) == []
    lab.conn.detach(Ref("volume", other))
