"""Every setting the project reads, in one table: name, type, default, scope, where it lives.

One table, because the readers of a setting (the driver, the agent, the heartbeat, the
operator with `cloudstack-storpool settings`) must agree on its type and default; a default
repeated in two places drifts.

A setting lives in one of two places (`Home`):

- **cloudstack**: a key of CloudStack's configuration table, defined by the Java StorPool plugin
  (`StorPoolConfigurationManager`, `StorPoolAbandonObjectsCollector`, ...) or by CloudStack
  itself (`snapshot.backup.to.secondary`, the `kvm.ha.*` keys). These entries copy CloudStack's
  ConfigKey exactly: Java type, default text, scope, dynamic flag, category. CloudStack has no
  API that creates a key, so the project can read and update these, never add one.
- **file**: the project's own settings (agent port, heartbeat loop, GC, timeouts). CloudStack
  does not have them and refuses `updateConfiguration` of a name it does not know, so they
  live in the settings file on each machine (settings/localfile.py).

Both are parsed and validated by the same `Setting.validated`, so a value is checked the same
way whether it comes from CloudStack, the file or a command line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cloudstack_storpool.bounds import JAVA_INT_MAX
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.poolconfig import parse_pool_url


class SettingType(StrEnum):
    """The Java class of a ConfigKey (CloudStack validates `updateConfiguration` by it)."""

    BOOL = "Boolean"
    INT = "Integer"
    LONG = "Long"
    FLOAT = "Double"
    STR = "String"

    @property
    def java_class(self) -> str:
        """As CloudStack prints it in "Value [x] is not a valid [class java.lang.Boolean]."."""
        return f"class java.lang.{self.value}"


class Scope(StrEnum):
    """CloudStack's configuration scopes, spelled as listConfigurations answers them, plus the
    project's own `machine`: a setting of the settings file, one value per machine."""

    GLOBAL = "global"
    ZONE = "zone"
    CLUSTER = "cluster"
    STORAGEPOOL = "storagepool"
    ACCOUNT = "account"
    DOMAIN = "domain"
    MACHINE = "machine"


class Origin(StrEnum):
    """Who defines the setting."""

    PLUGIN = "storpool-plugin"
    """A ConfigKey of CloudStack's StorPool plugin."""
    CLOUDSTACK = "cloudstack"
    """A ConfigKey of CloudStack itself that the project reads."""
    PROJECT = "project"
    """The project's own; lives in the settings file."""


class Reading(StrEnum):
    """When the project reads a setting, which decides when a new value takes effect. CloudStack's
    `dynamic` flag says how CloudStack's own ConfigKey behaves, not how this project reads it: a
    key CloudStack marks not dynamic is still read by the driver on each use."""

    EACH_USE = "next use"
    """Read where it is used, through the settings cache (`storpool.settings.cache.seconds`)."""
    EACH_CYCLE = "next cycle"
    """Read by a periodic task before each wait: a new value applies once the wait begun ends."""
    AT_START = "restart"
    """Read once when a process starts (`read_by` names which)."""
    NEVER = "not read"
    """Kept for CloudStack and its StorPool plugin; this project does not read it."""


class Home(StrEnum):
    """Where the value is read and written."""

    CLOUDSTACK = "cloudstack"
    FILE = "file"


SettingValue = bool | int | float | str

JAVA_INT_MIN = -JAVA_INT_MAX - 1
Validator = Callable[[SettingValue], str | None]
"""Returns None when the value is acceptable, else the rule it breaks (for the error message)."""

_JAVA_RANGES = {SettingType.INT: (-(2**31), 2**31 - 1), SettingType.LONG: (-(2**63), 2**63 - 1)}
_JAVA_INTEGER = re.compile(r"[+-]?[0-9]+")
"""What Integer.parseInt / Long.parseLong accept (Python's int() also takes `1_000` and spaces)."""
_JAVA_DOUBLE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
"""A decimal Double.parseDouble accepts (Python's float() also takes `1_0.5`, `inf`, `nan`)."""


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
    """Typed default; None where CloudStack's ConfigKey has a null default."""
    scope: Scope
    description: str
    dynamic: bool
    origin: Origin
    category: str = "Advanced"
    choices: tuple[str, ...] = ()
    validator: Validator | None = field(default=None, compare=False)
    unit: str = ""
    reading: Reading = Reading.EACH_USE
    read_by: str = ""
    """For a setting read once at start: the processes that read it (and must be restarted)."""

    @property
    def needs_restart(self) -> bool:
        """A new value applies only once the processes reading it restart: not dynamic, and read
        once at their start."""
        return not self.dynamic and self.reading is Reading.AT_START

    @property
    def set_note(self) -> str | None:
        """What `settings set` tells the operator about when the new value applies (None: at
        its next use, nothing to say)."""
        if self.needs_restart:
            return f"this setting is read at start-up by {self.read_by}: restart {self.read_by} to apply it"
        if self.reading is Reading.EACH_CYCLE:
            return "read by its periodic task before each wait: the new value applies from the next cycle"
        if self.reading is Reading.NEVER:
            return "this project does not read this setting"
        return None

    @property
    def home(self) -> Home:
        return Home.FILE if self.origin is Origin.PROJECT else Home.CLOUDSTACK

    def parse(self, raw: str | None) -> SettingValue | None:
        """A string (CloudStack, the file, a command line) to a typed value; None stays None.

        The rules are CloudStack's (ConfigurationValueValidator): surrounding blanks are trimmed,
        Booleans are `true`/`false` in any case, Integers and Longs are decimal within Java's
        range, Doubles are finite. Raises ValidationError naming this setting.
        """
        if raw is None:
            return None
        text = raw.strip()
        if self.type is SettingType.BOOL:
            lowered = text.lower()
            if lowered not in ("true", "false"):
                raise ValidationError(self.name, f"{raw!r} must be true or false")
            return lowered == "true"
        if self.type in _JAVA_RANGES:
            low, high = _JAVA_RANGES[self.type]
            if not _JAVA_INTEGER.fullmatch(text):
                raise ValidationError(self.name, f"{raw!r} must be an integer")
            number = int(text, 10)
            if not low <= number <= high:
                raise ValidationError(self.name, f"{raw!r} is outside the range of a Java {self.type.value}")
            return number
        if self.type is SettingType.FLOAT:
            if not _JAVA_DOUBLE.fullmatch(text):
                raise ValidationError(self.name, f"{raw!r} must be a number")
            value = float(text)
            if not math.isfinite(value):
                raise ValidationError(self.name, f"{raw!r} must be a finite number")
            return value
        return text

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

        Strings are parsed first, so the CLI, Python callers, the settings file and values read
        back from CloudStack all go through one rule (and a read parses its string only once).
        """
        typed = self.parse(value) if isinstance(value, str) else value
        assert typed is not None
        if self.type is SettingType.BOOL and not isinstance(typed, bool):
            raise ValidationError(self.name, f"{value!r} must be true or false")
        if self.type in _JAVA_RANGES:
            if isinstance(typed, bool) or not isinstance(typed, int):
                raise ValidationError(self.name, f"{value!r} must be an integer")
            low, high = _JAVA_RANGES[self.type]
            if not low <= typed <= high:
                raise ValidationError(self.name, f"{value!r} is outside the range of a Java {self.type.value}")
        if self.type is SettingType.FLOAT and (isinstance(typed, bool) or not isinstance(typed, int | float)):
            raise ValidationError(self.name, f"{value!r} must be a number")
        if self.type is SettingType.STR and not isinstance(typed, str):
            raise ValidationError(self.name, f"{value!r} must be a string")
        if self.choices and typed not in self.choices:
            raise ValidationError(self.name, f"{value!r} must be one of {', '.join(self.choices)}")
        if self.validator is not None:
            problem = self.validator(typed)
            if problem:
                # A text is not echoed: the endpoint settings carry a StorPool token.
                shown = "the value" if self.type is SettingType.STR else repr(value)
                raise ValidationError(self.name, f"{shown} {problem}")
        return typed

    def check(self, value: SettingValue | str) -> str:
        """Validate a value to be written; return its canonical string."""
        return self.render(self.validated(value))

    @property
    def default_text(self) -> str | None:
        """The default as CloudStack's `defaultvalue` shows it (None: no default)."""
        return None if self.default is None else self.render(self.default)


def _plugin(name: str, type: SettingType, default: SettingValue | None, scope: Scope, dynamic: bool,
            description: str, **kw: Any) -> Setting:
    return Setting(name, type, default, scope, description, dynamic, Origin.PLUGIN, **kw)


def _cloudstack(name: str, type: SettingType, default: SettingValue | None, scope: Scope, dynamic: bool,
                description: str, **kw: Any) -> Setting:
    return Setting(name, type, default, scope, description, dynamic, Origin.CLOUDSTACK, **kw)


def _own(name: str, type: SettingType, default: SettingValue, description: str, *, dynamic: bool = True,
         **kw: Any) -> Setting:
    return Setting(name, type, default, Scope.MACHINE, description, dynamic, Origin.PROJECT,
                   category="cloudstack-storpool", **kw)


BOOL, INT, LONG, DOUBLE, STR = SettingType.BOOL, SettingType.INT, SettingType.LONG, SettingType.FLOAT, SettingType.STR

_SETTINGS: tuple[Setting, ...] = (
    # --- ConfigKeys of CloudStack's StorPool plugin (as its source declares them), category Advanced ---
    _plugin("sp.bypass.secondary.storage", BOOL, False, Scope.GLOBAL, True,
            "Keep volume snapshots only on StorPool (primary). Read together with CloudStack's "
            "snapshot.backup.to.secondary: either one asking for primary only decides."),
    _plugin("sp.cluster.id", STR, "n/a", Scope.CLUSTER, True,
            "StorPool cluster id (SP_CLUSTER_ID) of this CloudStack cluster, for multi-cluster setups; "
            "`n/a`: none."),
    _plugin("sp.enable.alternative.endpoint", BOOL, False, Scope.STORAGEPOOL, True,
            "Use sp.alternative.endpoint for this pool's StorPool API calls."),
    _plugin("sp.alternative.endpoint", STR, "", Scope.STORAGEPOOL, True,
            "Alternative StorPool API endpoint for the pool: SP_API_HTTP=host:port;SP_AUTH_TOKEN=token;"
            "SP_TEMPLATE=template.", validator=_check_endpoint),
    _plugin("sp.cluster.location", STR, None, Scope.STORAGEPOOL, True,
            "StorPool location name of the pool's hosts (`storpool location list`), set by the StorPool "
            "host listener; a snapshot copied to a pool of another location is exported to this name and "
            "copied from the source pool's."),
    _plugin("sp.cluster.endpoint", STR, None, Scope.CLUSTER, True,
            "API of this CloudStack cluster's StorPool cluster (multi-cluster): "
            "SP_API_HTTP=host:port;SP_AUTH_TOKEN=token, in that order; the template is the pool's. "
            "Its creates go there."),
    _plugin("storpool.volumes.stats.interval", INT, 3600, Scope.GLOBAL, False,
            "Seconds between collections of per-volume space statistics.", validator=at_least(0), unit="s",
            reading=Reading.EACH_CYCLE),
    _plugin("storpool.storage.stats.interval", INT, 3600, Scope.GLOBAL, False,
            "Seconds between collections of template (pool) space statistics.", validator=at_least(0), unit="s",
            reading=Reading.EACH_CYCLE),
    _plugin("storpool.delete.after.interval", INT, 0, Scope.STORAGEPOOL, False,
            "Seconds a deleted volume stays recoverable (a snapshot with deleteAfter is kept); 0: delete "
            "at once.", validator=at_least(0), unit="s"),
    _plugin("storpool.list.snapshots.delete.after.interval", INT, 360, Scope.GLOBAL, False,
            "Seconds between runs of the delay-delete snapshot sync.", validator=at_least(0), unit="s",
            reading=Reading.EACH_CYCLE),
    _plugin("storpool.volume.tags.checkup", INT, 86400, Scope.GLOBAL, False,
            "Seconds between scans for StorPool volumes CloudStack no longer knows.",
            validator=at_least(0), unit="s", reading=Reading.EACH_CYCLE),
    _plugin("storpool.snapshot.tags.checkup", INT, 86400, Scope.GLOBAL, False,
            "Seconds between scans for StorPool snapshots CloudStack no longer knows.",
            validator=at_least(0), unit="s", reading=Reading.EACH_CYCLE),
    _plugin("storpool.snapshot.recovery.from.remote.check", INT, 300, Scope.GLOBAL, False,
            "Seconds between checks of snapshots copied to another StorPool location: an export whose "
            "copy is complete is revoked, so that the source snapshot can be deleted (0 pauses the check).",
            validator=at_least(0), unit="s", reading=Reading.EACH_CYCLE),
    # --- CloudStack's own keys the project reads ---
    _cloudstack("kvm.ha.fence.on.storage.heartbeat.failure", BOOL, False, Scope.ZONE, False,
                "True: one StorPool pool failing the heartbeat is enough to declare a host dead; false: "
                "every pool is checked and the last one decides (HighAvailabilityManager)."),
    _cloudstack("snapshot.backup.to.secondary", BOOL, True, Scope.GLOBAL, False,
                "CloudStack: back each primary-storage snapshot up to secondary storage; false keeps KVM "
                "snapshots on primary only (SnapshotInfo).", category="Snapshots"),
    _cloudstack("kvm.ha.activity.check.interval", LONG, 60, Scope.CLUSTER, True,
                "CloudStack: seconds between VM activity checks on a suspect host (KVMHAConfig).",
                validator=at_least(1), unit="s", reading=Reading.NEVER),
    _cloudstack("kvm.ha.activity.check.max.attempts", LONG, 10, Scope.CLUSTER, True,
                "CloudStack: activity checks before a suspect host is decided on (KVMHAConfig).",
                validator=at_least(1), reading=Reading.NEVER),
    _cloudstack("kvm.ha.activity.check.failure.ratio", DOUBLE, 0.7, Scope.CLUSTER, True,
                "CloudStack: share of failed activity checks that marks a host as dead (KVMHAConfig).",
                validator=between(0, 1), reading=Reading.NEVER),
    _cloudstack("kvm.ha.degraded.max.period", LONG, 300, Scope.CLUSTER, True,
                "CloudStack: seconds a host may stay Degraded before HA recovers it (KVMHAConfig).",
                validator=at_least(1), unit="s", reading=Reading.NEVER),
    # --- the project's own: the settings file on each machine ---
    _own("storpool.agent.port", INT, 8259,
         "TCP port of the KVM host agent: the port the agent listens on and the driver dials (a host's "
         "`agent.port` detail overrides it for that host).", dynamic=False, validator=between(1, 65535),
         reading=Reading.AT_START, read_by="the agents and the driver service"),
    _own("storpool.agent.timeout", INT, 60,
         "Seconds the driver waits for a short agent command (attach, detach, resize, the hand-over of a "
         "VM's disks); the agent stops the command at the same limit.",
         validator=at_least(1), unit="s"),
    _own("storpool.agent.copy.timeout", INT, 7200,
         "Seconds the driver waits for a copy on a host (qemu-img convert to or from secondary).",
         validator=at_least(1), unit="s"),
    _own("storpool.heartbeat.interval", INT, 10,
         "Seconds between this host's storage heartbeat checks.", dynamic=False, validator=at_least(1), unit="s",
         reading=Reading.AT_START, read_by="the heartbeat loop"),
    _own("storpool.heartbeat.max.failures", INT, 3,
         "Consecutive failed heartbeat checks before the heartbeat action is taken.", dynamic=False,
         validator=at_least(1), reading=Reading.AT_START, read_by="the heartbeat loop"),
    _own("storpool.heartbeat.action", STR, "log",
         "What this host does when its own storage heartbeat fails past max.failures: none, log, alert "
         "(a CloudStack alert through generateAlert), reboot (hard reboot, the Java plugin's behaviour).",
         dynamic=False, choices=("none", "log", "alert", "reboot"),
         reading=Reading.AT_START, read_by="the heartbeat loop"),
    _own("storpool.settings.cache.seconds", INT, 30,
         "Seconds a value read from CloudStack's configuration is reused before it is read again.",
         dynamic=False, validator=at_least(0), unit="s", reading=Reading.AT_START,
         read_by="the driver service"),
    _own("storpool.template.fill.timeout", INT, 60,
         "Seconds a template fill may go without refreshing its liveness stamp (its owner does so every "
         "quarter of this while it copies) before another management server takes it over.",
         validator=at_least(5), unit="s"),
    _own("storpool.gc.interval", INT, 3600,
         "Seconds between garbage collection runs (cached templates of deleted templates, temporary "
         "objects); 0 disables.", validator=at_least(0), unit="s", reading=Reading.EACH_CYCLE),
    _own("storpool.gc.temporary.age", INT, 86400,
         "Seconds after which an object tagged cs=temporary is considered abandoned and removed.",
         validator=at_least(60), unit="s"),
)

REGISTRY: dict[str, Setting] = {s.name: s for s in _SETTINGS}


def get_setting(name: str) -> Setting:
    """The registry entry; an unknown name is a ValidationError naming it."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValidationError(name, "is not a setting this project knows (see `settings list`)") from None


def all_settings(home: Home | None = None) -> Iterator[Setting]:
    """Every setting, or those living in `home`."""
    return (s for s in _SETTINGS if home is None or s.home is home)
