"""Every claim the demo prints is a measurement: break the driver (or the heartbeat checker) so
that one claim becomes false, and the demo's check of exactly that claim fails.

Each test runs one demo step in-process on a local stack shared by the module: first as it is
(every check holds, so the failure that follows can only come from the break), then with one
deliberate break monkeypatched in. The breaks are the regressions the old, weaker checks let
through: an extra StorPool call per root volume (only VolumeCreate was counted), a second
group call in the first VM snapshot (only the retake was counted), a GC that deletes a cache
still in use (only a dry run was looked at), a volume that is a copy rather than a child of its
snapshot (only agent copies were counted), a ServicesList per pool rather than per cluster
(any number of calls passed).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudstack_storpool.errors import SpExists
from cloudstack_storpool.heartbeat import check as heartbeat_check
from cloudstack_storpool.poolconfig import PoolSpec
from cloudstack_storpool.spconn import Created, StorPoolConn
from integration.demo import CheckFailed, Demo
from integration.needs import need_root, need_tool
from integration.stack import LocalStack

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    need_root()
    need_tool("qemu-img")
    root: Path = tmp_path_factory.mktemp("demo-claims")
    with LocalStack(root, heartbeat_interval=1.0) as stack:
        yield Demo(stack, lambda _: None, pool=stack.pool_id("storpool-primary"))


def breaks(monkeypatch: pytest.MonkeyPatch, target: object, name: str, broken: object,
           step: Callable[[], list[str]], claim: str) -> None:
    """With `target.name` replaced by `broken`, `step` fails, and the check that failed is the
    one printing `claim`."""
    monkeypatch.setattr(target, name, broken)
    with pytest.raises(CheckFailed) as failed:
        step()
    assert claim in str(failed.value)


def test_root_volumes_count_every_storpool_call(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    demo.template_cache()
    create = StorPoolConn.volume_create

    def with_read_back(self: StorPoolConn, **kw: Any) -> Created:
        """Patched on the class: the deploys reach the driver through the service, in-process."""
        made = create(self, **kw)
        if kw.get("parent"):
            self.volume(made.name)  # one StorPool call more than the VolumeCreate
        return made

    breaks(monkeypatch, StorPoolConn, "volume_create", with_read_back,
           demo.template_cache, "each VM's root volume is exactly 2 StorPool calls")


def test_volume_from_snapshot_must_be_its_child(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    demo.snapshot_bypass()
    demo.volume_from_snapshot()
    create = StorPoolConn.volume_create
    sp = demo.stack.sp

    def copy_instead_of_child(self: StorPoolConn, *, parent: str | None = None, size: int | None = None,
                              **kw: Any) -> Created:
        """The same bytes, no agent copy, but not a child: StorPool holds the data twice."""
        if parent is None:
            return create(self, size=size, **kw)
        source = sp.api().snapshotList(parent)[0]
        made = create(self, size=size or source.size, **kw)
        shutil.copyfile(sp.object_file(source.globalId), sp.object_file(made.global_id))
        return made

    breaks(monkeypatch, StorPoolConn, "volume_create", copy_instead_of_child,
           demo.volume_from_snapshot, "the volume is a StorPool child of the snapshot")


def test_vm_snapshot_counts_the_first_group_call(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    demo.vm_snapshot()
    group_snapshot = StorPoolConn.group_snapshot

    def twice(self: StorPoolConn, members: Iterable[tuple[str, str | None]], **kw: Any) -> Any:
        members = list(members)
        made = group_snapshot(self, members, **kw)
        with contextlib.suppress(SpExists):  # a second group call, refused: the members exist
            group_snapshot(self, members, **kw)
        return made

    breaks(monkeypatch, StorPoolConn, "group_snapshot", twice,
           demo.vm_snapshot, "one VolumesGroupSnapshot over 3 disks")


def test_gc_keeping_a_used_template_is_a_real_run(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    demo.template_cache()
    demo.template_gc()
    demo.template_cache()
    # A GC that takes every template for deleted in CloudStack (neither listed nor found by id):
    # a dry run deletes nothing either way.
    monkeypatch.setattr(demo.stack.ctx.cloudstack, "template", lambda template_id: None)
    breaks(monkeypatch, demo.stack.ctx.cloudstack, "templates", lambda *args, **kwargs: [],
           demo.template_gc, "template in use: a real GC run keeps its cache")


def test_heartbeat_counts_services_list_per_cluster(demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    demo.heartbeat()

    def one_per_pool(pools: Iterable[PoolSpec], factory: heartbeat_check.ConnFactory,
                     timeout: float) -> list[heartbeat_check.Cluster]:
        return [heartbeat_check.Cluster(p.endpoint, [p], factory(p, timeout)) for p in pools]

    breaks(monkeypatch, heartbeat_check, "group_clusters", one_per_pool,
           demo.heartbeat, "all alive: one ServicesList per cluster")
