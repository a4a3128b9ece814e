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
    return v.id, v.instance_name, str(v.host_id)


def test_grow_detached_volume_touches_no_agent(env: Env) -> None:
    vid, ref = env.volume(8 * MiB)
    res = resize.resize_volume(env.ctx, volume_uuid=vid, new_size=16 * MiB)
    assert env.conn.volume(ref).size == 16 * MiB
    assert res.host_id is None and not res.notified and res.old_size == 8 * MiB
    assert env.agents.all_calls() == []


def test_running_vm_goes_to_its_host(env: Env) -> None:
    vm_id, instance, host = vm(env, "vm1")
    vid, ref = env.volume(8 * MiB, vm_id=vm_id)
    res = resize.resize_volume(env.ctx, volume_uuid=vid, new_size=24 * MiB)
    assert res.host_id == host and res.notified
    assert env.agents.by_host[host].calls == [("resize", {"volume": ref, "size": 24 * MiB, "vm": instance})]
    other = [h for h in env.agents.by_host if h != host]
    assert all(not env.agents.by_host[h].calls for h in other)


def test_stopped_vm_is_resized_on_storpool_only(env: Env) -> None:
    """A stopped VM is on no host (CloudStack tells no last host): no agent, as in the Java plugin."""
    vm_id, _, _ = vm(env, "vm2")
    vid, ref = env.volume(8 * MiB, vm_id=vm_id)
    res = resize.resize_volume(env.ctx, volume_uuid=vid, new_size=16 * MiB)
    assert env.conn.volume(ref).size == 16 * MiB
    assert res.host_id is None and not res.notified and env.agents.all_calls() == []


def test_refusals_before_anything_changes(env: Env) -> None:
    vid, ref = env.volume(16 * MiB)
    before = dict(env.sp.calls)
    with pytest.raises(ValidationError) as e1:
        resize.resize_volume(env.ctx, volume_uuid=vid, new_size=8 * MiB)
    assert e1.value.field == "new_size" and "shrink" in e1.value.message
    with pytest.raises(ValidationError) as e2:
        resize.resize_volume(env.ctx, volume_uuid=vid, new_size=16 * MiB + 100)
    assert e2.value.field == "new_size"
    with pytest.raises(ValidationError) as e3:
        resize.resize_volume(env.ctx, volume_uuid=vid, new_size=32 * MiB, disk_offering_id=new_uuid())
    assert e3.value.field == "disk_offering_id"
    assert env.sp.calls.get("VolumeUpdate", 0) == before.get("VolumeUpdate", 0)
    assert env.conn.volume(ref).size == 16 * MiB
    resize.resize_volume(env.ctx, volume_uuid=vid, new_size=8 * MiB, shrink_ok=True)
    assert env.conn.volume(ref).size == 8 * MiB


def test_new_offering_applies_template_qc_and_iops(env: Env) -> None:
    vid, ref = env.volume(8 * MiB, max_iops=100)
    iops_off = next(o for o in env.cs.model.disk_offerings.values() if o.name == "sp-iops-500")
    res = resize.resize_volume(env.ctx, volume_uuid=vid, new_size=16 * MiB, disk_offering_id=iops_off.id)
    vol = env.conn.volume(ref)
    assert (vol.size, vol.iops, res.iops) == (16 * MiB, 500, 500)
    gold = next(o for o in env.cs.model.disk_offerings.values() if o.name == "sp-gold")
    resize.resize_volume(env.ctx, volume_uuid=vid, new_size=16 * MiB, disk_offering_id=gold.id)
    assert env.conn.volume(ref).tags["qc"] == "gold"


def _agent_fails(env: Env, host: str, error: AgentRequestError) -> None:
    def resize(**args: object) -> dict[str, object]:
        raise error

    env.agents.for_host(host).resize = resize  # type: ignore[method-assign]


NOT_APPLIED = AgentRequestError("libvirt: block resize failed", code="resize", applied=False)


def test_agent_confirmed_failure_rolls_back_size_iops_and_qc(env: Env) -> None:
    vm_id, _, host = vm(env, "vm1")
    vid, ref = env.volume(8 * MiB, vm_id=vm_id, max_iops=100)
    _agent_fails(env, host, NOT_APPLIED)
    gold = next(o for o in env.cs.model.disk_offerings.values() if o.name == "sp-gold")
    with pytest.raises(ResizeFailed) as err:
        resize.resize_volume(env.ctx, volume_uuid=vid, new_size=32 * MiB, disk_offering_id=gold.id)
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
    vm_id, _, host = vm(env, "vm1")
    vid, ref = env.volume(8 * MiB, vm_id=vm_id, max_iops=100)
    _agent_fails(env, host, error)
    updates_before = env.sp.calls.get("VolumeUpdate", 0)
    with pytest.raises(ResizeFailed) as err:
        resize.resize_volume(env.ctx, volume_uuid=vid, new_size=32 * MiB)
    assert not err.value.rolled_back
    assert f"left at {32 * MiB} bytes" in str(err.value)
    assert env.conn.volume(ref).size == 32 * MiB
    assert env.sp.calls.get("VolumeUpdate", 0) == updates_before + 1  # the resize only, no shrink back


def test_failed_rollback_is_reported(env: Env) -> None:
    vm_id, _, host = vm(env, "vm1")
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
        resize.resize_volume(env.ctx, volume_uuid=vid, new_size=16 * MiB)
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
    vm_id, _, host = vm(env, "vm1")
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
            resize.resize_volume(env.ctx, volume_uuid=vid, new_size=32 * MiB)
        assert srv.jobs.list() == []  # the agent started nothing
    assert err.value.rolled_back, err.value
    cause = err.value.__cause__
    assert isinstance(cause, AgentRequestError) and cause.applied is False
    assert cause.status == (400 if refusal.startswith("older agent") else 401)
    if refusal.startswith("older agent"):
        assert cause.field == "vm"
    vol = env.conn.volume(ref)
    assert (vol.size, vol.iops) == (8 * MiB, 100)
