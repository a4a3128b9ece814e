"""Command group `cloudstack-storpool settings`.

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
from cloudstack_storpool.settings.registry import REGISTRY, Scope, Setting, SettingValue, all_settings, get_setting

F = TypeVar("F", bound=Callable[..., Any])

_FAILED = (ValidationError, CloudStackConfigError, CloudStackError, CloudStackNoAnswer)
"""What a settings command reports as a one-line error: bad input, no credentials, CloudStack
refusing, and CloudStack not answering (kept apart in errors.py, all the same to a CLI user)."""


def _client() -> Any:
    from cloudstack_storpool.cloudstack.client import CloudStackClient

    return CloudStackClient.from_config()


def _settings() -> Any:
    from cloudstack_storpool.settings.store import Settings

    return Settings(_client(), ttl=0)


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
            "dynamic": s.dynamic, "plugin": s.plugin, "choices": list(s.choices) or None,
            "description": s.description}


def _fail(exc: Exception) -> click.ClickException:
    if isinstance(exc, ValidationError):
        return click.ClickException(f"refused: {exc}")
    return click.ClickException(str(exc))


@click.group("settings")
def settings_group() -> None:
    """Read and write the plugin's settings through the CloudStack API."""


@settings_group.command("list")
@click.option("--offline", is_flag=True, help="only the registry; do not ask CloudStack")
@_json_option
def list_cmd(offline: bool, as_json: bool) -> None:
    """Every setting: type, default, scope and (unless --offline) its global value in CloudStack."""
    values: dict[str, str | None] = {}
    known: set[str] = set()
    if not offline:
        try:
            for conf in _client().configurations():
                values[conf.name] = conf.value
                known.add(conf.name)
        except _FAILED as exc:
            raise _fail(exc) from None
    items = []
    for s in all_settings():
        item = _describe(s)
        if not offline:
            item["value"] = values.get(s.name)
            item["known"] = s.name in known
        items.append(item)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    headers = ["NAME", "TYPE", "DEFAULT", "SCOPE"] + ([] if offline else ["VALUE"])
    rows = []
    for item in items:
        row = [item["name"], item["type"], _show(item["default"]), item["scope"]]
        if not offline:
            row.append(_show(item["value"]) if item["known"] else "(unknown to CloudStack)")
        rows.append(row)
    click.echo(_table(rows, headers))


@settings_group.command("get")
@click.argument("name")
@_scope_options
@_json_option
def get_cmd(name: str, as_json: bool, **scope_ids: str | None) -> None:
    """The effective value of NAME (for the given scope object, if any)."""
    try:
        store = _settings()
        _setting, scope, scope_id = store.resolve_scope(name, **scope_ids)
        value = store.get(name, **scope_ids)
    except _FAILED as exc:
        raise _fail(exc) from None
    if as_json:
        click.echo(json.dumps({"name": name, "value": value, "scope": scope.value, "scope_id": scope_id}))
    else:
        where = "global" if scope is Scope.GLOBAL else f"{scope.value} {scope_id}"
        click.echo(f"{name} = {_show(value)}  ({where})")


@settings_group.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("value")
@_scope_options
@_json_option
def set_cmd(name: str, value: str, as_json: bool, **scope_ids: str | None) -> None:
    """Validate VALUE and write it (globally, or for one scope object)."""
    try:
        setting = get_setting(name)
        setting.check(value)  # refuse bad input before even reading credentials
        store = _settings()
        stored = store.set(name, value, **scope_ids)
    except _FAILED as exc:
        raise _fail(exc) from None
    if as_json:
        click.echo(json.dumps({"name": name, "value": stored, "dynamic": setting.dynamic}))
        return
    click.echo(f"{name} = {_show(stored)}")
    if not setting.dynamic:
        click.echo("note: this setting is read at start-up; restart the services to apply it")


@settings_group.command("check")
@_json_option
def check_cmd(as_json: bool) -> None:
    """Report settings CloudStack does not know or holds bad values for (exit 1 if any)."""
    try:
        report = _settings().check()
    except _FAILED as exc:
        raise _fail(exc) from None
    if as_json:
        click.echo(json.dumps({"ok": report.ok, "missing": list(report.missing), "invalid": report.invalid,
                               "default_differs": {k: list(v) for k, v in report.default_differs.items()}}))
    else:
        for name in report.missing:
            click.echo(f"missing: {name} (CloudStack does not know this setting)")
        for name, problem in report.invalid.items():
            click.echo(f"invalid: {name}: {problem}")
        for name, (theirs, ours) in report.default_differs.items():
            click.echo(f"note: {name} default is {theirs!r} in CloudStack, {ours!r} here")
        if report.ok:
            click.echo(f"ok: all {len(REGISTRY)} settings known to CloudStack")
    if not report.ok:
        raise SystemExit(1)
