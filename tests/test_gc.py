"""Garbage collection: caches of deleted templates, old temporary objects, dry run."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pytest

from cloudstack_storpool.cloudstack.client import CloudStackClient
from cloudstack_storpool.driver import gc, templates, volumes
from cloudstack_storpool.errors import ValidationError
from integration.stack import free_port
from tests.driver_harness import Env, new_uuid

SRC = templates.TemplateSource("/secondary", "t.qcow2")


def names_of(env: Env) -> set[str]:
    return {str(o.name) for o in env.objects()}


def test_deleted_template_caches_go_on_every_pool(env: Env) -> None:
    gone, kept = env.add_template(), env.add_template()
    for t in (gone, kept):
        volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=SRC)
        volumes.create_from_template(env.ctx, env.pool_b, new_uuid(), t.id, source=SRC)
    env.cs.model.delete_template(gone.id)
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


def test_a_template_the_listing_does_not_show_keeps_its_caches(env: Env) -> None:
    """CloudStack's listTemplates without an id skips project-owned templates (only a listing
    with `projectid` shows them), while a lookup by id finds them. A cache whose template is
    missing from the run's listing is the template of another filter, not a deleted one, until
    CloudStack says so by id: its caches stay, on every pool, until the template is deleted."""
    owned = env.cs.model.add_template("project-tmpl", 1 << 20, template_id=new_uuid(), project_id=new_uuid())
    listed = env.add_template()
    for t in (owned, listed):
        volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=SRC)
        volumes.create_from_template(env.ctx, env.pool_b, new_uuid(), t.id, source=SRC)
    assert owned.id not in {t.id for t in env.ctx.cloudstack.templates()}  # the listing misses it
    assert env.ctx.cloudstack.template(owned.id) is not None  # CloudStack has it

    report = gc.run(env.ctx)
    assert report.planned == [] and report.done == [] and report.errors == {}
    assert report.kept_templates == 4
    for pool in (env.pool, env.pool_b):
        assert templates.cached(env.ctx, pool, owned.id) is not None

    env.cs.model.delete_template(owned.id)
    report = gc.run(env.ctx)
    assert sorted(report.done) == sorted(templates.cache_name(owned.id, p) for p in (env.pool, env.pool_b))
    assert templates.cached(env.ctx, env.pool, listed.id) is not None


def test_cloudstack_unreachable_deletes_nothing(env: Env) -> None:
    t = env.add_template()
    volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=SRC)
    unreachable = CloudStackClient(f"http://127.0.0.1:{free_port()}/client/api", "k", "s", timeout=2)
    report = gc.run(dataclasses.replace(env.ctx, cloudstack=unreachable))
    assert report.planned == [] and report.done == []
    assert "cannot reach" in report.errors["templates"]
    assert templates.cached(env.ctx, env.pool, t.id) is not None


def test_old_temporary_objects_go_young_ones_stay(env: Env) -> None:
    api = env.sp.api()
    now = int(env.clock.now)
    api.volumeCreate({"name": "old-fill", "size": 1 << 20, "template": "ssd",
                      "tags": {"uuid": new_uuid(), "cs": "temporary", "pool": env.pool.uuid, "started": str(now - 90000)}})
    api.volumeCreate({"name": "young-fill", "size": 1 << 20, "template": "ssd",
                      "tags": {"uuid": new_uuid(), "cs": "temporary", "pool": env.pool.uuid, "started": str(now - 10)}})
    api.volumeCreate({"name": "foreign", "size": 1 << 20, "template": "ssd",
                      "tags": {"cs": "temporary", "pool": new_uuid(), "started": "1"}})
    api.volumeCreate({"name": "old-snap-src", "size": 1 << 20, "template": "ssd"})
    api.snapshotCreate("old-snap-src", {"name": "old-tmp-snap",
                                        "tags": {"cs": "temporary", "pool": env.pool.uuid, "started": "5"}})
    report = gc.run(env.ctx)
    assert sorted(report.done) == ["old-fill", "old-tmp-snap"]
    assert names_of(env) >= {"young-fill", "foreign"}
    assert "old-fill" not in names_of(env)
    # A shorter age collects the young one too.
    assert gc.run(env.ctx, temporary_age=5).done == ["young-fill"]
    with pytest.raises(ValidationError):
        gc.run(env.ctx, temporary_age=-1)


def test_drop_template_now(env: Env) -> None:
    t = env.add_template()
    volumes.create_from_template(env.ctx, env.pool, new_uuid(), t.id, source=SRC)
    with pytest.raises(ValidationError):
        gc.drop_template(env.ctx, t.id)
    env.cs.model.delete_template(t.id)
    assert gc.drop_template(env.ctx, t.id) == [env.pool.uuid]
    assert templates.cached(env.ctx, env.pool, t.id) is None


def test_cloudstack_is_asked_once_per_run_not_once_per_cache(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: GC asked CloudStack about every cached template (10,000 calls at 10k caches).
    Now one listing per run; only a cache whose template is not listed is confirmed by id."""
    kept = [env.add_template() for _ in range(12)]
    gone = [env.add_template() for _ in range(3)]
    for t in kept + gone:
        templates.ensure_cached(env.ctx, env.pool, t.id, source=SRC)
    for t in gone:
        env.cs.model.delete_template(t.id)
    asked: Counter[str] = Counter()
    client = env.ctx.cloudstack

    def spy(name: str) -> Any:
        real = getattr(client, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            asked[name] += 1
            return real(*args, **kwargs)
        return counted

    for method in ("templates", "template"):
        monkeypatch.setattr(client, method, spy(method))
    before = env.calls()
    report = gc.run(env.ctx, dry_run=True)
    assert asked["templates"] == 1
    assert asked["template"] == len(gone)  # the by-id confirmation of each cache to delete
    assert report.kept_templates == len(kept)
    assert sorted(a.uuid or "" for a in report.planned) == sorted(t.id for t in gone)
    sent = {k: v - before.get(k, 0) for k, v in env.calls().items() if v != before.get(k, 0)}
    assert sent == {"SnapshotsList": 1, "VolumesList": 1}  # both pools share one cluster

