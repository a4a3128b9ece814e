"""Command group `cloudstack-storpool settings`.

CloudStack keys are read and written through CloudStack's API; the project's own settings in
the settings file (`--settings-file` / `$CLOUDSTACK_STORPOOL_SETTINGS`), never in CloudStack.

CloudStack credentials come from `CLOUDSTACK_ENDPOINT` / `CLOUDSTACK_KEY` / `CLOUDSTACK_SECRET`
or `cloudstack.ini` (as for the `cs` tool), never from the command line: a secret in argv is
visible to every user of the machine.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from cloudstack_storpool.errors import CloudStackConfigError, CloudStackError, CloudStackNoAnswer, ValidationError
from cloudstack_storpool.settings.localfile import DEFAULT_SETTINGS_FILE, SETTINGS_FILE_ENV, SettingsFile
from cloudstack_storpool.settings.registry import Home, Scope, Setting, SettingValue, all_settings, get_setting

F = TypeVar("F", bound=Callable[..., Any])

settings_file_option = click.option(
    "--settings-file", metavar="PATH", default=None, envvar=SETTINGS_FILE_ENV, show_envvar=True,
    help=f"The project's settings file (default {DEFAULT_SETTINGS_FILE}).",
)
"""The one spelling of the settings-file option, shared by every command that reads settings."""

_FAILED = (ValidationError, CloudStackConfigError, CloudStackError, CloudStackNoAnswer)
"""What a settings command reports as a one-line error: bad input, no credentials, CloudStack
refusing, and CloudStack not answering (kept apart in errors.py, all the same to a CLI user)."""


def _client() -> Any:
    from cloudstack_storpool.cloudstack.client import CloudStackClient

    return CloudStackClient.from_config()


def _settings(settings_file: str | None, *, cloudstack: bool = True) -> Any:
    """The store; CloudStack credentials are read only when a CloudStack key is involved (a KVM
    host that only has the settings file needs none)."""
    from cloudstack_storpool.settings.store import Settings

    return Settings(_client() if cloudstack else None, file=SettingsFile(settings_file), ttl=0)


def _scope_options(func: F) -> F:
    """--zone/--cluster/--pool/--account/--domain. Click names them exactly as the keywords of
    `Settings.get`/`set`, so a command takes them as `**scope_ids` and hands them on whole."""
    for flag, help_text in reversed((
        ("--zone", "zone id (zone-scoped settings)"),
        ("--cluster", "cluster id (cluster-scoped settings)"),
        ("--pool", "storage pool id (pool-scoped settings)"),
        ("--account", "account id (account-scoped settings)"),
        ("--domain", "domain id (domain-scoped settings)"),
    )):
        func = click.option(flag, metavar="ID", default=None, help=help_text)(func)
    return func


_json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _show(value: SettingValue | None) -> str:
    return "(unset)" if value is None else Setting.render(value)


def _describe(s: Setting) -> dict[str, Any]:
    return {"name": s.name, "type": s.type.value, "default": s.default, "scope": s.scope.value,
            "dynamic": s.dynamic, "takes_effect": s.reading.value, "lives_in": s.home.value, "origin": s.origin.value,
            "category": s.category,
            "choices": list(s.choices) or None, "description": s.description}


def _fail(exc: Exception) -> click.ClickException:
    if isinstance(exc, ValidationError):
        return click.ClickException(f"refused: {exc}")
    return click.ClickException(str(exc))


@click.group("settings")
def settings_group() -> None:
    """Read and write settings: CloudStack's keys through its API, the project's own in the settings file."""


@settings_group.command("list")
@click.option("--offline", is_flag=True, help="do not ask CloudStack (CloudStack keys show no value)")
@settings_file_option
@_json_option
def list_cmd(offline: bool, settings_file: str | None, as_json: bool) -> None:
    """Every setting: where it lives (cloudstack / file), type, default, scope and its value."""
    values: dict[str, str | None] = {}
    known: set[str] = set()
    local = SettingsFile(settings_file)
    try:
        in_file = local.values()
        if not offline:
            for conf in _client().configurations():
                values[conf.name] = conf.value
                known.add(conf.name)
    except _FAILED as exc:
        raise _fail(exc) from None
    items = []
    for s in all_settings():
        item = _describe(s)
        if s.home is Home.FILE:
            item["value"] = in_file.get(s.name, s.default)
            item["known"] = True
            item["where"] = str(local.path) if s.name in in_file else f"{local.path} (default)"
        elif not offline:
            item["value"] = s.parse(values.get(s.name)) if s.name in known and values.get(s.name) else None
            item["known"] = s.name in known
            item["where"] = "cloudstack"
        items.append(item)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    headers = ["NAME", "LIVES IN", "TYPE", "DEFAULT", "SCOPE", "VALUE"]
    rows = []
    for item in items:
        if "value" not in item:
            value = "-"
        elif not item["known"]:
            value = "(unknown to CloudStack)"
        else:
            value = _show(item["value"])
        rows.append([item["name"], item["lives_in"], item["type"], _show(item["default"]), item["scope"], value])
    click.echo(_table(rows, headers))
    click.echo(f"\nfile settings: {local.path}")


@settings_group.command("get")
@click.argument("name")
@_scope_options
@settings_file_option
@_json_option
def get_cmd(name: str, settings_file: str | None, as_json: bool, **scope_ids: str | None) -> None:
    """The effective value of NAME (for the given scope object, if any)."""
    try:
        setting = get_setting(name)
        store = _settings(settings_file, cloudstack=setting.home is Home.CLOUDSTACK)
        _setting, scope, scope_id = store.resolve_scope(name, **scope_ids)
        value = store.get(name, **scope_ids)
    except _FAILED as exc:
        raise _fail(exc) from None
    where = str(store.file.path) if setting.home is Home.FILE else "cloudstack"
    if as_json:
        click.echo(json.dumps({"name": name, "value": value, "scope": scope.value, "scope_id": scope_id,
                               "lives_in": setting.home.value, "where": where}))
    elif setting.home is Home.FILE:
        click.echo(f"{name} = {_show(value)}  ({where})")
    else:
        scope_text = "global" if scope is Scope.GLOBAL else f"{scope.value} {scope_id}"
        click.echo(f"{name} = {_show(value)}  ({scope_text})")


@settings_group.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("value")
@_scope_options
@settings_file_option
@_json_option
def set_cmd(name: str, value: str, settings_file: str | None, as_json: bool, **scope_ids: str | None) -> None:
    """Validate VALUE and write it where NAME lives: CloudStack (globally or for one scope
    object) or the settings file."""
    try:
        setting = get_setting(name)
        setting.check(value)  # refuse bad input before even reading credentials
        store = _settings(settings_file, cloudstack=setting.home is Home.CLOUDSTACK)
        stored = store.set(name, value, **scope_ids)
    except (*_FAILED, OSError) as exc:
        raise _fail(exc) from None
    where = str(store.file.path) if setting.home is Home.FILE else "cloudstack"
    if as_json:
        click.echo(json.dumps({"name": name, "value": stored, "dynamic": setting.dynamic,
                               "takes_effect": setting.reading.value, "restart": setting.needs_restart,
                               "lives_in": setting.home.value, "where": where}))
        return
    click.echo(f"{name} = {_show(stored)}  ({where})")
    if setting.set_note:
        click.echo(f"note: {setting.set_note}")


@settings_group.command("check")
@settings_file_option
@_json_option
def check_cmd(settings_file: str | None, as_json: bool) -> None:
    """Report CloudStack keys CloudStack does not know, bad values (CloudStack's or the file's),
    and which settings are the project's own (exit 1 on a missing key or a bad value)."""
    try:
        report = _settings(settings_file).check()
    except _FAILED as exc:
        raise _fail(exc) from None
    if as_json:
        click.echo(json.dumps({"ok": report.ok, "missing": list(report.missing), "invalid": report.invalid,
                               "default_differs": {k: list(v) for k, v in report.default_differs.items()},
                               "in_file": list(report.in_file), "file": report.file}))
    else:
        for name in report.missing:
            click.echo(f"missing: {name} (CloudStack does not know this key: is the StorPool plugin installed "
                       "and recent enough?)")
        for name, problem in report.invalid.items():
            click.echo(f"invalid: {name}: {problem}")
        for name, (theirs, ours) in report.default_differs.items():
            click.echo(f"note: {name} default is {theirs!r} in CloudStack, {ours!r} here")
        for name in report.in_file:
            click.echo(f"file: {name} is not a CloudStack setting; it lives in {report.file}")
        if report.ok:
            count = sum(1 for _ in all_settings(Home.CLOUDSTACK))
            click.echo(f"ok: all {count} CloudStack settings known to CloudStack; settings file valid")
    if not report.ok:
        raise SystemExit(1)
