"""The settings registry: CloudStack's keys exactly as CloudStack defines them, the project's own
in the settings file, one parse/validate path for both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.settings.registry import (
    REGISTRY,
    Home,
    Origin,
    Reading,
    Scope,
    SettingType,
    all_settings,
    get_setting,
)

ROOT = Path(__file__).resolve().parent.parent

# REFERENCE.md section 5: the plugin's ConfigKeys exactly (type, default, scope, dynamic), category Advanced.
SECTION_5 = {
    "sp.bypass.secondary.storage": (SettingType.BOOL, "false", Scope.GLOBAL, True),
    "sp.cluster.id": (SettingType.STR, "n/a", Scope.CLUSTER, True),
    "sp.enable.alternative.endpoint": (SettingType.BOOL, "false", Scope.STORAGEPOOL, True),
    "sp.alternative.endpoint": (SettingType.STR, "", Scope.STORAGEPOOL, True),
    "sp.cluster.location": (SettingType.STR, None, Scope.STORAGEPOOL, True),
    "sp.cluster.endpoint": (SettingType.STR, None, Scope.CLUSTER, True),
    "storpool.volumes.stats.interval": (SettingType.INT, "3600", Scope.GLOBAL, False),
    "storpool.storage.stats.interval": (SettingType.INT, "3600", Scope.GLOBAL, False),
    "storpool.delete.after.interval": (SettingType.INT, "0", Scope.STORAGEPOOL, False),
    "storpool.list.snapshots.delete.after.interval": (SettingType.INT, "360", Scope.GLOBAL, False),
    "storpool.volume.tags.checkup": (SettingType.INT, "86400", Scope.GLOBAL, False),
    "storpool.snapshot.tags.checkup": (SettingType.INT, "86400", Scope.GLOBAL, False),
    "storpool.snapshot.recovery.from.remote.check": (SettingType.INT, "300", Scope.GLOBAL, False),
    "kvm.ha.fence.on.storage.heartbeat.failure": (SettingType.BOOL, "false", Scope.ZONE, False),
}


@pytest.mark.parametrize("name", sorted(SECTION_5))
def test_section_5_keys_exactly(name: str) -> None:
    java_type, default, scope, dynamic = SECTION_5[name]
    s = REGISTRY[name]
    assert (s.type, s.default_text, s.scope, s.dynamic, s.category) == (java_type, default, scope, dynamic, "Advanced")
    assert s.home is Home.CLOUDSTACK


def test_cloudstack_keys_match_the_simulators_independent_table() -> None:
    """The simulator's configuration.json is written from CloudStack's source, not from the
    registry: every CloudStack key of the registry must be there with the same definition."""
    table = {k["name"]: k for k in json.loads(
        (ROOT / "integration" / "cloudstack_sim" / "configuration.json").read_text())["keys"]}
    for s in all_settings(Home.CLOUDSTACK):
        key = table[s.name]
        assert (key["type"], key["default"], key["scope"], key["dynamic"], key["category"]) == (
            s.type.value, s.default_text, s.scope.value, s.dynamic, s.category), s.name


def test_snapshot_backup_key_is_cloudstacks() -> None:
    s = get_setting("snapshot.backup.to.secondary")
    assert (s.origin, s.type, s.default, s.scope, s.dynamic, s.category) == (
        Origin.CLOUDSTACK, SettingType.BOOL, True, Scope.GLOBAL, False, "Snapshots")


def test_project_settings_live_in_the_file() -> None:
    own = {s.name for s in all_settings(Home.FILE)}
    assert own == {
        "storpool.agent.port", "storpool.agent.timeout", "storpool.agent.copy.timeout", "storpool.heartbeat.interval",
        "storpool.heartbeat.max.failures", "storpool.heartbeat.action", "storpool.settings.cache.seconds",
        "storpool.template.fill.timeout", "storpool.gc.interval", "storpool.gc.temporary.age",
    }
    assert all(REGISTRY[n].scope is Scope.MACHINE and REGISTRY[n].origin is Origin.PROJECT for n in own)


def test_a_restart_is_asked_only_for_settings_read_once_at_start() -> None:
    """CloudStack's dynamic flag is copied as it is; whether a restart applies a new value is
    how this project reads it. The project's own settings are dynamic exactly when not read once."""
    for s in REGISTRY.values():
        if s.reading is Reading.AT_START:
            assert s.read_by and not s.dynamic, s.name
        if s.origin is Origin.PROJECT:
            assert s.dynamic == (s.reading is not Reading.AT_START), s.name
    assert {s.name for s in REGISTRY.values() if s.needs_restart} == {
        "storpool.agent.port", "storpool.heartbeat.interval", "storpool.heartbeat.max.failures",
        "storpool.heartbeat.action", "storpool.settings.cache.seconds"}
    not_dynamic_read_each_use = {s.name for s in REGISTRY.values() if not s.dynamic and s.reading is Reading.EACH_USE}
    assert not_dynamic_read_each_use == {"storpool.delete.after.interval", "kvm.ha.fence.on.storage.heartbeat.failure",
                                         "snapshot.backup.to.secondary"}
    assert all(get_setting(n).set_note is None for n in not_dynamic_read_each_use)


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "settings.md").read_text()
    for name, setting in REGISTRY.items():
        assert f"`{name}`" in doc, name
        assert setting.description


def test_bool_parsing_follows_cloudstack() -> None:
    s = get_setting("sp.bypass.secondary.storage")
    assert s.parse("TRUE") is True and s.parse(" false ") is False
    with pytest.raises(ValidationError) as info:
        s.check("maybe")
    assert info.value.field == "sp.bypass.secondary.storage"
    assert "true or false" in str(info.value)
    with pytest.raises(ValidationError):
        s.check(1)  # an int is not a bool


@pytest.mark.parametrize(("value", "ok"), [
    ("2147483647", True), ("-2147483648", True), ("+5", True), ("2147483648", False), ("1_000", False),
    ("1e3", False), ("", False),
])
def test_integer_is_a_java_int(value: str, ok: bool) -> None:
    s = get_setting("storpool.snapshot.recovery.from.remote.check")
    if ok:
        s.parse(value)
    else:
        with pytest.raises(ValidationError):
            s.parse(value)


def test_long_range() -> None:
    s = get_setting("kvm.ha.degraded.max.period")
    assert s.parse("9223372036854775807") == 2**63 - 1
    with pytest.raises(ValidationError, match="range of a Java Long"):
        s.parse("9223372036854775808")


def test_intervals_refuse_negatives_and_non_numbers() -> None:
    s = get_setting("storpool.volumes.stats.interval")
    assert s.check("0") == "0" and s.check(60) == "60"
    with pytest.raises(ValidationError, match=r"storpool.volumes.stats.interval: '-5' must be >= 0"):
        s.check("-5")
    with pytest.raises(ValidationError, match="must be an integer"):
        s.check("ten")
    with pytest.raises(ValidationError):
        s.check(True)


def test_choice_and_port_rules() -> None:
    action = get_setting("storpool.heartbeat.action")
    assert action.choices and action.default == "log"
    assert action.check("reboot") == "reboot"
    with pytest.raises(ValidationError, match="one of none, log, alert, reboot"):
        action.check("explode")
    port = get_setting("storpool.agent.port")
    with pytest.raises(ValidationError, match="between 1 and 65535"):
        port.check("70000")


def test_float_setting() -> None:
    ratio = get_setting("kvm.ha.activity.check.failure.ratio")
    assert ratio.parse("0.7") == 0.7
    with pytest.raises(ValidationError):
        ratio.check("1.5")
    with pytest.raises(ValidationError):
        ratio.check("nan")


@pytest.mark.parametrize("value", [
    "",
    "SP_API_HTTP=10.0.0.1:81;SP_AUTH_TOKEN=abc;SP_TEMPLATE=nvme",
    "SP_API_HTTP=10.0.0.1;SP_AUTH_TOKEN=abc;SP_TEMPLATE=nvme",  # port 81 by default
])
def test_alternative_endpoint_accepts(value: str) -> None:
    assert get_setting("sp.alternative.endpoint").check(value) == value


@pytest.mark.parametrize("value", [
    "http://10.0.0.1:81",
    "SP_API_HTTP=10.0.0.1:81;SP_AUTH_TOKEN=abc",
    "SP_API_HTTP=10.0.0.1:99999;SP_AUTH_TOKEN=abc;SP_TEMPLATE=nvme",
])
def test_alternative_endpoint_refuses(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        get_setting("sp.alternative.endpoint").check(value)
    assert info.value.field == "sp.alternative.endpoint"


def test_unknown_setting() -> None:
    with pytest.raises(ValidationError, match=r"no\.such: is not a setting"):
        get_setting("no.such")


@pytest.mark.parametrize("value", [1 << 31, "2147483648", -(1 << 31) - 1, "99999999999999999999"])
def test_int_settings_beyond_a_java_int_are_refused_naming_the_setting(value: int | str) -> None:
    setting = get_setting("storpool.volume.tags.checkup")
    with pytest.raises(ValidationError) as exc:
        setting.validated(value)
    assert exc.value.field == "storpool.volume.tags.checkup"
    assert "outside the range of a Java Integer" in str(exc.value)
    assert setting.validated((1 << 31) - 1) == (1 << 31) - 1


def test_a_refused_text_value_is_not_echoed() -> None:
    """`sp.alternative.endpoint` holds a StorPool token: its error names the setting, not the value."""
    with pytest.raises(ValidationError) as info:
        get_setting("sp.alternative.endpoint").check("SP_API_HTTP=h:81;SP_AUTH_TOKEN=secret-tok")
    assert info.value.field == "sp.alternative.endpoint" and "secret-tok" not in str(info.value)
