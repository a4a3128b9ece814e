"""`pool adopt --delete-orphans` against a live cloud: what is made while it runs, what CloudStack
records while it decides, and the kinds of object no CloudStack record stands for.

The races are made to happen at one exact point with the emulator's holds (a StorPool call
that waits until the test releases it), never with sleeps: the real bindings against the
emulator, the real `cs` client against the simulator.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cloudstack_storpool import names
from cloudstack_storpool.driver import adopt
from integration import javacloud
from integration.javacloud import JavaCloud, JavaWire
from integration.stack import LocalStack, new_uuid

MiB = 1 << 20
DATA = b"written by a guest"


@pytest.fixture
def java(stack: LocalStack) -> Iterator[JavaCloud]:
    yield javacloud.build(stack)


def _in_background(fn: Callable[[], adopt.AdoptReport]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["report"] = fn()
        except BaseException as exc:  # handed to the test's thread
            out["error"] = exc

    t = threading.Thread(target=run, name="adopt", daemon=True)
    t.start()
    return t, out


def _finished(t: threading.Thread, out: dict[str, Any]) -> adopt.AdoptReport:
    t.join(120)
    assert not t.is_alive(), "adopt did not finish"
    if "error" in out:
        raise out["error"]
    report = out["report"]
    assert isinstance(report, adopt.AdoptReport)
    return report


def _java_volume(stack: LocalStack, wire: JavaWire, java: JavaCloud, *, in_cloudstack: bool) -> tuple[str, str]:
    """A data volume made the Java plugin's way, holding data: CloudStack records it first
    (createVolume), then the plugin makes it on StorPool and CloudStack stores its path.
    (uuid, `~globalId`)."""
    vid = new_uuid()
    if in_cloudstack:
        stack.cs.model.add_volume(f"vol-{vid[:8]}", 16 * MiB, storage_id=java.pool_id, volume_id=vid)
    ref = wire.volume_create(vid, None, 16 * MiB, None, None, "volume", None)
    if in_cloudstack:
        stack.cs.model.update_volume(vid, path=names.name_to_path(ref))
    stack.sp.write_object(ref, 0, DATA)
    return vid, ref


def test_a_volume_made_while_adopt_lists_storpool_is_not_an_orphan(stack: LocalStack, java: JavaCloud) -> None:
    """CloudStack's volume, then its StorPool volume, made while adopt's StorPool listing waits:
    the listing holds the volume, and CloudStack (listed after it) holds its record."""
    wire = JavaWire(stack.sp, javacloud.JAVA_TEMPLATE)
    gate = stack.sp.faults.hold("VolumesList")
    t, out = _in_background(lambda: adopt.adopt(stack.ctx, java.pool_id, delete_orphans=True, min_age=0))
    try:
        assert gate.arrived.wait(60), "adopt never listed StorPool's volumes"
        _, ref = _java_volume(stack, wire, java, in_cloudstack=True)
    finally:
        gate.release()
    report = _finished(t, out)

    assert ref not in {a.ref for a in report.orphans}, report.orphans
    assert [a.action for a in report.actions if a.ref == ref] == [adopt.TAG]
    assert stack.sp.read_object(ref, 0, len(DATA)) == DATA
    assert java.orphan_volume in report.done  # the real orphan, older than the run, still goes
    assert stack.ctx.conn(java.pool_id).volume(java.orphan_volume) is None


def test_an_orphan_cloudstack_records_before_the_delete_is_spared(stack: LocalStack, java: JavaCloud) -> None:
    """Listed as an orphan, then recorded by CloudStack while adopt reads it again from StorPool
    just before deleting it: CloudStack is asked again by its uuid, and it stays."""
    wire = JavaWire(stack.sp, javacloud.JAVA_TEMPLATE)
    vid, ref = _java_volume(stack, wire, java, in_cloudstack=False)
    found = stack.ctx.conn(java.pool_id).volume(java.orphan_volume)
    assert found is not None
    orphan_uuid = found.tags["uuid"]
    gate = stack.sp.faults.hold("Volume")  # the look-up by id before the first delete
    t, out = _in_background(lambda: adopt.adopt(stack.ctx, java.pool_id, delete_orphans=True, min_age=0))
    try:
        assert gate.arrived.wait(60), "adopt deleted without reading the orphan again"
        stack.cs.model.add_volume("recorded-late", 16 * MiB, storage_id=java.pool_id, volume_id=vid,
                                  path=names.name_to_path(ref))
        stack.cs.model.add_volume("recorded-late-too", MiB, storage_id=java.pool_id, volume_id=orphan_uuid)
    finally:
        gate.release()
    report = _finished(t, out)

    assert {a.ref for a in report.orphans} == {ref, java.orphan_volume}
    assert ref not in report.done and java.orphan_volume not in report.done
    assert "CloudStack has the volume now" in report.spared[ref]
    assert "CloudStack has the volume now" in report.spared[java.orphan_volume]
    assert stack.sp.read_object(ref, 0, len(DATA)) == DATA


def test_only_orphans_older_than_min_age_before_the_run_are_deleted(stack: LocalStack, java: JavaCloud) -> None:
    wire = JavaWire(stack.sp, javacloud.JAVA_TEMPLATE)
    model = stack.sp.model
    clock = model.clock
    model.clock = lambda: clock() - 2 * adopt.MIN_AGE  # StorPool made this one two hours ago
    try:
        _, old = _java_volume(stack, wire, java, in_cloudstack=False)
    finally:
        model.clock = clock
    _, young = _java_volume(stack, wire, java, in_cloudstack=False)

    report = adopt.adopt(stack.ctx, java.pool_id, delete_orphans=True)
    assert {a.ref for a in report.orphans} == {old, young, java.orphan_volume}
    assert old in report.done and stack.ctx.conn(java.pool_id).volume(old) is None
    for ref in (young, java.orphan_volume):
        assert "made too recently" in report.spared[ref] and ref not in report.done
    assert stack.sp.read_object(young, 0, len(DATA)) == DATA
    assert stack.ctx.conn(java.pool_id).volume(java.orphan_volume) is not None

    # The command's table says why each orphan stays; --min-age 0 then lets the older one go.
    def cli(*extra: str) -> dict[str, str]:
        out = subprocess.run([sys.executable, "-m", "cloudstack_storpool", "pool", "adopt", java.pool_id,
                              "--delete-orphans", *extra], capture_output=True, text=True, env=stack.driver_env(),
                             timeout=120)
        assert out.returncode == 0, out.stderr
        return {ref: line for line in out.stdout.splitlines() for ref in (young, java.orphan_volume) if ref in line}

    rows = cli()
    assert all("spared: made too recently" in rows[r] for r in (young, java.orphan_volume)), rows
    rows = cli("--min-age", "0")
    assert all("done" in rows[r] for r in (young, java.orphan_volume)), rows
    assert stack.ctx.conn(java.pool_id).volume(young) is None


def test_the_java_check_volume_is_kept_and_an_unknown_kind_reported_untouched(
    stack: LocalStack, java: JavaCloud,
) -> None:
    """The Java host listener's check volume (StorPoolUtil.volumeCreate(conn): 512 bytes, the
    pool's template, only `cs=check-volume-is-on-host`) stands for no CloudStack record; a `cs`
    kind neither plugin makes is someone else's."""
    wire = JavaWire(stack.sp, javacloud.JAVA_TEMPLATE)
    check = "~" + str(wire.post("VolumeCreate", {"name": "", "size": 512, "template": javacloud.JAVA_TEMPLATE,
                                                 "tags": {"cs": "check-volume-is-on-host"}})["globalId"])
    stranger = "~" + str(wire.post("VolumeCreate", {"name": "", "size": MiB, "template": javacloud.JAVA_TEMPLATE,
                                                    "tags": {"cs": "backup-tool", "uuid": new_uuid()}})["globalId"])

    # An old plugin's named volume, without a uuid tag: CloudStack stores `/dev/storpool/<name>`.
    legacy = wire.post("VolumeCreate", {"name": "old-plugin-vol", "size": MiB, "template": javacloud.JAVA_TEMPLATE,
                                        "tags": {"cs": "volume"}})
    stack.cs.model.add_volume("old-plugin-vol", MiB, storage_id=java.pool_id, path="/dev/storpool/old-plugin-vol")

    report = adopt.adopt(stack.ctx, java.pool_id, delete_orphans=True, min_age=0)
    by_ref = {a.ref: a for a in report.actions}
    assert by_ref["~" + str(legacy["globalId"])].action == adopt.TAG
    assert by_ref[check].action == adopt.TAG and "check volume" in by_ref[check].reason
    assert by_ref[stranger].action == adopt.UNKNOWN and report.unknown == [by_ref[stranger]]
    assert {a.ref for a in report.orphans} == {java.orphan_volume}
    conn = stack.ctx.conn(java.pool_id)
    kept = conn.volume(check)
    assert kept is not None and kept.tags["pool"] == stack.ctx.pool(java.pool_id).key
    left = conn.volume(stranger)
    assert left is not None and "pool" not in left.tags and stranger not in report.done
