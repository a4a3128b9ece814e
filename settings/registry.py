"""Every setting the plugin reads, in one table: name, type, default, scope, rule.

One table, because the three readers of a setting (the driver, the heartbeat, the operator
with `cloudstack-storpool settings`) must agree on its type and default; a default repeated in
two places drifts. Values travel through CloudStack's configuration table as strings, so each
setting knows how to parse a string and how to render a value back.

CloudStack gives each configuration key exactly one scope (global, zone, cluster, storage pool,
account); a scoped key read for a scope object that has no value of its own answers the global
value. The registry records that one scope per setting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from cloudstack_storpool.bounds import JAVA_INT_MAX
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.poolconfig import parse_pool_url


class SettingType(StrEnum):
    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    STR = "str"
    ENDPOINT = "endpoint"
    CHOICE = "choice"


class Scope(StrEnum):
    """CloudStack's configuration scopes, spelled as listConfigurations answers them."""

    GLOBAL = "global"
    ZONE = "zone"
    CLUSTER = "cluster"
    STORAGEPOOL = "storagepool"
    ACCOUNT = "account"
    DOMAIN = "domain"


SettingValue = bool | int | float | str

JAVA_INT_MIN = -JAVA_INT_MAX - 1
Validator = Callable[[SettingValue], str | None]
"""Returns None when the value is acceptable, else the rule it breaks (for the error message)."""


def at_least(minimum: float) -> Validator:
    def check(value: SettingValue) -> str | None:
        assert isinstance(value, int | float)
        return None if value >= minimum else f"must be >= {minimum:g}"

    return check


def between(low: float, high: float) -> Validator:
    def check(value: SettingValue) -> str | None:
        assert isinstance(value, int | float)
        return None if low <= value <= high else f"must be between {low:g} and {high:g}"

    return check


def _check_endpoint(value: SettingValue) -> str | None:
    """`sp.alternative.endpoint`: empty (unused) or a pool URL, checked by the driver's own parser.

    Sharing the parser means a value accepted here is one the driver can use.
    """
    text = str(value)
    if text == "":
        return None
    try:
        parse_pool_url(text, "endpoint")
    except ValidationError as exc:
        return f"is not a valid pool endpoint ({exc})"
    return None


@dataclass(frozen=True)
class Setting:
    name: str
    type: SettingType
    default: SettingValue | None
    scope: Scope
    description: str
    dynamic: bool = True
    category: str = "Storage"
    choices: tuple[str, ...] = ()
    validator: Validator | None = field(default=None, compare=False)
    plugin: bool = True
    """False for CloudStack's own settings the project reads (e.g. `kvm.ha.*`)."""
    unit: str = ""

    def parse(self, raw: str | None) -> SettingValue | None:
        """A string from CloudStack (or a command line) to a typed value; None stays None.

        Raises ValidationError naming this setting when the string is not of its type.
        """
        if raw is None:
            return None
        text = raw.strip()
        try:
            if self.type is SettingType.BOOL:
                lowered = text.lower()
                if lowered not in ("true", "false"):
                    raise ValueError("must be true or false")
                return lowered == "true"
            if self.type is SettingType.INT:
                return int(text, 10)
            if self.type is SettingType.FLOAT:
                number = float(text)
                if not math.isfinite(number):
                    raise ValueError("must be a finite number")
                return number
        except ValueError as exc:
            rule = str(exc) if "must" in str(exc) else f"must be {self.type.value}"
            raise ValidationError(self.name, f"{raw!r} {rule}") from exc
        return raw

    @staticmethod
    def render(value: SettingValue) -> str:
        """A typed value to the string CloudStack stores (needs no setting: the CLI shows
        values the same way)."""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def validated(self, value: SettingValue | str) -> SettingValue:
        """The value, typed, when it has this setting's type and passes its rule; else
        ValidationError naming the setting.

        Strings are parsed first, so the CLI, Python callers and values read back from
        CloudStack all go through one rule (and a read parses its string only once).
        """
        typed = self.parse(value) if isinstance(value, str) else value
        assert typed is not None
        if self.type is SettingType.BOOL and not isinstance(typed, bool):
            raise ValidationError(self.name, f"{value!r} must be true or false")
        if self.type is SettingType.INT and (isinstance(typed, bool) or not isinstance(typed, int)):
            raise ValidationError(self.name, f"{value!r} must be an integer")
        if self.type is SettingType.INT and isinstance(typed, int) and not JAVA_INT_MIN <= typed <= JAVA_INT_MAX:
            # CloudStack reads these as a Java int: a larger value would fail (or wrap) there.
            raise ValidationError(self.name, f"{value!r} must be within {JAVA_INT_MIN}..{JAVA_INT_MAX} (a Java int)")
        if self.type is SettingType.FLOAT and (isinstance(typed, bool) or not isinstance(typed, int | float)):
            raise ValidationError(self.name, f"{value!r} must be a number")
        if self.type is SettingType.CHOICE and typed not in self.choices:
            raise ValidationError(self.name, f"{value!r} must be one of {', '.join(self.choices)}")
        if self.validator is not None:
            problem = self.validator(typed)
            if problem:
                raise ValidationError(self.name, f"{value!r} {problem}")
        return typed

    def check(self, value: SettingValue | str) -> str:
        """Validate a value to be written; return its canonical string."""
        return self.render(self.validated(value))

    @property
    def default_text(self) -> str:
        return "" if self.default is None else self.render(self.default)


_SETTINGS: tuple[Setting, ...] = (
    # --- defined by the StorPool plugin (REFERENCE section 3) ---
    Setting(
        "sp.bypass.secondary.storage", SettingType.BOOL, False, Scope.GLOBAL,
        "Keep volume snapshots only on StorPool (primary); when false each snapshot is also "
        "backed up to secondary storage as qcow2.",
    ),
    Setting(
        "sp.cluster.id", SettingType.STR, None, Scope.CLUSTER,
        "StorPool cluster id of this CloudStack cluster (multi-cluster setups); empty: none.",
    ),
    Setting(
        "sp.enable.alternative.endpoint", SettingType.BOOL, False, Scope.STORAGEPOOL,
        "Use sp.alternative.endpoint instead of the pool URL's API endpoint for this pool.",
    ),
    Setting(
        "sp.alternative.endpoint", SettingType.ENDPOINT, "", Scope.STORAGEPOOL,
        "Alternative StorPool API endpoint for the pool: SP_API_HTTP=host:port;SP_AUTH_TOKEN=token;"
        "SP_TEMPLATE=template.",
        validator=_check_endpoint,
    ),
    Setting(
        "storpool.volumes.stats.interval", SettingType.INT, 3600, Scope.GLOBAL,
        "Seconds between collections of per-volume space statistics; 0 disables.",
        validator=at_least(0), unit="s",
    ),
    Setting(
        "storpool.storage.stats.interval", SettingType.INT, 3600, Scope.GLOBAL,
        "Seconds between collections of pool capacity statistics; 0 disables.",
        validator=at_least(0), unit="s",
    ),
    Setting(
        "storpool.delete.after.interval", SettingType.INT, 0, Scope.STORAGEPOOL,
        "Seconds a deleted volume stays recoverable (a cs=delayDelete snapshot with deleteAfter "
        "is taken before deleting); 0: delete at once.",
        validator=at_least(0), unit="s",
    ),
    Setting(
        "storpool.list.snapshots.delete.after.interval", SettingType.INT, 360, Scope.GLOBAL,
        "Seconds between runs of the delay-delete snapshot sync.",
        validator=at_least(0), unit="s",
    ),
    Setting(
        "storpool.volume.tags.checkup", SettingType.INT, 86400, Scope.GLOBAL,
        "Seconds between scans for StorPool volumes CloudStack no longer knows.",
        validator=at_least(0), unit="s",
    ),
    Setting(
        "storpool.snapshot.tags.checkup", SettingType.INT, 86400, Scope.GLOBAL,
        "Seconds between scans for StorPool snapshots CloudStack no longer knows.",
        validator=at_least(0), unit="s",
    ),
    Setting(
        "kvm.ha.fence.on.storage.heartbeat.failure", SettingType.BOOL, False, Scope.ZONE,
        "True: one StorPool pool failing the heartbeat is enough to declare a host dead; false: "
        "every pool is checked and the last one decides.",
        category="Advanced",
    ),
    # --- the project's own ---
    Setting(
        "storpool.agent.port", SettingType.INT, 8259, Scope.GLOBAL,
        "TCP port of the KVM host agent on every host (a host's `agent.port` detail overrides it).",
        dynamic=False, validator=between(1, 65535),
    ),
    Setting(
        "storpool.agent.timeout", SettingType.INT, 60, Scope.GLOBAL,
        "Seconds the driver waits for a short agent command (attach, detach, resize).",
        validator=at_least(1), unit="s",
    ),
    Setting(
        "storpool.agent.copy.timeout", SettingType.INT, 7200, Scope.GLOBAL,
        "Seconds the driver waits for a copy on a host (qemu-img convert to or from secondary).",
        validator=at_least(1), unit="s",
    ),
    Setting(
        "storpool.heartbeat.interval", SettingType.INT, 10, Scope.CLUSTER,
        "Seconds between storage heartbeat checks on each host.",
        validator=at_least(1), unit="s",
    ),
    Setting(
        "storpool.heartbeat.max.failures", SettingType.INT, 3, Scope.CLUSTER,
        "Consecutive failed heartbeat checks before the heartbeat action is taken.",
        validator=at_least(1),
    ),
    Setting(
        "storpool.heartbeat.action", SettingType.CHOICE, "log", Scope.CLUSTER,
        "What a host does when its own storage heartbeat fails past max.failures: none, log, "
        "alert (a CloudStack alert through generateAlert), reboot (hard reboot, the Java "
        "plugin's behaviour).",
        choices=("none", "log", "alert", "reboot"),
    ),
    Setting(
        "storpool.settings.cache.seconds", SettingType.INT, 30, Scope.GLOBAL,
        "Seconds a setting read from CloudStack is reused before it is read again.",
        validator=at_least(0), unit="s",
    ),
    Setting(
        "storpool.template.fill.timeout", SettingType.INT, 3600, Scope.GLOBAL,
        "Seconds after which a template fill that made no progress is taken over by another "
        "management server.",
        validator=at_least(60), unit="s",
    ),
    Setting(
        "storpool.gc.interval", SettingType.INT, 3600, Scope.GLOBAL,
        "Seconds between garbage collection runs (cached templates of deleted templates, "
        "temporary objects); 0 disables.",
        validator=at_least(0), unit="s",
    ),
    Setting(
        "storpool.gc.temporary.age", SettingType.INT, 86400, Scope.GLOBAL,
        "Seconds after which an object tagged cs=temporary is considered abandoned and removed.",
        validator=at_least(60), unit="s",
    ),
    # --- CloudStack's own KVM HA settings, read by the heartbeat ---
    Setting(
        "kvm.ha.activity.check.interval", SettingType.INT, 60, Scope.CLUSTER,
        "CloudStack: seconds between VM activity checks on a suspect host.",
        category="Advanced", plugin=False, validator=at_least(1), unit="s",
    ),
    Setting(
        "kvm.ha.activity.check.max.attempts", SettingType.INT, 10, Scope.CLUSTER,
        "CloudStack: activity checks before a suspect host is decided on.",
        category="Advanced", plugin=False, validator=at_least(1),
    ),
    Setting(
        "kvm.ha.activity.check.failure.ratio", SettingType.FLOAT, 0.7, Scope.CLUSTER,
        "CloudStack: share of failed activity checks that marks a host as dead.",
        category="Advanced", plugin=False, validator=between(0, 1),
    ),
    Setting(
        "kvm.ha.degraded.max.period", SettingType.INT, 300, Scope.CLUSTER,
        "CloudStack: seconds a host may stay Degraded before HA recovers it.",
        category="Advanced", plugin=False, validator=at_least(1), unit="s",
    ),
)

REGISTRY: dict[str, Setting] = {s.name: s for s in _SETTINGS}


def get_setting(name: str) -> Setting:
    """The registry entry; an unknown name is a ValidationError naming it."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValidationError(name, "is not a setting this plugin knows (see `settings list`)") from None


def all_settings() -> Iterator[Setting]:
    return iter(_SETTINGS)
