"""Operator commands over the driver: `pool`, `template`, `volume`, `gc`.

They build the same `DriverContext` the service builds (pools file, CloudStack credentials via
`cs`'s own config, the agent token from a file or the environment) and print a table, or JSON
with `--json`. Exit codes: 0 done, 1 refused or failed (the message names the field), 2 usage.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from cloudstack_storpool.errors import ProjectError, ValidationError

POOLS_ENV = "CSSP_POOLS_FILE"
DEFAULT_POOLS = "/etc/cloudstack-storpool/pools.toml"
AGENT_TOKEN_ENV = "CLOUDSTACK_STORPOOL_AGENT_TOKEN"


def pools_path(value: str | None) -> str:
    return value or os.environ.get(POOLS_ENV) or DEFAULT_POOLS


def build_context(pools_file: str | None, agent_token_file: str | None = None) -> Any:
    """A driver context from the operator's configuration files and environment."""
    from cloudstack_storpool.cloudstack import CloudStackClient
    from cloudstack_storpool.driver.agents import AgentDirectory
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.poolconfig import load_pools
    from settings.store import Settings

    pools = load_pools(pools_path(pools_file))
    client = CloudStackClient.from_config()
    if agent_token_file:
        token = Path(agent_token_file).read_text().strip()
    else:
        token = os.environ.get(AGENT_TOKEN_ENV, "")
    settings = Settings(client)
    port = settings.get("storpool.agent.port")
    return DriverContext(pools=pools, cloudstack=client, settings=settings,
                         agents=AgentDirectory(client, token, default_port=int(port) if isinstance(port, int) else 8259))


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned table: what an operator reads in a terminal or pastes into a ticket."""
    if not rows:
        return "(none)"
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def emit(result: Any, as_json: bool, columns: Sequence[str]) -> None:
    data = _jsonable(result)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    click.echo(table(rows, columns))


def run(fn: Callable[[], Any], as_json: bool, columns: Sequence[str]) -> None:
    try:
        result = fn()
    except ProjectError as exc:
        if as_json:
            click.echo(json.dumps({"error": {"code": exc.code, "field": getattr(exc, "field", None),
                                             "message": str(exc)}}), err=True)
            raise SystemExit(1) from None
        raise click.ClickException(str(exc)) from None
    emit(result, as_json, columns)


pools_opt = click.option("--pools", "pools_file", default=None, metavar="FILE",
                         help=f"Pools file (default ${POOLS_ENV} or {DEFAULT_POOLS}).")
json_opt = click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
token_opt = click.option("--agent-token-file", default=None, metavar="FILE",
                         help=f"Agent token file (default ${AGENT_TOKEN_ENV}).")


@click.group("pool")
def pool_group() -> None:
    """StorPool primary storage pools: list, describe, register, remove."""


@pool_group.command("list")
@pools_opt
@json_opt
def pool_list(pools_file: str | None, as_json: bool) -> None:
    """The pools in the pools file (tokens are never shown)."""
    from cloudstack_storpool.poolconfig import load_pools

    def go() -> list[dict[str, Any]]:
        return [{"uuid": p.uuid, "name": p.name, "zone": p.zone, "endpoint": p.endpoint, "template": p.template}
                for p in load_pools(pools_path(pools_file)).pools]

    run(go, as_json, ["name", "uuid", "endpoint", "template", "zone"])


@pool_group.command("describe")
@click.argument("pool")
@pools_opt
@json_opt
def pool_describe(pool: str, pools_file: str | None, as_json: bool) -> None:
    """Capacity, use and object counts of POOL (uuid or name), from StorPool."""
    from cloudstack_storpool.driver import pools

    run(lambda: pools.describe(build_context(pools_file), pool), as_json,
        ["name", "template", "capacity", "free", "used", "volumes", "snapshots", "cached_templates"])


@pool_group.command("register")
@click.option("--name", required=True)
@click.option("--uuid", "pool_uuid", required=True, help="The storage pool's CloudStack uuid.")
@click.option("--zone", default="")
@click.option("--url-file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="File holding the pool URL (it contains the StorPool token: never pass it on the command line).")
@pools_opt
@json_opt
def pool_register(name: str, pool_uuid: str, zone: str, url_file: str, pools_file: str | None, as_json: bool) -> None:
    """Validate a pool (URL, API reachable, template exists, not a duplicate) and add it to the pools file."""
    from cloudstack_storpool.driver import pools

    url = Path(url_file).read_text().strip()
    run(lambda: pools.register(None, pools_path(pools_file), name=name, url=url, uuid=pool_uuid, zone=zone), as_json,
        ["name", "uuid", "endpoint", "template"])


@pool_group.command("remove")
@click.argument("pool")
@pools_opt
@json_opt
def pool_remove(pool: str, pools_file: str | None, as_json: bool) -> None:
    """Remove POOL from the pools file; refused while it still holds objects (they are listed)."""
    from cloudstack_storpool.driver import pools

    run(lambda: pools.remove(build_context(pools_file), pools_path(pools_file), pool), as_json, ["name", "uuid"])


@click.group("template")
def template_group() -> None:
    """Cached templates on StorPool."""


@template_group.command("list")
@click.argument("pool")
@pools_opt
@json_opt
def template_list(pool: str, pools_file: str | None, as_json: bool) -> None:
    """The templates cached on POOL (one StorPool snapshot each)."""
    from cloudstack_storpool.driver import templates

    run(lambda: templates.list_cached(build_context(pools_file), pool), as_json,
        ["template_uuid", "name", "global_id", "size"])


@click.group("volume")
def volume_group() -> None:
    """Volumes and snapshots the driver made on a pool."""


@volume_group.command("list")
@click.argument("pool")
@pools_opt
@json_opt
def volume_list(pool: str, pools_file: str | None, as_json: bool) -> None:
    """Every StorPool object tagged with POOL: volumes, snapshots, cached templates, temporaries."""
    from cloudstack_storpool.driver import pools

    run(lambda: pools.contents(build_context(pools_file), pool).objects, as_json,
        ["kind", "cs", "uuid", "name", "global_id"])


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; change nothing.")
@click.option("--temporary-age", type=int, default=None, help="Seconds after which a temporary object is an orphan.")
@pools_opt
@json_opt
def gc_cmd(dry_run: bool, temporary_age: int | None, pools_file: str | None, as_json: bool) -> None:
    """Delete cached templates whose template CloudStack no longer has, and old temporary objects."""
    from cloudstack_storpool.driver import gc

    if temporary_age is not None and temporary_age < 0:
        raise click.ClickException(str(ValidationError("temporary_age", "must be >= 0")))

    def go() -> list[dict[str, Any]]:
        report = gc.run(build_context(pools_file), dry_run=dry_run, temporary_age=temporary_age)
        return [{**dataclasses.asdict(a), "done": a.name in report.done} for a in report.planned]

    run(go, as_json, ["kind", "pool", "name", "reason", "done"])
