"""Settings store and CLI against the CloudStack simulator (real `cs` client, real HTTP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.settings.cli import settings_group
from cloudstack_storpool.settings.localfile import SETTINGS_FILE_ENV, SettingsFile
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


@pytest.fixture
def local(tmp_path: Path) -> SettingsFile:
    return SettingsFile(tmp_path / "etc" / "settings.toml")


def test_typed_defaults(cs_sim: SimHandle, local: SettingsFile) -> None:
    s = Settings(cs_sim.client(), file=local)
    assert s.get("sp.bypass.secondary.storage") is False
    assert s.get("snapshot.backup.to.secondary") is True
    assert s.get("sp.cluster.id") == "n/a"
    assert s.get("storpool.heartbeat.interval") == 10
    assert s.get("storpool.heartbeat.action") == "log"
    assert s.get("kvm.ha.activity.check.failure.ratio") == 0.7


def test_scope_precedence(cs_sim: SimHandle, local: SettingsFile) -> None:
    zone, cluster, pool = ids(cs_sim)
    other_pool = cs_sim.model.add_storage_pool("second", zone).id
    s = Settings(cs_sim.client(), file=local, ttl=0)
    name = "storpool.delete.after.interval"
    assert s.get(name, pool=pool) == 0  # nothing set anywhere: the default
    s.set(name, 300)  # global
    assert s.get(name) == 300 and s.get(name, pool=pool) == 300  # the pool falls back to global
    s.set(name, 86400, pool=pool)
    assert s.get(name, pool=pool, cluster=cluster, zone=zone) == 86400  # the pool's own value wins
    assert s.get(name, pool=other_pool) == 300
    assert s.get(name) == 300
    # ids of scopes the setting does not have are ignored
    s.set("kvm.ha.activity.check.max.attempts", 5, cluster=cluster)
    assert s.get("kvm.ha.activity.check.max.attempts", pool=pool, cluster=cluster, zone=zone) == 5
    assert s.get("kvm.ha.activity.check.max.attempts", zone=zone) == 10
    assert s.get("sp.bypass.secondary.storage", pool=pool, zone=zone) is False
    s.set("kvm.ha.fence.on.storage.heartbeat.failure", True, zone=zone)
    assert s.get("kvm.ha.fence.on.storage.heartbeat.failure", zone=zone, cluster=cluster) is True
    assert s.get("kvm.ha.fence.on.storage.heartbeat.failure") is False


def test_cache_expires_with_the_clock(cs_sim: SimHandle, local: SettingsFile) -> None:
    clock = FakeClock()
    s = Settings(cs_sim.client(), file=local, ttl=30, clock=clock)
    name = "kvm.ha.activity.check.interval"
    assert s.get(name) == 60
    first = reads(cs_sim)
    cs_sim.model.set_configuration(name, "20")  # changed behind our back
    clock.now += 29
    assert s.get(name) == 60  # cached
    assert reads(cs_sim) == first
    clock.now += 2
    assert s.get(name) == 20  # expired: read again
    assert reads(cs_sim) == first + 1
    # per scope: a cluster read is its own cache entry
    cluster = ids(cs_sim)[1]
    assert s.get(name, cluster=cluster) == 20
    assert reads(cs_sim) == first + 2


def test_own_write_invalidates_the_cache(cs_sim: SimHandle, local: SettingsFile) -> None:
    s = Settings(cs_sim.client(), file=local, ttl=3600, clock=FakeClock())
    assert s.get("sp.bypass.secondary.storage") is False
    assert s.set("sp.bypass.secondary.storage", True) is True
    assert s.get("sp.bypass.secondary.storage") is True


@pytest.mark.parametrize(("name", "value", "rule"), [
    ("sp.bypass.secondary.storage", "maybe", "true or false"),
    ("storpool.volumes.stats.interval", -1, ">= 0"),
    ("storpool.volumes.stats.interval", "99999999999", "range of a Java Integer"),
    ("storpool.heartbeat.interval", "-10", ">= 1"),
    ("sp.alternative.endpoint", "http://somewhere", "not a valid pool endpoint"),
    ("sp.alternative.endpoint", "SP_API_HTTP=h:81;SP_AUTH_TOKEN=t", "SP_TEMPLATE"),
    ("storpool.heartbeat.action", "panic", "one of"),
])
def test_bad_values_are_refused_before_sending(cs_sim: SimHandle, local: SettingsFile, name: str, value: object,
                                               rule: str) -> None:
    s = Settings(cs_sim.client(), file=local)
    with pytest.raises(ValidationError) as info:
        s.set(name, value)  # type: ignore[arg-type]
    assert info.value.field == name
    assert rule in str(info.value) and name in str(info.value)
    assert updates(cs_sim) == 0
    assert cs_sim.model.commands_seen() == []  # nothing at all was sent
    assert not local.path.exists()


def test_wrong_scope_is_refused_before_sending(cs_sim: SimHandle, local: SettingsFile) -> None:
    zone, cluster, pool = ids(cs_sim)
    s = Settings(cs_sim.client(), file=local)
    with pytest.raises(ValidationError, match="global only; it cannot be set per storagepool"):
        s.set("sp.bypass.secondary.storage", True, pool=pool)
    with pytest.raises(ValidationError, match="at most one scope"):
        s.set("storpool.delete.after.interval", 5, pool=pool, zone=zone)
    with pytest.raises(ValidationError, match="is not a setting"):
        s.set("no.such.setting", "1")
    with pytest.raises(ValidationError, match=r"settings file .* no CloudStack scope"):
        s.set("storpool.heartbeat.interval", 5, cluster=cluster)
    assert cs_sim.model.commands_seen() == []


def test_bad_value_in_cloudstack_falls_back_to_default(cs_sim: SimHandle, local: SettingsFile) -> None:
    cs_sim.model.set_configuration("storpool.volume.tags.checkup", "-3")  # the server only checks the type
    assert Settings(cs_sim.client(), file=local).get("storpool.volume.tags.checkup") == 86400


def test_check_reports_unknown_settings_and_the_files(cs_sim: SimHandle, local: SettingsFile) -> None:
    s = Settings(cs_sim.client(), file=local)
    report = s.check()
    assert report.ok and report.missing == () and report.default_differs == {}
    assert "storpool.agent.port" in report.in_file and report.file == str(local.path)
    cs_sim.model.unregister_setting("storpool.snapshot.recovery.from.remote.check")  # an older plugin
    cs_sim.model.set_configuration("storpool.volume.tags.checkup", "-1")
    report = s.check()
    assert report.missing == ("storpool.snapshot.recovery.from.remote.check",)
    assert "storpool.volume.tags.checkup" in report.invalid
    assert not report.ok
    # a key CloudStack lacks still reads as its default
    assert s.get("storpool.snapshot.recovery.from.remote.check") == 300


# ---------------------------------------------------------------- the settings file


def test_project_settings_never_reach_cloudstack(cs_sim: SimHandle, local: SettingsFile) -> None:
    """Reads and writes of the project's own settings are the file's: zero CloudStack calls."""
    s = Settings(cs_sim.client(), file=local, ttl=0)
    assert s.get("storpool.gc.interval") == 3600
    assert s.set("storpool.gc.interval", "600") == 600
    assert s.set("storpool.heartbeat.action", "alert") == "alert"
    assert s.get("storpool.gc.interval") == 600 and s.get("storpool.heartbeat.action") == "alert"
    assert cs_sim.model.commands_seen() == []
    assert SettingsFile(local.path).values() == {"storpool.gc.interval": 600, "storpool.heartbeat.action": "alert"}


def test_file_accepts_tables_and_dotted_keys(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('storpool.agent.port = 9000\n[storpool.heartbeat]\naction = "reboot"\nmax.failures = 5\n')
    f = SettingsFile(path)
    assert f.get("storpool.agent.port") == 9000 and f.get("storpool.heartbeat.action") == "reboot"
    assert f.get("storpool.heartbeat.max.failures") == 5 and f.get("storpool.gc.interval") == 3600


@pytest.mark.parametrize(("text", "field", "rule"), [
    ("storpool.agent.prot = 1\n", "storpool.agent.prot", "is not a setting"),
    ("sp.bypass.secondary.storage = true\n", "sp.bypass.secondary.storage", "CloudStack setting"),
    ("storpool.agent.port = 70000\n", "storpool.agent.port", "between 1 and 65535"),
    ("storpool.gc.interval = 1.5\n", "storpool.gc.interval", "must be an integer"),
    ('storpool.heartbeat.action = "panic"\n', "storpool.heartbeat.action", "one of"),
    ("storpool.gc.interval = [1]\n", "storpool.gc.interval", "not a single value"),
    ("storpool.gc.interval = \n", "settings-file", "not valid TOML"),
])
def test_bad_file_is_an_error_naming_the_key(tmp_path: Path, text: str, field: str, rule: str) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(ValidationError) as info:
        SettingsFile(path).values()
    assert info.value.field == field and rule in str(info.value)


def test_broken_edit_keeps_the_last_good_values(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text("storpool.gc.interval = 600\n")
    f = SettingsFile(path)
    assert f.get("storpool.gc.interval") == 600
    path.write_text("storpool.gc.interval = -7\n# a longer file now\n")
    assert f.get("storpool.gc.interval") == 600
    path.write_text("storpool.gc.interval = 900\n# longer still, so the size changes\n")
    assert f.get("storpool.gc.interval") == 900


def test_file_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SETTINGS_FILE_ENV, str(tmp_path / "x.toml"))
    assert SettingsFile().path == tmp_path / "x.toml"
    assert SettingsFile(tmp_path / "y.toml").path == tmp_path / "y.toml"
    monkeypatch.delenv(SETTINGS_FILE_ENV)
    assert str(SettingsFile().path) == "/etc/cloudstack-storpool/settings.toml"


def test_without_cloudstack_file_settings_work_and_cloudstack_keys_default(local: SettingsFile) -> None:
    s = Settings(None, file=local)
    assert s.get("kvm.ha.fence.on.storage.heartbeat.failure") is False
    assert s.set("storpool.heartbeat.interval", 7) == 7
    with pytest.raises(ValidationError, match="no CloudStack connection"):
        s.set("sp.bypass.secondary.storage", True)


# ---------------------------------------------------------------- CLI


@pytest.fixture
def runner(cs_sim: SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    return CliRunner(env={
        "HOME": str(tmp_path), "CLOUDSTACK_ENDPOINT": cs_sim.endpoint, "CLOUDSTACK_KEY": cs_sim.key,
        "CLOUDSTACK_SECRET": cs_sim.secret, "CLOUDSTACK_CONFIG": None, "CLOUDSTACK_OVERRIDES": None,
        SETTINGS_FILE_ENV: str(tmp_path / "settings.toml"),
    })


def test_cli_list_shows_exactly_cloudstacks_keys_and_the_files(runner: CliRunner, cs_sim: SimHandle,
                                                              tmp_path: Path) -> None:
    result = runner.invoke(settings_group, ["list"])
    assert result.exit_code == 0, result.output
    assert "(unknown to CloudStack)" not in result.output
    data = json.loads(runner.invoke(settings_group, ["list", "--json"]).output)
    where = {d["name"]: d["lives_in"] for d in data}
    in_cloudstack = {n for n, w in where.items() if w == "cloudstack"}
    # every CloudStack-home setting is a key the (independently seeded) simulator has
    assert in_cloudstack <= set(cs_sim.model.configs)
    assert {n for n in in_cloudstack if n.startswith(("sp.", "storpool."))} == {
        n for n in cs_sim.model.configs if n.startswith(("sp.", "storpool."))}
    assert where["storpool.agent.port"] == "file" and where["sp.bypass.secondary.storage"] == "cloudstack"
    assert not set(n for n, w in where.items() if w == "file") & set(cs_sim.model.configs)
    row = next(line for line in result.output.splitlines() if line.startswith("storpool.agent.port "))
    assert " file " in row and "8259" in row
    assert f"file settings: {tmp_path / 'settings.toml'}" in result.output
    offline = runner.invoke(settings_group, ["list", "--offline"], env={"CLOUDSTACK_ENDPOINT": None})
    assert offline.exit_code == 0, offline.output
    assert "8259" in offline.output


def test_cli_set_project_key_sends_nothing_to_cloudstack(runner: CliRunner, cs_sim: SimHandle,
                                                        tmp_path: Path) -> None:
    result = runner.invoke(settings_group, ["set", "storpool.agent.port", "9000"])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "settings.toml") in result.output and "restart" in result.output
    assert runner.invoke(settings_group, ["set", "storpool.heartbeat.action", "alert"]).exit_code == 0
    assert cs_sim.model.commands_seen().count("updateConfiguration") == 0
    assert cs_sim.model.commands_seen() == []  # not even a read
    got = json.loads(runner.invoke(settings_group, ["get", "storpool.agent.port", "--json"]).output)
    assert got["value"] == 9000 and got["lives_in"] == "file"
    # works without any CloudStack credentials (a KVM host)
    bare = runner.invoke(settings_group, ["set", "storpool.gc.interval", "60"],
                         env={"CLOUDSTACK_ENDPOINT": None, "CLOUDSTACK_KEY": None, "CLOUDSTACK_SECRET": None})
    assert bare.exit_code == 0, bare.output
    scoped = runner.invoke(settings_group, ["set", "storpool.gc.interval", "60", "--cluster", "x"])
    assert scoped.exit_code == 1 and "no CloudStack scope" in scoped.output


def test_cli_get_set_cloudstack_key(runner: CliRunner, cs_sim: SimHandle) -> None:
    _, _, pool = ids(cs_sim)
    result = runner.invoke(settings_group, ["set", "storpool.delete.after.interval", "120", "--pool", pool])
    assert result.exit_code == 0, result.output
    assert cs_sim.model.commands_seen().count("updateConfiguration") == 1
    got = runner.invoke(settings_group, ["get", "storpool.delete.after.interval", "--pool", pool, "--json"])
    assert json.loads(got.output) == {"name": "storpool.delete.after.interval", "value": 120,
                                      "scope": "storagepool", "scope_id": pool, "lives_in": "cloudstack",
                                      "where": "cloudstack"}
    plain = runner.invoke(settings_group, ["get", "storpool.delete.after.interval"])
    assert plain.output.strip() == "storpool.delete.after.interval = 0  (global)"


def test_cli_refuses_bad_input(runner: CliRunner, cs_sim: SimHandle) -> None:
    result = runner.invoke(settings_group, ["set", "sp.bypass.secondary.storage", "maybe"])
    assert result.exit_code == 1
    assert "sp.bypass.secondary.storage" in result.output and "true or false" in result.output
    result = runner.invoke(settings_group, ["set", "storpool.gc.interval", "-5"])
    assert result.exit_code == 1 and ">= 0" in result.output
    result = runner.invoke(settings_group, ["get", "no.such"])
    assert result.exit_code == 1 and "no.such" in result.output
    assert "updateConfiguration" not in cs_sim.model.commands_seen()


def test_cli_check(runner: CliRunner, cs_sim: SimHandle, tmp_path: Path) -> None:
    ok = runner.invoke(settings_group, ["check"])
    assert ok.exit_code == 0, ok.output
    assert "file: storpool.agent.port is not a CloudStack setting" in ok.output
    cs_sim.model.unregister_setting("sp.cluster.location")  # a CloudStack whose plugin predates the key
    result = runner.invoke(settings_group, ["check"])
    assert result.exit_code == 1
    assert "missing: sp.cluster.location (CloudStack does not know this key" in result.output
    data = json.loads(runner.invoke(settings_group, ["check", "--json"]).output)
    assert data["missing"] == ["sp.cluster.location"] and data["ok"] is False
    assert "storpool.heartbeat.action" in data["in_file"] and data["file"] == str(tmp_path / "settings.toml")
    (tmp_path / "settings.toml").write_text("storpool.heartbeat.actoin = 1\n")
    bad = json.loads(runner.invoke(settings_group, ["check", "--json"]).output)
    assert "storpool.heartbeat.actoin" in bad["invalid"]


def test_cli_without_credentials_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"HOME": str(tmp_path), "CLOUDSTACK_ENDPOINT": None, "CLOUDSTACK_CONFIG": None})
    result = runner.invoke(settings_group, ["get", "sp.bypass.secondary.storage"])
    assert result.exit_code == 1 and "CLOUDSTACK_ENDPOINT" in result.output


def test_cli_set_says_restart_only_for_settings_read_once_at_start(runner: CliRunner, cs_sim: SimHandle) -> None:
    """CloudStack marks storpool.delete.after.interval, kvm.ha.fence.on.storage.heartbeat.failure
    and snapshot.backup.to.secondary not dynamic, but the driver reads them on each use: no
    restart to ask for. The heartbeat loop reads its interval once, when it starts: that one
    needs it."""
    zone, _, pool = ids(cs_sim)
    for args in (["storpool.delete.after.interval", "120", "--pool", pool],
                 ["kvm.ha.fence.on.storage.heartbeat.failure", "true", "--zone", zone],
                 ["snapshot.backup.to.secondary", "false"]):
        result = runner.invoke(settings_group, ["set", *args])
        assert result.exit_code == 0, result.output
        assert "restart" not in result.output and "note:" not in result.output, result.output
        as_json = json.loads(runner.invoke(settings_group, ["set", *args, "--json"]).output)
        assert as_json["dynamic"] is False and as_json["restart"] is False and as_json["takes_effect"] == "next use"
    result = runner.invoke(settings_group, ["set", "storpool.heartbeat.interval", "5"])
    assert result.exit_code == 0, result.output
    assert "note: this setting is read at start-up by the heartbeat loop: restart the heartbeat loop" in result.output
    cycle = runner.invoke(settings_group, ["set", "storpool.volume.tags.checkup", "600"])
    assert cycle.exit_code == 0 and "restart" not in cycle.output and "next cycle" in cycle.output
