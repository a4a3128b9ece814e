"""Pool lifecycle against the real emulator: register, duplicates, describe, remove."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from cloudstack_storpool.driver import pools, volumes
from cloudstack_storpool.errors import Conflict, ValidationError
from cloudstack_storpool.poolconfig import load_pools
from cloudstack_storpool.sprecords import SpSnapshot, SpVolume
from tests.driver_harness import Env, new_uuid


def url(env: Env, template: str = "ssd", token: str | None = None) -> str:
    return f"SP_API_HTTP={env.sp.host}:{env.sp.port};SP_AUTH_TOKEN={token or env.sp.token};SP_TEMPLATE={template}"


def test_register_appends_atomically_and_refuses_duplicates(env: Env, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "etc" / "pools.toml"
    a = pools.register(env.ctx, path, name="a", url=url(env, "ssd"), zone="z1")
    b = pools.register(env.ctx, path, name="b", url=f"storpool://{env.sp.token}@{env.sp.host}:{env.sp.port}/hybrid")
    loaded = load_pools(path)
    assert [p.name for p in loaded.pools] == ["a", "b"]
    assert loaded.get("a").zone == "z1" and loaded.get(b.uuid).template == "hybrid"
    assert env.ctx.pool("b").uuid == b.uuid
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert a.endpoint == f"{env.sp.host}:{env.sp.port}"
    with pytest.raises(ValidationError) as exc:
        pools.register(env.ctx, path, name="c", url=url(env, "ssd"))
    assert exc.value.field == "url"
    with pytest.raises(ValidationError) as exc:
        pools.register(env.ctx, path, name="a", url=url(env, "nvme"))
    assert exc.value.field == "name"
    with pytest.raises(ValidationError) as exc:
        pools.register(env.ctx, path, name="d", url=url(env, "nvme"), uuid=a.uuid)
    assert exc.value.field == "uuid"
    assert [p.name for p in load_pools(path).pools] == ["a", "b"]
    assert env.sp.token not in caplog.text


@pytest.mark.parametrize(
    ("make_url", "field"),
    [
        (lambda e: url(e, "no-such-template"), "url.SP_TEMPLATE"),
        (lambda e: url(e, token="wrong-token"), "url.SP_AUTH_TOKEN"),
        (lambda e: "SP_API_HTTP=127.0.0.1:1;SP_AUTH_TOKEN=x;SP_TEMPLATE=ssd", "url.SP_API_HTTP"),
        (lambda e: url(e, "bad/template"), "url.SP_TEMPLATE"),
        (lambda e: "SP_API_HTTP=h:99999;SP_AUTH_TOKEN=x;SP_TEMPLATE=ssd", "url.SP_API_HTTP"),
    ],
)
def test_register_refuses_what_cannot_work(env: Env, tmp_path: Path, make_url: object, field: str) -> None:
    path = tmp_path / "pools.toml"
    with pytest.raises(ValidationError) as exc:
        pools.register(None, path, name="x", url=make_url(env))  # type: ignore[operator]
    assert exc.value.field == field
    assert not path.exists()


def test_describe_and_remove(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "pools.toml"
    registered = env.cs.model.add_storage_pool("p")  # CloudStack knows the pool it asks us to add
    info = pools.register(env.ctx, path, name="p", url=url(env, "nvme"), uuid=registered.id)
    vid = new_uuid()
    volumes.create(env.ctx, info.uuid, vid, 1 << 30)
    d = pools.describe(env.ctx, info.uuid)
    assert d.volumes == 1 and d.template == "nvme" and d.capacity and d.free
    with pytest.raises(Conflict) as exc:
        pools.remove(env.ctx, path, info.uuid)
    assert "cs-vol-" in str(exc.value)
    assert [o.cs for o in pools.contents(env.ctx, info.uuid).objects] == ["volume"]
    volumes.delete(env.ctx, info.uuid, vid)
    pools.remove(env.ctx, path, "p")
    assert load_pools(path).pools == ()
    with pytest.raises(ValidationError):
        env.ctx.pool("p")


def _tpl(gid: str, *, parent: str = "", on_volume: str = "") -> SpSnapshot:
    return SpSnapshot(name=f"~{gid}", global_id=gid, size=1 << 20, template="nvme", parent=parent,
                      tags={"uuid": "a2b3c4d5-0000-4000-8000-000000000001", "cs": "template", "vc-policy": "no"},
                      on_volume=on_volume, kind="snapshot")


def test_templates_kept_as_snapshots_are_told_from_caches() -> None:
    """The Java plugin tags a template made from a volume and a pool's cache alike."""
    user_volume = SpVolume(name="~u.1.1", global_id="u.1.1", size=1 << 20, tags={"cs": "volume"})
    fill = SpVolume(name="~f.1.1", global_id="f.1.1", size=1 << 20, tags={"cs": "template"})
    live = {v.ref: v for v in (user_volume, fill)}
    kept = _tpl("k.1.1", on_volume="~u.1.9")                          # a volume's snapshot (volume deleted)
    cache_of_kept = _tpl("c.1.1", parent="~k.1.1", on_volume="~c.1.1")  # cloned from it, frozen
    frozen = _tpl("c.1.2", on_volume="~c.1.2")                        # filled from the image store, frozen
    of_fill = _tpl("c.1.3", on_volume="~f.1.1")                       # a snapshot of a template volume
    of_live_volume = _tpl("k.1.2", on_volume="~u.1.1")                # a snapshot of a user's live volume
    found = [kept, cache_of_kept, frozen, of_fill, of_live_volume]
    assert pools.templates_kept_as_snapshots(found, live.get) == {"k.1.1", "k.1.2"}
