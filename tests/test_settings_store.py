"""Settings store and CLI against the CloudStack simulator (real `cs` client, real HTTP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.settings.cli import settings_group
from cloudstack_storpool.settings.store import Settings
from integration.cloudstack_sim.testing import SimHandle


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ids(sim: SimHandle) -> tuple[str, str, str]:
    zone = next(iter(sim.model.zones))
    cluster = next(iter(sim.model.clusters))
    pool = next(iter(sim.model.storage_pools))
    return zone, cluster, pool


def reads(sim: SimHandle) -> int:
    return sim.model.commands_seen().count("listConfigurations")


def updates(sim: SimHandle) -> int:
    return sim.model.commands_seen().count("updateConfiguration")


def test_typed_defaults(cs_sim: SimHandle) -> None:
    s = Settings(cs_sim.client())
    assert s.get("sp.bypass.secondary.storage") is False
    assert s.get("storpool.heartbeat.interval") == 10
    assert s.get("storpool.heartbeat.action") == "log"
    assert s.get("kvm.ha.activity.check.failure.ratio") == 0.7


def test_scope_precedence(cs_sim: SimHandle) -> None:
    zone, cluster, pool = ids(cs_sim)
    other_pool = cs_sim.model.add_storage_pool("second", zone).id
    s = Settings(cs_sim.client(), ttl=0)
    name = "storpool.delete.after.interval"
    assert s.get(name, pool=pool) == 0  # nothing set anywhere: the default
    s.set(name, 300)  # global
    assert s.get(name) == 300 and s.get(name, pool=pool) == 300  # the pool falls back to global
    s.set(name, 86400, pool=pool)
    assert s.get(name, pool=pool, cluster=cluster, zone=zone) == 86400  # the pool's own value wins
    assert s.get(name, pool=other_pool) == 300
    assert s.get(name) == 300
    # ids of scopes the setting does not have are ignored
    s.set("storpool.heartbeat.max.failures", 5, cluster=cluster)
    assert s.get("storpool.heartbeat.max.failures", pool=pool, cluster=cluster, zone=zone) == 5
    assert s.get("storpool.heartbeat.max.failures", zone=zone) == 3
    assert s.get("sp.bypass.secondary.storage", pool=pool, zone=zone) is False
    s.set("kvm.ha.fence.on.storage.heartbeat.failure", True, zone=zone)
    assert s.get("kvm.ha.fence.on.storage.heartbeat.failure", zone=zone, cluster=cluster) is True
    assert s.get("kvm.ha.fence.on.storage.heartbeat.failure") is False


def test_cache_expires_with_the_clock(cs_sim: SimHandle) -> None:
    clock = FakeClock()
    s = Settings(cs_sim.client(), ttl=30, clock=clock)
    assert s.get("storpool.heartbeat.interval") == 10
    first = reads(cs_sim)
    cs_sim.model.set_configuration("storpool.heartbeat.interval", "20")  # changed behind our back
    clock.now += 29
    assert s.get("storpool.heartbeat.interval") == 10  # cached
    assert reads(cs_sim) == first
    clock.now += 2
    assert s.get("storpool.heartbeat.interval") == 20  # expired: read again
    assert reads(cs_sim) == first + 1
    # per scope: a cluster read is its own cache entry
    cluster = ids(cs_sim)[1]
    assert s.get("storpool.heartbeat.interval", cluster=cluster) == 20
    assert reads(cs_sim) == first + 2


def test_own_write_invalidates_the_cache(cs_sim: SimHandle) -> None:
    s = Settings(cs_sim.client(), ttl=3600, clock=FakeClock())
    assert s.get("storpool.heartbeat.action") == "log"
    assert s.set("storpool.heartbeat.action", "alert") == "alert"
    assert s.get("storpool.heartbeat.action") == "alert"


@pytest.mark.parametrize(("name", "value", "rule"), [
    ("sp.bypass.secondary.storage", "maybe", "true or false"),
    ("storpool.volumes.stats.interval", -1, ">= 0"),
    ("storpool.heartbeat.interval", "-10", ">= 1"),
    ("sp.alternative.endpoint", "http://somewhere", "not a valid pool endpoint"),
    ("sp.alternative.endpoint", "SP_API_HTTP=h:81;SP_AUTH_TOKEN=t", "SP_TEMPLATE"),
    ("storpool.heartbeat.action", "panic", "one of"),
])
def test_bad_values_are_refused_before_sending(cs_sim: SimHandle, name: str, value: object, rule: str) -> None:
    s = Settings(cs_sim.client())
    with pytest.raises(ValidationError) as info:
        s.set(name, value)  # type: ignore[arg-type]
    assert info.value.field == name
    assert rule in str(info.value) and name in str(info.value)
    assert updates(cs_sim) == 0
    assert cs_sim.model.commands_seen() == []  # nothing at all was sent


def test_wrong_scope_is_refused_before_sending(cs_sim: SimHandle) -> None:
    zone, _, pool = ids(cs_sim)
    s = Settings(cs_sim.client())
    with pytest.raises(ValidationError, match="global only; it cannot be set per storagepool"):
        s.set("sp.bypass.secondary.storage", True, pool=pool)
    with pytest.raises(ValidationError, match="at most one scope"):
        s.set("storpool.delete.after.interval", 5, pool=pool, zone=zone)
    with pytest.raises(ValidationError, match="is not a setting"):
        s.set("no.such.setting", "1")
    assert cs_sim.model.commands_seen() == []


def test_bad_value_in_cloudstack_falls_back_to_default(cs_sim: SimHandle) -> None:
    cs_sim.model.set_configuration("storpool.heartbeat.interval", "-3")  # the server only checks the type
    assert Settings(cs_sim.client()).get("storpool.heartbeat.interval") == 10


def test_check_reports_unknown_settings(cs_sim: SimHandle) -> None:
    s = Settings(cs_sim.client())
    assert s.check().ok
    cs_sim.model.unregister_setting("storpool.heartbeat.action")
    cs_sim.model.set_configuration("storpool.gc.interval", "-1")
    report = s.check()
    assert report.missing == ("storpool.heartbeat.action",)
    assert "storpool.gc.interval" in report.invalid
    assert not report.ok
    # an unknown setting still reads as its default
    assert s.get("storpool.heartbeat.action") == "log"


# ---------------------------------------------------------------- CLI


@pytest.fixture
def runner(cs_sim: SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    return CliRunner(env={
        "HOME": str(tmp_path), "CLOUDSTACK_ENDPOINT": cs_sim.endpoint, "CLOUDSTACK_KEY": cs_sim.key,
        "CLOUDSTACK_SECRET": cs_sim.secret, "CLOUDSTACK_CONFIG": None, "CLOUDSTACK_OVERRIDES": None,
    })


def test_cli_list(runner: CliRunner, cs_sim: SimHandle) -> None:
    result = runner.invoke(settings_group, ["list"])
    assert result.exit_code == 0, result.output
    assert "sp.bypass.secondary.storage" in result.output and "storpool.heartbeat.action" in result.output
    data = json.loads(runner.invoke(settings_group, ["list", "--json"]).output)
    assert {d["name"] for d in data} >= {"sp.cluster.id", "storpool.agent.port"}
    offline = runner.invoke(settings_group, ["list", "--offline"], env={"CLOUDSTACK_ENDPOINT": None})
    assert offline.exit_code == 0 and "VALUE" not in offline.output


def test_cli_get_set(runner: CliRunner, cs_sim: SimHandle) -> None:
    _, _, pool = ids(cs_sim)
    result = runner.invoke(settings_group, ["set", "storpool.delete.after.interval", "120", "--pool", pool])
    assert result.exit_code == 0, result.output
    got = runner.invoke(settings_group, ["get", "storpool.delete.after.interval", "--pool", pool, "--json"])
    assert json.loads(got.output) == {"name": "storpool.delete.after.interval", "value": 120,
                                      "scope": "storagepool", "scope_id": pool}
    plain = runner.invoke(settings_group, ["get", "storpool.delete.after.interval"])
    assert plain.output.strip() == "storpool.delete.after.interval = 0  (global)"
    note = runner.invoke(settings_group, ["set", "storpool.agent.port", "9000"])
    assert "restart" in note.output


def test_cli_refuses_bad_input(runner: CliRunner, cs_sim: SimHandle) -> None:
    result = runner.invoke(settings_group, ["set", "sp.bypass.secondary.storage", "maybe"])
    assert result.exit_code == 1
    assert "sp.bypass.secondary.storage" in result.output and "true or false" in result.output
    result = runner.invoke(settings_group, ["set", "storpool.gc.interval", "-5"])
    assert result.exit_code == 1 and ">= 0" in result.output
    result = runner.invoke(settings_group, ["get", "no.such"])
    assert result.exit_code == 1 and "no.such" in result.output
    assert "updateConfiguration" not in cs_sim.model.commands_seen()


def test_cli_check(runner: CliRunner, cs_sim: SimHandle) -> None:
    assert runner.invoke(settings_group, ["check"]).exit_code == 0
    cs_sim.model.unregister_setting("storpool.gc.temporary.age")
    result = runner.invoke(settings_group, ["check"])
    assert result.exit_code == 1
    assert "missing: storpool.gc.temporary.age" in result.output
    data = json.loads(runner.invoke(settings_group, ["check", "--json"]).output)
    assert data["missing"] == ["storpool.gc.temporary.age"] and data["ok"] is False


def test_cli_without_credentials_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"HOME": str(tmp_path), "CLOUDSTACK_ENDPOINT": None, "CLOUDSTACK_CONFIG": None})
    result = runner.invoke(settings_group, ["get", "storpool.gc.interval"])
    assert result.exit_code == 1 and "CLOUDSTACK_ENDPOINT" in result.output
