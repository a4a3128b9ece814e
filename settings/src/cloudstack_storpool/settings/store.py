"""Typed reads and validated writes of every setting, in CloudStack or in the settings file.

A setting's registry entry says where it lives (`Home`): CloudStack keys are read through
listConfigurations and written through updateConfiguration; the project's own settings are read
from and written to the settings file (localfile.py) and never reach CloudStack: not a read, not
a write. Callers just ask `get(name)`.

Reads are cached for a short time because the driver asks for the same few settings on every
operation and each read is an HTTP round trip to the management server; a change made in
CloudStack is seen within `ttl` seconds.

Scope precedence: every setting has one scope in CloudStack (see registry.py). `get()` takes
every scope id the caller knows (pool, cluster, zone, account, domain) and asks CloudStack in
the setting's own scope when the matching id is given; CloudStack answers the value set for
that object or, when it has none, the global value. Without that id the global value is read.
When CloudStack holds no value (or does not know the setting), the registry default applies.

Writes are validated (type, rule, scope) before anything is sent: a refused value never
reaches CloudStack.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cloudstack_storpool.cloudstack.client import CloudStackClient
from cloudstack_storpool.cloudstack.records import Configuration
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.settings.localfile import SettingsFile
from cloudstack_storpool.settings.registry import Home, Scope, Setting, SettingType, SettingValue, all_settings, get_setting

log = logging.getLogger(__name__)

_CacheKey = tuple[str, Scope, str | None]


@dataclass(frozen=True)
class CheckReport:
    """What `check()` found comparing the registry with CloudStack's configuration table."""

    missing: tuple[str, ...]
    """CloudStack keys CloudStack does not know (the plugin is not installed or too old)."""
    invalid: dict[str, str] = field(default_factory=dict)
    """Settings whose current value (CloudStack's, or the file's) breaks the rule -> the problem."""
    default_differs: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    """CloudStack keys whose CloudStack default differs from the registry's: name -> (theirs, ours)."""
    in_file: tuple[str, ...] = ()
    """The project's own settings: not CloudStack's, they live in the settings file."""
    file: str = ""
    """The settings file they were read from."""

    @property
    def ok(self) -> bool:
        return not self.missing and not self.invalid


def _scope_kwargs(scope: Scope, scope_id: str | None) -> dict[str, str]:
    """The facade's keyword for a scope id."""
    if scope_id is None or scope in (Scope.GLOBAL, Scope.MACHINE):
        return {}
    keyword = {
        Scope.ZONE: "zone_id",
        Scope.CLUSTER: "cluster_id",
        Scope.STORAGEPOOL: "storage_id",
        Scope.ACCOUNT: "account_id",
        Scope.DOMAIN: "domain_id",
    }[scope]
    return {keyword: scope_id}


class Settings:
    """Every setting, typed: CloudStack's briefly cached, the file's re-read when it changes.

    `client` may be None where no CloudStack is configured (a KVM host running only the
    heartbeat): CloudStack keys then read as their defaults, and writing one is refused.
    """

    def __init__(
        self,
        client: CloudStackClient | None,
        *,
        file: SettingsFile | None = None,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.file = file if file is not None else SettingsFile()
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[_CacheKey, tuple[float, SettingValue | None]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _ids(
        pool: str | None, cluster: str | None, zone: str | None, account: str | None, domain: str | None
    ) -> dict[Scope, str]:
        given = {Scope.STORAGEPOOL: pool, Scope.CLUSTER: cluster, Scope.ZONE: zone, Scope.ACCOUNT: account,
                 Scope.DOMAIN: domain}
        return {scope: ident for scope, ident in given.items() if ident}

    def resolve_scope(
        self,
        name: str,
        *,
        pool: str | None = None,
        cluster: str | None = None,
        zone: str | None = None,
        account: str | None = None,
        domain: str | None = None,
    ) -> tuple[Setting, Scope, str | None]:
        """Which (scope, id) a read of `name` with these ids asks about (file settings: machine)."""
        setting = get_setting(name)
        if setting.home is Home.FILE:
            return setting, Scope.MACHINE, None
        ids = self._ids(pool, cluster, zone, account, domain)
        if setting.scope is not Scope.GLOBAL and setting.scope in ids:
            return setting, setting.scope, ids[setting.scope]
        return setting, Scope.GLOBAL, None

    def get(
        self,
        name: str,
        *,
        pool: str | None = None,
        cluster: str | None = None,
        zone: str | None = None,
        account: str | None = None,
        domain: str | None = None,
    ) -> SettingValue | None:
        """The effective, typed value of `name` for the given scope objects.

        Ids for scopes the setting does not have are ignored, so callers may pass every id
        they know. Raises ValidationError for a name the registry does not know.
        """
        setting, scope, scope_id = self.resolve_scope(
            name, pool=pool, cluster=cluster, zone=zone, account=account, domain=domain
        )
        if setting.home is Home.FILE:
            return self.file.get(name)
        if self._client is None:
            return setting.default
        key: _CacheKey = (name, scope, scope_id)
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        conf = self._client.configuration(name, **_scope_kwargs(scope, scope_id))
        value = self._typed(setting, conf)
        with self._lock:
            self._cache[key] = (now + self._ttl, value)
        return value

    def _typed(self, setting: Setting, conf: Configuration | None) -> SettingValue | None:
        if conf is None:
            log.warning("CloudStack does not know setting %s; using its default %r", setting.name, setting.default)
            return setting.default
        raw = conf.value
        if raw is None or (raw.strip() == "" and setting.type is not SettingType.STR):
            return setting.default
        try:
            return setting.validated(raw)
        except ValidationError as exc:
            # A value written around this tool (UI, raw API): fail safe to the default, loudly.
            log.warning("ignoring CloudStack value of %s (%s); using default %r", setting.name, exc.message,
                        setting.default)
            return setting.default

    def invalidate(self, name: str | None = None) -> None:
        """Forget cached values (all, or one setting's in every scope)."""
        with self._lock:
            if name is None:
                self._cache.clear()
            else:
                for key in [k for k in self._cache if k[0] == name]:
                    del self._cache[key]

    # ------------------------------------------------------------------ writes

    def set(
        self,
        name: str,
        value: SettingValue,
        *,
        pool: str | None = None,
        cluster: str | None = None,
        zone: str | None = None,
        account: str | None = None,
        domain: str | None = None,
    ) -> SettingValue | None:
        """Validate, then write: a CloudStack key through updateConfiguration (returns the value
        CloudStack now holds), a file setting into the settings file (CloudStack is not called).

        With no scope id the global value is set (the fallback of every scope object). A scope
        id must match the setting's scope. Nothing is written when validation fails.
        """
        setting = get_setting(name)
        ids = self._ids(pool, cluster, zone, account, domain)
        if setting.home is Home.FILE:
            if ids:
                raise ValidationError(name, f"lives in this machine's settings file ({self.file.path}); it has no "
                                            "CloudStack scope")
            return self.file.set(name, value)
        if self._client is None:
            raise ValidationError(name, "is a CloudStack setting and no CloudStack connection is configured")
        if len(ids) > 1:
            raise ValidationError(name, "give at most one scope (--zone, --cluster, --pool, --account, --domain)")
        scope, scope_id = next(iter(ids.items())) if ids else (Scope.GLOBAL, None)
        if scope is not Scope.GLOBAL and scope is not setting.scope:
            where = "global only" if setting.scope is Scope.GLOBAL else f"set per {setting.scope.value}"
            raise ValidationError(name, f"is {where}; it cannot be set per {scope.value}")
        canonical = setting.check(value)
        conf = self._client.update_configuration(name, canonical, **_scope_kwargs(scope, scope_id))
        self.invalidate(name)
        return setting.parse(conf.value) if conf.value is not None else setting.default

    # ------------------------------------------------------------------ health

    def check(self) -> CheckReport:
        """Compare the registry with CloudStack (one listing of the configuration table) and
        validate the settings file."""
        if self._client is None:
            raise ValidationError("cloudstack", "no CloudStack connection is configured")
        known = {c.name: c for c in self._client.configurations()}
        missing: list[str] = []
        invalid: dict[str, str] = {}
        differs: dict[str, tuple[str | None, str | None]] = {}
        try:
            self.file.parse()
        except ValidationError as exc:
            invalid[exc.field] = exc.message
        for setting in all_settings(Home.CLOUDSTACK):
            conf = known.get(setting.name)
            if conf is None:
                missing.append(setting.name)
                continue
            if conf.value not in (None, ""):
                try:
                    setting.validated(conf.value)
                except ValidationError as exc:
                    invalid[setting.name] = exc.message
            if conf.default != setting.default_text:
                differs[setting.name] = (conf.default, setting.default_text)
        own = tuple(s.name for s in all_settings(Home.FILE))
        return CheckReport(tuple(missing), invalid, differs, own, str(self.file.path))
