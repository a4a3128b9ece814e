"""Template cache fill: the lock, waiting, takeover of a dead fill, cleanup on failure."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import pytest

from cloudstack_storpool.driver import templates, volumes
from cloudstack_storpool.errors import AgentError, SpNotFound, ValidationError
from tests.driver_harness import Env, new_uuid

SRC = templates.TemplateSource("/secondary", "template/tmpl/1/x/x.qcow2", "qcow2")


def leftovers(env: Env) -> list[str]:
    return [str(o.name) for o in env.objects() if o.tags.get("cs") == "temporary"]


def test_fill_makes_a_tagged_snapshot_and_removes_the_fill(env: Env) -> None:
    t = env.add_template(size=3 << 20)
    env.agent.grow_to = 4 << 20  # the image's virtual size is bigger than CloudStack said
    cached = templates.ensure_cached(env.ctx, env.pool, t.id, source=SRC, size=t.size)
    assert cached.filled and cached.name == templates.cache_name(t.id, env.pool)
    snap = env.sp.api().snapshotList(cached.name)[0]
    assert snap.tags == {"uuid": t.id, "cs": "template", "pool": env.pool.uuid}
    assert snap.size == 4 << 20
    assert leftovers(env) == []
    assert env.agent.copies[0]["volume"].startswith("/dev/storpool-byid/")
    assert env.agent.copies[0]["idempotency_key"].startswith("fill-")
    # Second call: found, nothing copied.
    again = templates.ensure_cached(env.ctx, env.pool, t.id, source=SRC)
    assert not again.filled and again.global_id == cached.global_id
    assert len(env.agent.copies) == 1
    assert [c.name for c in templates.list_cached(env.ctx, env.pool)] == [cached.name]
    assert templates.list_cached(env.ctx, env.pool_b) == []


def test_fill_failure_leaves_nothing(env: Env) -> None:
    t = env.add_template()
    env.agent.fail["copy_template"] = AgentError("qemu-img convert failed: broken image")
    with pytest.raises(AgentError):
        volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=SRC)
    assert env.objects() == []
    # The next attempt (image fixed) succeeds.
    env.agent.fail.clear()
    volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=SRC)
    assert leftovers(env) == []


def test_waiter_uses_the_cache_another_filler_makes(env: Env) -> None:
    t = env.add_template()
    fill = templates.fill_name(t.id, env.pool)
    other = env.sp.api()
    other.volumeCreate({"name": fill, "size": 1 << 20, "template": "ssd",
                        "tags": {"uuid": t.id, "cs": "temporary", "pool": env.pool.uuid, "started": str(int(env.clock.now))}})

    def other_finishes() -> None:
        if len(env.clock.slept) == 3:
            other.snapshotCreate(fill, {"name": templates.cache_name(t.id, env.pool),
                                        "tags": {"uuid": t.id, "cs": "template", "pool": env.pool.uuid}})
            other.volumeDelete(fill)

    env.clock.on_sleep = other_finishes
    cached = templates.ensure_cached(env.ctx, env.pool, t.id, source=SRC)
    assert not cached.filled
    assert env.agent.copies == []
    assert env.clock.slept[:3] == pytest.approx([0.1, 0.15, 0.225])


def test_a_dead_fill_is_taken_over(env: Env) -> None:
    t = env.add_template()
    fill = templates.fill_name(t.id, env.pool)
    env.sp.api().volumeCreate({"name": fill, "size": 1 << 20, "template": "ssd",
                               "tags": {"uuid": t.id, "cs": "temporary", "started": str(int(env.clock.now) - 3601)}})
    cached = templates.ensure_cached(env.ctx, env.pool, t.id, source=SRC)
    assert cached.filled and len(env.agent.copies) == 1
    assert leftovers(env) == []


def test_a_fresh_fill_without_signs_of_life_is_taken_over_after_the_limit(env: Env) -> None:
    """Issue 13: a fill judged by age blocked its template for max(fill timeout, copy timeout)
    = 7200 s after its driver died. Judged by liveness, a fill whose stamp stops changing is
    taken over one limit (here 60 s) after the waiter first saw it, whatever the copy timeout."""
    env.set_setting("storpool.template.fill.timeout", 60)
    env.set_setting("storpool.agent.copy.timeout", 7200)
    t = env.add_template()
    fill = templates.fill_name(t.id, env.pool)
    now = str(int(env.clock.now))
    env.sp.api().volumeCreate({"name": fill, "size": 1 << 20, "template": "ssd",
                               "tags": {"uuid": t.id, "cs": "temporary", "started": now, "alive": now}})
    cached = templates.ensure_cached(env.ctx, env.pool, t.id, source=SRC)
    assert cached.filled and len(env.agent.copies) == 1
    assert 60 < sum(env.clock.slept) < 65
    assert max(env.clock.slept) == templates.FILL_POLL_MAX
    assert leftovers(env) == []


class SharedClock:
    """Fake time for several threads: it moves only when a driver sleeps (`sleep`), and a sleep
    returns only once every background timer (`wait`) that came due has run and is waiting
    again. So an owner's liveness thread stamps exactly on schedule, however fast or slow the
    machine, and a waiter sees what a real one would. `skewed(s)` is the same clock read by a
    machine whose clock is `s` seconds off."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self.slept: list[float] = []
        self.on_sleep: Callable[[], None] | None = None
        self._cond = threading.Condition()
        self._timers: dict[int, float] = {}  # thread -> the fake time it waits for
        self._running: set[int] = set()  # threads whose timer came due, not waiting again yet

    def __call__(self) -> float:
        with self._cond:
            return self.now

    def skewed(self, offset: float) -> Callable[[], float]:
        return lambda: self() + offset

    def wait(self, event: threading.Event, seconds: float) -> bool:
        me = threading.get_ident()
        with self._cond:
            self._running.discard(me)
            self._timers[me] = self.now + seconds
            self._cond.notify_all()
            while not event.is_set() and self.now < self._timers[me]:
                self._cond.wait(0.01)  # event.set() does not notify this condition
            del self._timers[me]
            if not event.is_set():
                self._running.add(me)
            self._cond.notify_all()
            return event.is_set()

    def timers(self, count: int) -> None:
        """Return once `count` background timers are running (a thread just started may not be)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._timers) >= count, timeout=30):
                raise AssertionError("the liveness thread never started waiting")

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if len(self.slept) > 10_000:
            raise AssertionError("waited forever")
        with self._cond:
            self.now += seconds
            self._cond.notify_all()
            settled = self._cond.wait_for(
                lambda: not self._running and all(due > self.now for due in self._timers.values()), timeout=30)
            if not settled:
                raise AssertionError("a liveness thread did not come back to its timer")
        if self.on_sleep is not None:
            self.on_sleep()


@pytest.mark.parametrize("skew", [0, -600, 600], ids=["same clock", "owner 10 min behind", "owner 10 min ahead"])
def test_a_fill_whose_owner_stamps_it_is_never_taken_over(env: Env, skew: int) -> None:
    """Two management servers on one StorPool, the owner's clock `skew` seconds off the
    waiter's. The owner refreshes `alive` on StorPool while its copy runs; a waiter watching for
    three limits sees it change and waits instead of deleting the fill under the copy. Judging
    the stamp against the waiter's own clock would take over at once from an owner whose clock
    is behind by more than the limit."""
    env.set_setting("storpool.template.fill.timeout", 5)  # the owner stamps every 1.25 s
    clock = SharedClock()
    owner_ctx = dataclasses.replace(env.ctx, clock=clock.skewed(skew), sleep=clock.sleep, wait=clock.wait)
    waiter_ctx = dataclasses.replace(env.ctx, clock=clock, sleep=clock.sleep, wait=clock.wait)
    t = env.add_template()
    fill = templates.fill_name(t.id, env.pool)
    copying, release = threading.Event(), threading.Event()
    owner_result: list[object] = []
    waiter_result: list[object] = []

    def owner() -> None:
        try:
            owner_result.append(templates.ensure_cached(owner_ctx, env.pool, t.id, source=SRC))
        except Exception as exc:
            owner_result.append(exc)

    owner_thread = threading.Thread(target=owner)

    def hold_owner_copy() -> None:
        if threading.current_thread() is owner_thread:
            copying.set()
            release.wait(60)

    env.agent.hook = hold_owner_copy
    owner_thread.start()
    assert copying.wait(30)
    clock.timers(1)  # the owner's liveness thread is keeping time
    start = clock()
    stamps: list[str] = []

    def look_once_per_limit() -> None:
        """Runs in the waiter after each of its sleeps: the stamp once per limit of fake time,
        and after three limits the owner's copy ends (and the owner finishes, fill deleted)."""
        if release.is_set() or clock() - start < 5 * (len(stamps) + 1):
            return
        stamps.append(env.sp_volume(fill).tags["alive"])
        if len(stamps) == 3:
            release.set()
            owner_thread.join(60)

    clock.on_sleep = look_once_per_limit
    try:
        waiter_result.append(templates.ensure_cached(waiter_ctx, env.pool, t.id, source=SRC))
    finally:
        release.set()
        owner_thread.join(60)
    assert len(stamps) == 3 and len(set(stamps)) == 3, stamps  # the stamp moved between every look
    assert len(owner_result) == 1 and isinstance(owner_result[0], templates.CachedTemplate), owner_result
    assert owner_result[0].filled
    assert len(waiter_result) == 1 and isinstance(waiter_result[0], templates.CachedTemplate), waiter_result
    assert not waiter_result[0].filled
    assert len(env.agent.copies) == 1
    assert leftovers(env) == []


@pytest.mark.parametrize("skew", [-3600, 3600], ids=["owner's clock an hour behind", "owner's clock an hour ahead"])
def test_a_dead_owner_with_a_skewed_clock_is_taken_over_after_one_limit(env: Env, skew: int) -> None:
    """An owner on another management server stamped its fill once and died. Its stamp is an
    hour off the waiter's clock either way: the waiter still takes over after watching it stay
    unchanged for one limit, not at once and not never."""
    env.set_setting("storpool.template.fill.timeout", 60)
    t = env.add_template()
    fill = templates.fill_name(t.id, env.pool)
    stamp = str(int(env.clock.now) + skew)
    env.sp.api().volumeCreate({"name": fill, "size": 1 << 20, "template": "ssd",
                               "tags": {"uuid": t.id, "cs": "temporary", "started": stamp, "alive": stamp}})
    cached = templates.ensure_cached(env.ctx, env.pool, t.id, source=SRC)
    assert cached.filled and len(env.agent.copies) == 1
    assert 60 < sum(env.clock.slept) <= 60 + templates.FILL_POLL_MAX
    assert leftovers(env) == []


def test_threads_race_one_fill(env: Env) -> None:
    t = env.add_template()
    gate = threading.Event()
    env.agent.hook = lambda: gate.wait(5)  # hold the copy until everyone has met the lock
    env.ctx.sleep = lambda s: gate.set()  # a waiter exists: let the copy finish
    results: list[object] = []

    def make() -> None:
        try:
            results.append(volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=SRC))
        except Exception as exc:  # pragma: no cover - reported below
            results.append(exc)

    threads = [threading.Thread(target=make) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert all(isinstance(r, volumes.VolumeInfo) for r in results), results
    assert len(env.agent.copies) == 1
    assert leftovers(env) == []
    cache = templates.cache_name(t.id, env.pool)
    assert all(env.sp_volume(r.name).parentName == cache for r in results if isinstance(r, volumes.VolumeInfo))


def test_cache_deleted_out_of_band_is_refilled(env: Env) -> None:
    t = env.add_template()
    first = volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=SRC)
    env.sp.api().snapshotDelete(templates.cache_name(t.id, env.pool))
    second = volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=SRC)
    assert len(env.agent.copies) == 2
    assert templates.cached(env.ctx, env.pool, t.id) is not None
    # The first volume still reads its data (StorPool kept the deleted parent for it).
    assert env.sp.object_file(first.global_id).read_bytes()[:8] == b"TEMPLATE"
    assert env.sp.object_file(second.global_id).read_bytes()[:8] == b"TEMPLATE"


def test_cache_per_pool(env: Env) -> None:
    t = env.add_template()
    volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=SRC)
    volumes.create_from_template(env.ctx, env.pool_b, new_uuid(), t.id, source=SRC)
    assert len(env.agent.copies) == 2
    assert templates.drop(env.ctx, env.pool, t.id) is True
    assert templates.drop(env.ctx, env.pool, t.id) is False
    assert templates.cached(env.ctx, env.pool_b, t.id) is not None


def test_cache_from_snapshot_and_volume_copies_nothing(env: Env) -> None:
    vid = new_uuid()
    vol = volumes.create(env.ctx, env.pool, vid, 1 << 20)
    env.sp.write_object(vol.global_id, 0, b"FROMVOL!")
    from_volume = templates.cache_from_volume(env.ctx, env.pool, new_uuid(), "~" + vol.global_id)
    snap = env.sp.api().snapshotCreate("~" + vol.global_id, {"name": "user-snap"})
    assert snap.snapshotGlobalId
    from_snap = templates.cache_from_snapshot(env.ctx, env.pool, new_uuid(), "user-snap")
    assert env.agent.copies == []
    for c in (from_volume, from_snap):
        assert env.sp.object_file(c.global_id).read_bytes()[:8] == b"FROMVOL!"
    assert leftovers(env) == []
    # The source volume is untouched and still writable.
    assert env.sp_volume(vol.name).name == vol.name


def test_cache_from_missing_snapshot_fails_clean(env: Env) -> None:
    with pytest.raises(SpNotFound):
        templates.cache_from_snapshot(env.ctx, env.pool, new_uuid(), "no-such-snap")
    assert env.objects() == []


def test_bad_arguments(env: Env) -> None:
    with pytest.raises(ValidationError) as exc:
        templates.TemplateSource("/s", "/abs/path")
    assert exc.value.field == "source.path"
    with pytest.raises(ValidationError) as exc:
        templates.TemplateSource("/s", "a/../../etc/passwd")
    assert exc.value.field == "source.path"
    with pytest.raises(ValidationError) as exc:
        templates.TemplateSource("/s", "a.vhd", "vhd")
    assert exc.value.field == "source.format"
    with pytest.raises(ValidationError) as exc:
        templates.ensure_cached(env.ctx, env.pool, "bad", source=SRC)
    assert exc.value.field == "template_uuid"
    with pytest.raises(ValidationError):
        templates.ensure_cached(env.ctx, env.pool, new_uuid(), source=SRC, from_snapshot="x")
    assert env.objects() == []


def test_lost_fill_create_answer_is_recovered_as_ours(env: Env) -> None:
    t = env.add_template()
    env.sp.faults.drop_after_apply("VolumeCreate")  # the fill is made, its answer is lost
    cached = templates.ensure_cached(env.ctx, env.pool, t.id, source=SRC)
    assert cached.filled and len(env.agent.copies) == 1
    assert leftovers(env) == []


def test_a_fill_found_by_name_that_is_not_ours_is_waited_for(env: Env) -> None:
    t = env.add_template()
    fill = templates.fill_name(t.id, env.pool)
    api = env.sp.api()
    # Our create is lost before it is applied; meanwhile another driver creates the fill.
    env.sp.faults.drop_before_apply("VolumeCreate")
    real_volume = env.ctx.conn(env.pool).volume
    calls = {"n": 0}

    def volume(name: str) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            api.volumeCreate({"name": fill, "size": 1 << 20, "template": "ssd",
                              "tags": {"uuid": t.id, "cs": "temporary", "started": str(int(env.clock.now)),
                                       "fill": "someone-else"}})
        return real_volume(name)

    env.ctx.conn(env.pool).volume = volume  # type: ignore[method-assign]

    def other_finishes() -> None:
        api.snapshotCreate(fill, {"name": templates.cache_name(t.id, env.pool), "tags": {"cs": "template"}})
        api.volumeDelete(fill)

    env.clock.on_sleep = other_finishes
    cached = templates.ensure_cached(env.ctx, env.pool, t.id, source=SRC)
    assert not cached.filled and env.agent.copies == []


def test_a_fill_finished_between_our_miss_and_our_lock_is_not_copied_again(
    env: Env, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 13: a root volume sees the cache missing (its VolumeCreate fails), another filler
    then finishes the whole fill and releases the lock, and only then does this caller take the
    lock. Having just seen the cache missing, it must still look once more after the lock
    instead of copying the template a second time. The hook runs the other fill exactly inside
    that window, so the race happens on every run."""
    t = env.add_template()
    real_ensure_cached = templates.ensure_cached
    other: list[templates.CachedTemplate] = []

    def other_filler_finishes_first(*args: object, **kwargs: object) -> templates.CachedTemplate:
        if not other:
            other.append(real_ensure_cached(env.ctx, env.pool, t.id, source=SRC))
        return real_ensure_cached(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(templates, "ensure_cached", other_filler_finishes_first)
    made = volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=SRC)
    assert other and other[0].filled
    assert len(env.agent.copies) == 1
    assert env.sp_volume(made.name).parentName == other[0].name
    assert leftovers(env) == []
