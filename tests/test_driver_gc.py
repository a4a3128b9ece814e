"""Garbage collection: caches of deleted templates, old temporary objects, dry run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudstack_storpool.driver import gc, templates, volumes
from cloudstack_storpool.errors import ValidationError
from tests.test_driver_support import POOL_A, Env, new_uuid, open_env

SRC = templates.TemplateSource("/secondary", "t.qcow2")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with open_env(tmp_path) as e:
        yield e


def names_of(env: Env) -> set[str]:
    return {str(o.name) for o in env.objects()}


def test_deleted_template_caches_go_on_every_pool(env: Env) -> None:
    gone, kept = env.cs.add_template(), env.cs.add_template()
    for t in (gone, kept):
        volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=SRC)
        volumes.create_from_template(env.ctx, env.pool_b, new_uuid(), t.id, source=SRC)
    del env.cs.templates_[gone.id]
    before = names_of(env)

    dry = gc.run(env.ctx, dry_run=True)
    assert names_of(env) == before
    assert dry.done == [] and dry.kept_templates == 2
    assert sorted(a.name for a in dry.planned) == sorted(
        [templates.cache_name(gone.id, env.pool), templates.cache_name(gone.id, env.pool_b)])
    assert {a.kind for a in dry.planned} == {gc.CACHED_TEMPLATE}

    report = gc.run(env.ctx)
    assert sorted(report.done) == sorted(a.name for a in dry.planned)
    assert templates.cached(env.ctx, env.pool, gone.id) is None
    assert templates.cached(env.ctx, env.pool_b, gone.id) is None
    assert templates.cached(env.ctx, env.pool, kept.id) is not None
    assert gc.run(env.ctx).planned == []


def test_cloudstack_unreachable_deletes_nothing(env: Env) -> None:
    t = env.cs.add_template()
    volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=SRC)
    env.cs.fail_templates = True
    report = gc.run(env.ctx)
    assert report.planned == [] and report.done == []
    assert "cannot reach" in report.errors["templates"]
    assert templates.cached(env.ctx, env.pool, t.id) is not None


def test_old_temporary_objects_go_young_ones_stay(env: Env) -> None:
    api = env.sp.api()
    now = int(env.clock.now)
    api.volumeCreate({"name": "old-fill", "size": 1 << 20, "template": "ssd",
                      "tags": {"uuid": new_uuid(), "cs": "temporary", "pool": POOL_A, "started": str(now - 90000)}})
    api.volumeCreate({"name": "young-fill", "size": 1 << 20, "template": "ssd",
                      "tags": {"uuid": new_uuid(), "cs": "temporary", "pool": POOL_A, "started": str(now - 10)}})
    api.volumeCreate({"name": "foreign", "size": 1 << 20, "template": "ssd",
                      "tags": {"cs": "temporary", "pool": new_uuid(), "started": "1"}})
    api.volumeCreate({"name": "old-snap-src", "size": 1 << 20, "template": "ssd"})
    api.snapshotCreate("old-snap-src", {"name": "old-tmp-snap",
                                        "tags": {"cs": "temporary", "pool": POOL_A, "started": "5"}})
    report = gc.run(env.ctx)
    assert sorted(report.done) == ["old-fill", "old-tmp-snap"]
    assert names_of(env) >= {"young-fill", "foreign"}
    assert "old-fill" not in names_of(env)
    # A shorter age collects the young one too.
    assert gc.run(env.ctx, temporary_age=5).done == ["young-fill"]
    with pytest.raises(ValidationError):
        gc.run(env.ctx, temporary_age=-1)


def test_drop_template_now(env: Env) -> None:
    t = env.cs.add_template()
    volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=SRC)
    with pytest.raises(ValidationError):
        gc.drop_template(env.ctx, t.id)
    del env.cs.templates_[t.id]
    assert gc.drop_template(env.ctx, t.id) == [POOL_A]
    assert templates.cached(env.ctx, env.pool, t.id) is None


def test_cloudstack_is_asked_once_per_run_not_once_per_cache(env: Env) -> None:
    """Issue 13: GC asked CloudStack about every cached template (10,000 calls at 10k caches).
    Now one listing per run; only a cache whose template is not listed is confirmed by id."""
    kept = [env.cs.add_template() for _ in range(12)]
    gone = [env.cs.add_template() for _ in range(3)]
    for t in kept + gone:
        templates.ensure_cached(env.ctx, env.pool, t.id, source=SRC)
    for t in gone:
        del env.cs.templates_[t.id]
    env.cs.template_calls = env.cs.template_lists = 0
    before = env.calls()
    report = gc.run(env.ctx, dry_run=True)
    assert env.cs.template_lists == 1
    assert env.cs.template_calls == len(gone)  # the by-id confirmation of each cache to delete
    assert report.kept_templates == len(kept)
    assert sorted(a.uuid or "" for a in report.planned) == sorted(t.id for t in gone)
    sent = {k: v - before.get(k, 0) for k, v in env.calls().items() if v != before.get(k, 0)}
    assert sent == {"SnapshotsList": 1, "VolumesList": 1}  # both pools share one cluster

