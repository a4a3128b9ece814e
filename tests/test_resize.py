"""Resize: StorPool first, the VM's host next, rollback on failure."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from cloudstack_storpool.agent import commands
from cloudstack_storpool.agent.hostconfig import HostConfig
from cloudstack_storpool.agentapi.client import AgentClient, AgentRequestError
from cloudstack_storpool.agentapi.command_types import Request
from cloudstack_storpool.driver import resize
from cloudstack_storpool.driver.resize import ResizeFailed
from cloudstack_storpool.errors import ValidationError
from tests.agent_support import TOKEN, serve_agent
from tests.driver_harness import Env, MiB, new_uuid


def vm(env: Env, name: str) -> tuple[str, str, str]:
    v = next(v for v in env.cs.model.vms.values() if v.name == name)
    return v.id, v.instance_name, str(v.host_id or v.last_host_id)


def test_no_host_given_touches_no_agent(env: Env) -> None:
    """A volume without a VM (or whose VM never ran): CloudStack hands no host."""
    vid, ref = env.volume(8 * MiB)
    res = resize.resize_volume(env.ctx, volume_uuid=vid, new_size=16 * MiB, host_ids=[], instance_name="none")
    assert env.conn.volume(ref).size == 16 * MiB
    assert res.host_id is None and not res.notified and res.old_size == 8 * MiB
    assert env.agents.all_calls() == []


def test_the_given_host_is_told(env: Env) -> None:
    """Within `storpool.agent.timeout`, read at this use: the agent stops the command there too."""
    vm_id, instance, host = vm(env, "vm1")
    vid, ref = env.volume(8 * MiB, vm_id=vm_id)
    env.set_setting("storpool.agent.timeout", 7)
    try:
        res = resize.resize_volume(env.ctx, volume_uuid=vid, new_size=24 * MiB, host_ids=[host],
                                   instance_name=instance)
    finally:
        env.set_setting("storpool.agent.timeout", 60)
    assert res.host_id == host and res.notified
    assert env.agents.by_host[host].calls == [("resize", {"volume": ref, "size": 24 * MiB, "vm": instance,
                                                          "timeout": 7.0})]
    other = [h for h in env.agents.by_host if h != host]
    assert all(not env.agents.by_host[h].calls for h in other)


def test_a_stopped_vm_s_last_host_is_told(env: Env) -> None:
    """The public API shows no last host of a stopped VM; the caller (CloudStack) hands it, and
    the driver tells that host rather than none."""
    vm_id, instance, _ = vm(env, "vm1")
    last = env.cs.model.vms[vm_id].host_id
    assert last is not None
    env.cs.model.stop_vm(vm_id)
    vid, ref = env.volume(8 * MiB, vm_id=vm_id)
    res = resize.resize_volume(env.ctx, volume_uuid=vid, new_size=16 * MiB, host_ids=[last], instance_name=instance)
    assert env.conn.volume(ref).size == 16 * MiB and res.host_id == last
    assert env.agents.by_host[last].calls == [("resize", {"volume": ref, "size": 16 * MiB, "vm": instance,
                                                          "timeout": 60.0})]


def test_an_unreachable_host_passes_to_the_next(env: Env) -> None:
    """StorageManagerImpl.sendToPool moves on while a host is unavailable, and only then."""
    vm_id, instance, first = vm(env, "vm1")
    second = next(h for h in env.cs.model.hosts if h != first)
    vid, ref = env.volume(8 * MiB, vm_id=vm_id)
    env.agents.for_host(first).fail["resize"] = AgentRequestError("agent unreachable", code="unreachable")
    res = resize.resize_volume(env.ctx, volume_uuid=vid, new_size=16 * MiB, host_ids=[first, second],
                               instance_name=instance)
    assert res.host_id == second and env.agents.by_host[second].calls[0][0] == "resize"
    env.agents.for_host(second).fail["resize"] = NOT_APPLIED
    with pytest.raises(ResizeFailed) as err:
        resize.resize_volume(env.ctx, volume_uuid=vid, new_size=32 * MiB, host_ids=[second, first],
                             instance_name=instance)
    assert err.value.rolled_back and f"host {second}" in str(err.value)
    assert len(env.agents.by_host[first].calls) == 1  # a command that ran and failed is the answer
    assert env.conn.volume(ref).size == 16 * MiB


def test_a_bad_host_id_is_refused_before_anything_changes(env: Env) -> None:
    vid, ref = env.volume(8 * MiB)
    with pytest.raises(ValidationError) as bad:
        resize.resize_volume(env.ctx, volume_uuid=vid, new_size=16 * MiB, host_ids=["h1", ""])
    assert bad.value.field == "host_ids[1]"
    with pytest.raises(ValidationError) as no_vm:
        resize.resize_volume(env.ctx, volume_uuid=vid, new_size=16 * MiB, host_ids=["h1"], instance_name="none")
    assert no_vm.value.field == "instance_name"
    with pytest.raises(ValidationError) as not_list:
        resize.resize_volume(env.ctx, volume_uuid=vid, new_size=16 * MiB, host_ids="h1")  # type: ignore[arg-type]
    assert not_list.value.field == "host_ids"
    assert env.conn.volume(ref).size == 8 * MiB and env.agents.all_calls() == []


def test_refusals_before_anything_changes(env: Env) -> None:
    vid, ref = env.volume(16 * MiB)
    before = dict(env.sp.calls)
    with pytest.raises(ValidationError) as e1:
        resize.resize_volume(env.ctx, volume_uuid=vid, host_ids=[], new_size=8 * MiB)
    assert e1.value.field == "new_size" and "shrink" in e1.value.message
    with pytest.raises(ValidationError) as e2:
        resize.resize_volume(env.ctx, volume_uuid=vid, host_ids=[], new_size=16 * MiB + 100)
    assert e2.value.field == "new_size"
    with pytest.raises(ValidationError) as e3:
        resize.resize_volume(env.ctx, volume_uuid=vid, host_ids=[], new_size=32 * MiB, disk_offering_id=new_uuid())
    assert e3.value.field == "disk_offering_id"
    assert env.sp.calls.get("VolumeUpdate", 0) == before.get("VolumeUpdate", 0)
    assert env.conn.volume(ref).size == 16 * MiB
    resize.resize_volume(env.ctx, volume_uuid=vid, host_ids=[], new_size=8 * MiB, shrink_ok=True)
    assert env.conn.volume(ref).size == 8 * MiB


def test_new_offering_applies_template_qc_and_iops(env: Env) -> None:
    vid, ref = env.volume(8 * MiB, max_iops=100)
    iops_off = next(o for o in env.cs.model.disk_offerings.values() if o.name == "sp-iops-500")
    res = resize.resize_volume(env.ctx, volume_uuid=vid, host_ids=[], new_size=16 * MiB, disk_offering_id=iops_off.id)
    vol = env.conn.volume(ref)
    assert (vol.size, vol.iops, res.iops) == (16 * MiB, 500, 500)
    gold = next(o for o in env.cs.model.disk_offerings.values() if o.name == "sp-gold")
    resize.resize_volume(env.ctx, volume_uuid=vid, host_ids=[], new_size=16 * MiB, disk_offering_id=gold.id)
    assert env.conn.volume(ref).tags["qc"] == "gold"


def _agent_fails(env: Env, host: str, error: AgentRequestError) -> None:
    def resize(**args: object) -> dict[str, object]:
        raise error

    env.agents.for_host(host).resize = resize  # type: ignore[method-assign]


NOT_APPLIED = AgentRequestError("libvirt: block resize failed", code="resize", applied=False)


def test_agent_confirmed_failure_rolls_back_size_iops_and_qc(env: Env) -> None:
    vm_id, instance, host = vm(env, "vm1")
    vid, ref = env.volume(8 * MiB, vm_id=vm_id, max_iops=100)
    _agent_fails(env, host, NOT_APPLIED)
    gold = next(o for o in env.cs.model.disk_offerings.values() if o.name == "sp-gold")
    with pytest.raises(ResizeFailed) as err:
        resize.resize_volume(env.ctx, volume_uuid=vid, host_ids=[host], instance_name=instance, new_size=32 * MiB,
                             disk_offering_id=gold.id)
    assert err.value.rolled_back
    assert "block resize failed" in str(err.value) and f"restored to {8 * MiB}" in str(err.value)
    vol = env.conn.volume(ref)
    assert (vol.size, vol.iops) == (8 * MiB, 100) and "qc" not in vol.tags


@pytest.mark.parametrize("error", [
    AgentRequestError("lost contact with agent while job 1 ran", code="lost", job_id="1"),
    AgentRequestError("agent unreachable: ReadTimeout", code="unreachable"),
    AgentRequestError("job 1 did not finish within 60 s", code="timeout", job_id="1"),
    AgentRequestError("libvirt: block resize failed", code="failed"),  # no confirmation in the answer
], ids=["lost", "unreachable", "timeout", "unconfirmed"])
def test_unconfirmed_failure_leaves_the_volume_grown(env: Env, error: AgentRequestError) -> None:
    """The host may already have grown the disk under the running guest; shrinking
    StorPool beneath it is worse than leaving it grown."""
    vm_id, instance, host = vm(env, "vm1")
    vid, ref = env.volume(8 * MiB, vm_id=vm_id, max_iops=100)
    _agent_fails(env, host, error)
    updates_before = env.sp.calls.get("VolumeUpdate", 0)
    with pytest.raises(ResizeFailed) as err:
        resize.resize_volume(env.ctx, volume_uuid=vid, host_ids=[host], instance_name=instance, new_size=32 * MiB)
    assert not err.value.rolled_back
    assert f"left at {32 * MiB} bytes" in str(err.value)
    assert env.conn.volume(ref).size == 32 * MiB
    assert env.sp.calls.get("VolumeUpdate", 0) == updates_before + 1  # the resize only, no shrink back


def test_failed_rollback_is_reported(env: Env) -> None:
    vm_id, instance, host = vm(env, "vm1")
    vid, _ = env.volume(8 * MiB, vm_id=vm_id)
    _agent_fails(env, host, NOT_APPLIED)
    orig = env.conn.volume_update
    calls = {"n": 0}

    def flaky(name: str, **kw: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValidationError("size", "refused")
        orig(name, **kw)  # type: ignore[arg-type]

    env.conn.volume_update = flaky  # type: ignore[method-assign]
    with pytest.raises(ResizeFailed) as err:
        resize.resize_volume(env.ctx, volume_uuid=vid, host_ids=[host], instance_name=instance, new_size=16 * MiB)
    assert not err.value.rolled_back and "FAILED" in str(err.value)


@dataclass(frozen=True, kw_only=True)
class _ResizeBeforeVmField(Request):
    """The resize request of an agent older than the driver: it knows no `vm` field."""

    volume: str
    size: int


@pytest.mark.parametrize("refusal", ["older agent: unknown field", "wrong agent token"])
def test_a_submission_the_real_agent_refuses_rolls_back(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        refusal: str) -> None:
    """The agent refused the job itself (400 / 401 on POST /v1/jobs): no job ran, nothing on the
    host changed, so StorPool goes back to the old size and limit."""
    vm_id, instance, host = vm(env, "vm1")
    vid, ref = env.volume(8 * MiB, vm_id=vm_id, max_iops=100)
    token = TOKEN
    if refusal.startswith("older agent"):
        old = commands.COMMANDS["resize"]
        monkeypatch.setitem(commands.COMMANDS, "resize", replace(old, request=_ResizeBeforeVmField))
    else:
        token = "not-the-agent-token"
    config = HostConfig(client_id=1, dev_root=str(tmp_path / "dev"), mount_root=str(tmp_path / "mnt"),
                        secondary_roots=(str(tmp_path),))
    with serve_agent(config) as srv:
        real = AgentClient(f"http://127.0.0.1:{srv.server_address[1]}", token, poll_interval=0.02)
        env.agents.for_host(host).resize = real.resize  # type: ignore[method-assign]
        with pytest.raises(ResizeFailed) as err:
            resize.resize_volume(env.ctx, volume_uuid=vid, host_ids=[host], instance_name=instance, new_size=32 * MiB)
        assert srv.jobs.list() == []  # the agent started nothing
    assert err.value.rolled_back, err.value
    cause = err.value.__cause__
    assert isinstance(cause, AgentRequestError) and cause.applied is False
    assert cause.status == (400 if refusal.startswith("older agent") else 401)
    if refusal.startswith("older agent"):
        assert cause.field == "vm"
    vol = env.conn.volume(ref)
    assert (vol.size, vol.iops) == (8 * MiB, 100)
