"""The settings registry: every documented setting, its type, default, scope and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.settings.registry import REGISTRY, Scope, SettingType, get_setting

REFERENCE_TABLE = {
    "sp.bypass.secondary.storage": ("false", Scope.GLOBAL),
    "sp.cluster.id": (None, Scope.CLUSTER),
    "sp.enable.alternative.endpoint": ("false", Scope.STORAGEPOOL),
    "sp.alternative.endpoint": ("", Scope.STORAGEPOOL),
    "storpool.volumes.stats.interval": ("3600", Scope.GLOBAL),
    "storpool.storage.stats.interval": ("3600", Scope.GLOBAL),
    "storpool.delete.after.interval": ("0", Scope.STORAGEPOOL),
    "storpool.list.snapshots.delete.after.interval": ("360", Scope.GLOBAL),
    "storpool.volume.tags.checkup": ("86400", Scope.GLOBAL),
    "storpool.snapshot.tags.checkup": ("86400", Scope.GLOBAL),
    "kvm.ha.fence.on.storage.heartbeat.failure": ("false", Scope.ZONE),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_TABLE))
def test_reference_settings_present_with_their_defaults_and_scopes(name: str) -> None:
    default, scope = REFERENCE_TABLE[name]
    setting = REGISTRY[name]
    assert setting.scope is scope
    assert (setting.default_text if setting.default is not None else None) == default


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "settings.md").read_text()
    for name, setting in REGISTRY.items():
        assert f"`{name}`" in doc, name
        assert setting.description


def test_bool_parsing_is_strict() -> None:
    s = get_setting("sp.bypass.secondary.storage")
    assert s.parse("TRUE") is True and s.parse("false") is False
    with pytest.raises(ValidationError) as info:
        s.check("maybe")
    assert info.value.field == "sp.bypass.secondary.storage"
    assert "true or false" in str(info.value)
    with pytest.raises(ValidationError):
        s.check(1)  # an int is not a bool


def test_intervals_refuse_negatives_and_non_numbers() -> None:
    s = get_setting("storpool.volumes.stats.interval")
    assert s.check("0") == "0" and s.check(60) == "60"
    with pytest.raises(ValidationError, match=r"storpool.volumes.stats.interval: '-5' must be >= 0"):
        s.check("-5")
    with pytest.raises(ValidationError, match="must be int"):
        s.check("ten")
    with pytest.raises(ValidationError):
        s.check(True)


def test_choice_and_port_rules() -> None:
    action = get_setting("storpool.heartbeat.action")
    assert action.type is SettingType.CHOICE and action.default == "log"
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
    assert "Java int" in str(exc.value)
    assert setting.validated((1 << 31) - 1) == (1 << 31) - 1
