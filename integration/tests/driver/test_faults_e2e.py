"""Fault injection at every step of a snapshot with backup and of a template from a snapshot,
on the local stack: a StorPool error, an agent error and a lost response at each step. Whatever
happens, no StorPool object is orphaned, nothing stays attached, and no partial file is left
on secondary storage; a lost response never makes a second object or a second copy."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from cloudstack_storpool.driver import naming, snapshots, templates, volumes
from cloudstack_storpool.driver.snapshots import SecondaryLocation
from cloudstack_storpool.errors import ProjectError
from integration.stack import LocalStack, new_uuid

pytestmark = pytest.mark.root

MiB = 1 << 20
Fault = Callable[[LocalStack], None]


def make_volume(stack: LocalStack, size: int = 8 * MiB) -> tuple[str, str]:
    vid = new_uuid()
    info = volumes.create(stack.ctx, stack.pool_id(), vid, size)
    stack.cs.model.add_volume(f"vol-{vid[:6]}", size, storage_id=stack.pool_id(), path=info.path, volume_id=vid)
    stack.sp.write_object(info.global_id, 0, os.urandom(size))  # incompressible: the qcow2 is as big as the volume
    return vid, info.global_id


def live_objects(stack: LocalStack) -> set[str]:
    conn = stack.ctx.conn(stack.pool_id())
    return {v.name for v in conn.volumes()} | {s.name for s in conn.snapshots() if not s.deleted}


class LossySession(requests.Session):
    """Delivers the next job POSTs but loses their answers (the agent did start the job)."""

    def __init__(self, drops: int) -> None:
        super().__init__()
        self.drops = drops

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        resp = super().request(method, url, *args, **kwargs)
        if method == "POST" and str(url).endswith("/v1/jobs") and self.drops > 0:
            self.drops -= 1
            raise requests.ConnectionError("connection reset after the request was applied")
        return resp


def lose_agent_answers(stack: LocalStack) -> None:
    for handle in stack.agents.values():
        client = stack.ctx.agents.for_address("127.0.0.1", handle.server.server_address[1])
        client._session = LossySession(1)


@contextmanager
def tiny_store(stack: LocalStack) -> Iterator[str]:
    """A 1 MiB filesystem inside the secondary root: a copy runs out of space part-way."""
    mnt = stack.secondary / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield "tiny"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        mnt.rmdir()


# name -> (fault, expect success, store subdirectory "" or "tiny")
SNAPSHOT_FAULTS: dict[str, tuple[Fault, bool]] = {
    "snapshot-storpool-error": (lambda s: s.sp.faults.fail_next("VolumeSnapshot", error="insufficientResources"), False),
    "snapshot-transient-error": (lambda s: s.sp.faults.fail_next("VolumeSnapshot", transient=True), True),
    "snapshot-lost-response": (lambda s: s.sp.faults.drop_after_apply("VolumeSnapshot"), True),
    "snapshot-dropped-request": (lambda s: s.sp.faults.drop_before_apply("VolumeSnapshot"), True),
    "agent-attach-storpool-error": (lambda s: s.sp.faults.fail_next("VolumesReassignWait", error="notAllowed"), False),
    "agent-attach-lost-response": (lambda s: s.sp.faults.drop_after_apply("VolumesReassignWait"), True),
    "agent-job-lost-response": (lose_agent_answers, True),
    "agent-error-and-cleanup-transient": (
        lambda s: (s.sp.faults.fail_next("VolumesReassignWait", error="notAllowed"),
                   s.sp.faults.fail_next("SnapshotDelete", transient=True)), False),
    "agent-error-and-detach-lost": (
        lambda s: (s.sp.faults.fail_next("VolumesReassignWait", error="notAllowed"),
                   s.sp.faults.drop_after_apply("VolumesReassign")), False),
}


@pytest.mark.parametrize("case", sorted(SNAPSHOT_FAULTS))
def test_snapshot_with_backup_under_faults(stack: LocalStack, case: str) -> None:
    fault, succeeds = SNAPSHOT_FAULTS[case]
    stack.set_bypass(False, wait=True)
    vid, _ = make_volume(stack)
    before = live_objects(stack)
    sid = new_uuid()
    where = SecondaryLocation(str(stack.secondary), f"snapshots/2/{sid}.qcow2")
    fault(stack)
    if succeeds:
        info = snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid, secondary=where)
        assert live_objects(stack) == before | {naming.snapshot(sid)}
        assert stack.secondary_files() == {where.path}
        assert info.backup is not None and info.backup.virtual_size == 8 * MiB
        if case == "agent-job-lost-response":
            assert len(stack.agent_jobs()) == 1
    else:
        with pytest.raises(ProjectError):
            snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid, secondary=where)
        assert live_objects(stack) == before
        assert stack.secondary_files() == set()
    assert stack.ctx.conn(stack.pool_id()).attachments() == []


def test_snapshot_backup_running_out_of_space(stack: LocalStack) -> None:
    stack.set_bypass(False, wait=True)
    vid, _ = make_volume(stack)
    before = live_objects(stack)
    with tiny_store(stack) as sub:
        where = SecondaryLocation(str(stack.secondary), f"{sub}/snap.qcow2")
        with pytest.raises(ProjectError, match="removed") as err:
            snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=new_uuid(), secondary=where)
        assert os.listdir(stack.secondary / sub) == []  # the partial qcow2 was removed
    assert "space" in str(err.value).lower()
    assert live_objects(stack) == before
    assert stack.ctx.conn(stack.pool_id()).attachments() == []


def test_snapshot_backup_refused_by_the_agent(stack: LocalStack, tmp_path: Path) -> None:
    """A store the agent does not accept (outside its secondary roots) fails after the
    snapshot was taken: the snapshot goes again."""
    stack.set_bypass(False, wait=True)
    vid, _ = make_volume(stack)
    before = live_objects(stack)
    with pytest.raises(ProjectError, match="secondary-storage root"):
        snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=new_uuid(),
                                secondary=SecondaryLocation(str(tmp_path), "x.qcow2"))
    assert live_objects(stack) == before and list(tmp_path.iterdir()) == []


TEMPLATE_FAULTS: dict[str, tuple[Fault, bool]] = {
    "fill-create-storpool-error": (lambda s: s.sp.faults.fail_next("VolumeCreate", error="insufficientResources"), False),
    "fill-create-lost-response": (lambda s: s.sp.faults.drop_after_apply("VolumeCreate"), True),
    "cache-snapshot-storpool-error": (lambda s: s.sp.faults.fail_next("VolumeSnapshot", error="busy"), False),
    "cache-snapshot-lost-response": (lambda s: s.sp.faults.drop_after_apply("VolumeSnapshot"), True),
    "fill-delete-transient-error": (lambda s: s.sp.faults.fail_next("VolumeDelete", transient=True), True),
    "fill-delete-lost-response": (lambda s: s.sp.faults.drop_after_apply("VolumeDelete"), True),
    "agent-attach-storpool-error": (lambda s: s.sp.faults.fail_next("VolumesReassignWait", error="notAllowed"), False),
    "agent-attach-lost-response": (lambda s: s.sp.faults.drop_after_apply("VolumesReassignWait"), True),
    "agent-job-lost-response": (lose_agent_answers, True),
    "agent-error-and-cleanup-transient": (
        lambda s: (s.sp.faults.fail_next("VolumesReassignWait", error="notAllowed"),
                   s.sp.faults.fail_next("SnapshotDelete", transient=True)), False),
}


@pytest.mark.parametrize("case", sorted(TEMPLATE_FAULTS))
def test_template_from_snapshot_under_faults(stack: LocalStack, case: str) -> None:
    fault, succeeds = TEMPLATE_FAULTS[case]
    stack.set_bypass(True, wait=True)
    vid, _ = make_volume(stack)
    sid = new_uuid()
    snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid)
    before = live_objects(stack)
    tid = new_uuid()
    cache = naming.template_cache(tid, stack.pool_id())
    where = SecondaryLocation(str(stack.secondary), f"template/tmpl/2/{tid}/{tid}.qcow2")
    fault(stack)
    if succeeds:
        out = snapshots.template_from_snapshot(stack.ctx, pool=stack.pool_id(), template_uuid=tid, snapshot_uuid=sid,
                                               secondary=where)
        assert live_objects(stack) == before | {cache}
        assert stack.secondary_files() == {where.path}
        assert out.secondary is not None and out.secondary.virtual_size == 8 * MiB
        if case == "agent-job-lost-response":
            assert len(stack.agent_jobs()) == 1
    else:
        with pytest.raises(ProjectError):
            snapshots.template_from_snapshot(stack.ctx, pool=stack.pool_id(), template_uuid=tid, snapshot_uuid=sid,
                                             secondary=where)
        assert live_objects(stack) == before
        assert templates.cached(stack.ctx, stack.pool_id(), tid) is None
        assert stack.secondary_files() == set()
    assert stack.ctx.conn(stack.pool_id()).attachments() == []


def test_template_copy_running_out_of_space(stack: LocalStack) -> None:
    stack.set_bypass(True, wait=True)
    vid, _ = make_volume(stack)
    sid = new_uuid()
    snapshots.take_snapshot(stack.ctx, volume_uuid=vid, snapshot_uuid=sid)
    before = live_objects(stack)
    tid = new_uuid()
    with tiny_store(stack) as sub:
        with pytest.raises(ProjectError, match=r"cached template .* was removed"):
            snapshots.template_from_snapshot(stack.ctx, pool=stack.pool_id(), template_uuid=tid, snapshot_uuid=sid,
                                             secondary=SecondaryLocation(str(stack.secondary), f"{sub}/t.qcow2"))
        assert os.listdir(stack.secondary / sub) == []
    assert live_objects(stack) == before
    assert templates.cached(stack.ctx, stack.pool_id(), tid) is None
