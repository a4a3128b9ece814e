"""The project's own settings: a TOML file on each machine, typed and validated by the registry.

CloudStack's configuration table only holds keys CloudStack defines (it has no API that creates
one and refuses `updateConfiguration` of an unknown name), so the settings only this project
reads (agent port, heartbeat loop, GC, timeouts) live here. The file is optional: a missing file
means every default. Keys are the settings' names, written as TOML dotted keys:

    storpool.agent.port = 8259
    storpool.heartbeat.action = "alert"

(`[storpool.heartbeat]` tables work too.) A key the registry does not know, a CloudStack key, or
a value that breaks its setting's rule is an error naming the key: a typo must not silently
leave a default in force.

The path is `--settings-file`, else `$CLOUDSTACK_STORPOOL_SETTINGS`, else
`/etc/cloudstack-storpool/settings.toml`. The file is read again when it changes (mtime), so a
long-running process sees an edit to a dynamic setting without restarting; an edit that breaks
the file is logged and the last good values stay in force.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.settings.registry import Home, Setting, SettingValue, get_setting

log = logging.getLogger(__name__)

SETTINGS_FILE_ENV = "CLOUDSTACK_STORPOOL_SETTINGS"
DEFAULT_SETTINGS_FILE = Path("/etc/cloudstack-storpool/settings.toml")


def settings_file_path(explicit: str | Path | None = None) -> Path:
    """The option, else the environment, else the default path."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(SETTINGS_FILE_ENV, "").strip()
    return Path(env) if env else DEFAULT_SETTINGS_FILE


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def file_setting(name: str) -> Setting:
    """The registry entry of a setting that lives in the file; else ValidationError naming it."""
    setting = get_setting(name)
    if setting.home is not Home.FILE:
        raise ValidationError(name, "is a CloudStack setting; it lives in CloudStack's configuration, not in "
                                    "the settings file (use `settings set`)")
    return setting


def _toml_value(value: SettingValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's


class SettingsFile:
    """Typed values of the settings file; the registry default for a key the file does not set."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = settings_file_path(path)
        self._lock = threading.Lock()
        self._values: dict[str, SettingValue] | None = None
        self._stamp: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"SettingsFile({str(self.path)!r})"

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def parse(self) -> dict[str, SettingValue]:
        """Read and validate the whole file now; ValidationError naming the key (or the file)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ValidationError("settings-file", f"cannot read {self.path}: {exc.strerror}") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValidationError("settings-file", f"{self.path} is not valid TOML: {exc}") from None
        values: dict[str, SettingValue] = {}
        for name, value in _flatten(raw).items():
            setting = file_setting(name)
            if not isinstance(value, bool | int | float | str):
                raise ValidationError(name, f"{value!r} in {self.path} is not a single value")
            values[name] = setting.validated(value)
        return values

    def values(self) -> dict[str, SettingValue]:
        """The values the file sets (re-read when it changed)."""
        with self._lock:
            stamp = self._stat()
            if self._values is None or stamp != self._stamp:
                try:
                    fresh = self.parse()
                except ValidationError:
                    if self._values is None:
                        raise
                    log.error("%s changed and is now invalid; keeping the values read before", self.path,
                              exc_info=True)
                    self._stamp = stamp
                    return dict(self._values)
                self._values, self._stamp = fresh, stamp
            return dict(self._values)

    def get(self, name: str) -> SettingValue:
        setting = file_setting(name)
        value = self.values().get(name, setting.default)
        assert value is not None
        return value

    def is_set(self, name: str) -> bool:
        return name in self.values()

    def set(self, name: str, value: SettingValue | str) -> SettingValue:
        """Validate, then rewrite the file with the new value (atomically); returns the typed value.

        The rest of the file is kept as its values (comments are not: the file is rewritten).
        """
        setting = file_setting(name)
        typed = setting.validated(value)
        with self._lock:
            current = self.parse()
            current[name] = typed
            lines = ["# cloudstack-storpool settings (see docs/settings.md); written by `settings set`."]
            lines += [f"{key} = {_toml_value(current[key])}" for key in sorted(current)]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
            tmp.chmod(0o644)
            tmp.replace(self.path)
            self._values, self._stamp = None, None
        return typed
