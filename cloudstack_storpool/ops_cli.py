"""Operator commands over the driver: `pool`, `template`, `volume`, `gc`.

They build the same `DriverContext` the service builds (pools file, CloudStack credentials via
`cs`'s own config, the agent token from a file or the environment) and print a table, or JSON
with `--json`. Exit codes: 0 done, 1 refused or failed (the message names the field), 2 usage.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cloudstack_storpool.agent.hostconfig import AGENT_TOKEN_ENV
from cloudstack_storpool.errors import ProjectError, ValidationError
from cloudstack_storpool.poolconfig import POOLS_FILE_ENV
from cloudstack_storpool.sizes import format_size, parse_size

if TYPE_CHECKING:
    from cloudstack_storpool.driver import adopt

DEFAULT_POOLS = "/etc/cloudstack-storpool/pools.toml"


def pools_path(value: str | None) -> str:
    return value or os.environ.get(POOLS_FILE_ENV) or DEFAULT_POOLS


def build_context(pools_file: str | None, agent_token_file: str | None = None) -> Any:
    """A driver context from the operator's configuration files and environment."""
    from cloudstack_storpool.agent.hostconfig import read_agent_token
    from cloudstack_storpool.driver.context import DriverContext

    token = read_agent_token(agent_token_file) if agent_token_file or os.environ.get(AGENT_TOKEN_ENV) else ""
    return DriverContext.from_config(pools_path(pools_file), token)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


SIZE_COLUMNS = frozenset({"size", "capacity", "free", "used", "total", "provisioned", "allocated", "stored",
                          "old_size", "new_size"})
"""Columns holding bytes: tables show them in binary units (`--json` keeps bytes)."""


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    return format_size(value) if column in SIZE_COLUMNS else str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned table: what an operator reads in a terminal or pastes into a ticket."""
    if not rows:
        return "(none)"
    cells = [[_cell(c, r.get(c)) for c in columns] for r in rows]
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


@contextmanager
def progress_bar(ctx: Any, label: str, as_json: bool) -> Iterator[Any]:
    """`ctx` reporting agent copy progress on stderr: a bar on a terminal, a line per 10% in a log
    (nothing with --json: scripts read stdout)."""
    if as_json:
        yield ctx
        return
    if not sys.stderr.isatty():
        shown = -10

        def line(pct: float) -> None:
            nonlocal shown
            if pct >= shown + 10 or (pct >= 100 and shown < 100):
                shown = int(pct // 10 * 10) if pct < 100 else 100
                click.echo(f"{label}: {shown}%", err=True)

        yield ctx.with_progress(line)
        return
    with click.progressbar(length=100, label=label, file=sys.stderr, show_percent=True) as bar:
        done = 0

        def advance(pct: float) -> None:
            nonlocal done
            target = round(min(max(pct, 0.0), 100.0))
            if target > done:
                bar.update(target - done)
                done = target

        yield ctx.with_progress(advance)


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
                         help=f"Pools file (default ${POOLS_FILE_ENV} or {DEFAULT_POOLS}).")
json_opt = click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
class SizeParam(click.ParamType):
    """`10G`, `512M`, `10GiB` or bytes (sizes.parse_size), refused with the option's name."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return parse_size(value, param.name if param is not None and param.name else "size")
        except ValidationError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeParam()
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


POOL_STATS_COLUMNS = ["name", "template", "total", "used", "free", "provisioned", "stored", "volumes"]


@pool_group.command("stats")
@click.argument("pool", required=False)
@pools_opt
@json_opt
def pool_stats(pool: str | None, pools_file: str | None, as_json: bool) -> None:
    """Capacity of every pool (or POOL): total, used, free, provisioned, stored. One StorPool
    call per cluster for capacity and one for volumes."""
    from cloudstack_storpool.driver import stats

    run(lambda: stats.pool_stats(build_context(pools_file), pool), as_json, POOL_STATS_COLUMNS)


@pool_group.command("adopt")
@click.argument("pool")
@click.option("--dry-run", is_flag=True, help="Change nothing; list what would be done.")
@click.option("--delete-orphans", is_flag=True,
              help="Also delete the objects no live CloudStack object accounts for (never without this flag).")
@click.option("--min-age", type=click.IntRange(min=0), default=None, metavar="SECONDS",
              help="With --delete-orphans, spare orphans made less than this long before the run "
                   "(default 3600).")
@pools_opt
@json_opt
def pool_adopt(pool: str, dry_run: bool, delete_orphans: bool, min_age: int | None, pools_file: str | None,
               as_json: bool) -> None:
    """Make POOL's objects made by the Java plugin first-class (tag `pool`, the project's snapshot
    names) and list every object no live CloudStack object accounts for (orphans are only
    listed unless --delete-orphans; one CloudStack has again, or too young, is spared)."""
    from cloudstack_storpool.driver import adopt

    def go() -> Any:
        report = adopt.adopt(build_context(pools_file), pool, dry_run=dry_run, delete_orphans=delete_orphans,
                             min_age=adopt.MIN_AGE if min_age is None else min_age)
        if as_json:
            return report
        return [{**dataclasses.asdict(a), "state": _adopt_state(report, a)} for a in report.actions]

    run(go, as_json, ["action", "kind", "ref", "cs", "uuid", "rename", "reason", "state"])


def _adopt_state(report: adopt.AdoptReport, a: adopt.AdoptAction) -> str:
    """One row's outcome: an orphan `--delete-orphans` spared says why."""
    from cloudstack_storpool.driver import adopt

    if a.ref in report.errors:
        return "error: " + report.errors[a.ref]
    if a.ref in report.spared:
        return "spared: " + report.spared[a.ref]
    if a.ref in report.done:
        return "done"
    if a.action == adopt.TAG or (a.action == adopt.ORPHAN and report.delete_orphans):
        return "planned" if report.dry_run else "report"
    return "report"


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


@volume_group.command("stats")
@click.argument("pool", required=False)
@click.option("--volume", "volume_uuid", default=None, help="Only this CloudStack volume.")
@pools_opt
@json_opt
def volume_stats(pool: str | None, volume_uuid: str | None, pools_file: str | None, as_json: bool) -> None:
    """Allocated and stored bytes and the IOPS limit of the volumes of POOL (default: every pool)."""
    from cloudstack_storpool.driver import stats

    run(lambda: stats.volume_stats(build_context(pools_file), pool, volume_uuid), as_json,
        ["uuid", "name", "allocated", "stored", "iops", "template"])


@volume_group.command("deleted")
@click.argument("pool", required=False)
@pools_opt
@json_opt
def volume_deleted(pool: str | None, pools_file: str | None, as_json: bool) -> None:
    """Deleted volumes whose delay-delete backups StorPool still holds, newest first; NOT_RESTORABLE
    says why `volume restore` cannot bring one back (empty: it can). A backup the Java plugin
    made has no uuid: VOLUME_PATH names its volume (restore it with --path)."""
    from cloudstack_storpool.driver import recovery

    def go() -> list[dict[str, Any]]:
        return [{**dataclasses.asdict(d), "deleted": _when(d.deleted_at), "expires": _when(d.expires_at)}
                for d in recovery.deleted(build_context(pools_file), pool)]

    run(go, as_json, ["uuid", "volume_path", "backup", "size", "deleted", "expires", "not_restorable"])


@volume_group.command("restore")
@click.argument("pool")
@click.argument("volume_uuid")
@click.option("--backup", default=None, help="Restore from this backup (from `volume deleted`) instead of the newest.")
@click.option("--path", default=None,
              help="The volume's path as CloudStack kept it (VOLUME_PATH of `volume deleted`): finds the Java plugin's backups.")
@pools_opt
@json_opt
def volume_restore(pool: str, volume_uuid: str, backup: str | None, path: str | None, pools_file: str | None,
                   as_json: bool) -> None:
    """Bring deleted VOLUME_UUID back with the content it had when deleted (a new path: its globalId changes)."""
    from cloudstack_storpool.driver import recovery

    run(lambda: recovery.restore(build_context(pools_file), pool, volume_uuid, backup=backup, path=path), as_json,
        VOLUME_COLUMNS)


def _when(stamp: int | None) -> str | None:
    import time

    return None if stamp is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(stamp))


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


VOLUME_COLUMNS = ["uuid", "name", "global_id", "size", "template", "iops", "path"]


@volume_group.command("create")
@click.argument("pool")
@click.argument("volume_uuid")
@click.option("--size", type=SIZE, help="10G, 512M, 10GiB or bytes (a multiple of 512). Optional with --template.")
@click.option("--template", "template_uuid", default=None, help="Create from this CloudStack template (cached on first use).")
@click.option("--source-store", default=None, help="Secondary storage holding the template image (first use only).")
@click.option("--source-path", default=None, help="The image's path inside the store.")
@click.option("--disk-offering", default=None)
@click.option("--service-offering", default=None)
@click.option("--iops", type=int, default=None)
@click.option("--cluster", "cluster_id", default=None,
              help="CloudStack cluster the volume is for: made in its StorPool cluster (sp.cluster.id).")
@pools_opt
@token_opt
@json_opt
def volume_create(pool: str, volume_uuid: str, size: int | None, template_uuid: str | None, source_store: str | None,
                  source_path: str | None, disk_offering: str | None, service_offering: str | None, iops: int | None,
                  cluster_id: str | None, pools_file: str | None, agent_token_file: str | None, as_json: bool) -> None:
    """Create VOLUME_UUID on POOL: empty, or from a template (a copy only when it is not cached yet)."""
    from cloudstack_storpool.driver import volumes
    from cloudstack_storpool.driver.secondary import TemplateSource

    def go() -> Any:
        ctx = build_context(pools_file, agent_token_file)
        if template_uuid is None:
            if size is None:
                raise ValidationError("size", "required for an empty volume")
            return volumes.create(ctx, pool, volume_uuid, size, disk_offering_id=disk_offering,
                                  service_offering_id=service_offering, iops=iops, cluster_id=cluster_id)
        source = TemplateSource(source_store, source_path) if source_store and source_path else None
        with progress_bar(ctx, "copying template", as_json) as pctx:
            return volumes.create_from_template(pctx, pool, volume_uuid, template_uuid, size=size, source=source,
                                                disk_offering_id=disk_offering, service_offering_id=service_offering,
                                                iops=iops, cluster_id=cluster_id)

    run(go, as_json, VOLUME_COLUMNS)


@volume_group.command("delete")
@click.argument("pool")
@click.argument("volume_uuid")
@pools_opt
@json_opt
def volume_delete(pool: str, volume_uuid: str, pools_file: str | None, as_json: bool) -> None:
    """Delete VOLUME_UUID (force-detached; already gone counts as done)."""
    from cloudstack_storpool.driver import volumes

    run(lambda: volumes.delete(build_context(pools_file), pool, volume_uuid), as_json, ["uuid", "deleted", "backup"])


@volume_group.command("resize")
@click.argument("volume_uuid")
@click.argument("new_size", type=SIZE)
@click.option("--shrink-ok", is_flag=True, help="Allow shrinking (data past the new end is lost).")
@click.option("--host-id", "host_ids", multiple=True,
              help="A host to tell, in the order to try (default: the VM's host while it runs, from CloudStack).")
@pools_opt
@token_opt
@json_opt
def volume_resize(volume_uuid: str, new_size: int, shrink_ok: bool, host_ids: tuple[str, ...], pools_file: str | None,
                  agent_token_file: str | None, as_json: bool) -> None:
    """Resize VOLUME_UUID to NEW_SIZE (10G, 10GiB or bytes); a running VM sees it at once (rolled back on failure)."""
    from cloudstack_storpool.driver import resize

    def go() -> Any:
        ctx = build_context(pools_file, agent_token_file)
        running, instance = resize.running_placement(ctx, volume_uuid)
        return resize.resize_volume(ctx, volume_uuid=volume_uuid, new_size=new_size, shrink_ok=shrink_ok,
                                    host_ids=list(host_ids) or running, instance_name=instance)

    run(go, as_json, ["volume_uuid", "old_size", "new_size", "host_id", "notified", "capacity"])


@click.group("snapshot")
def snapshot_group() -> None:
    """Volume snapshots: take (with or without a secondary copy), delete, revert, to a volume."""


@snapshot_group.command("take")
@click.argument("volume_uuid")
@click.argument("snapshot_uuid")
@click.option("--secondary-store", default=None, help="Where the qcow2 backup goes (needed unless bypassed).")
@click.option("--secondary-path", default=None)
@pools_opt
@token_opt
@json_opt
def snapshot_take(volume_uuid: str, snapshot_uuid: str, secondary_store: str | None, secondary_path: str | None,
                  pools_file: str | None, agent_token_file: str | None, as_json: bool) -> None:
    """Snapshot VOLUME_UUID; backed up to secondary storage unless sp.bypass.secondary.storage is true or
    snapshot.backup.to.secondary is false (DECIDED_BY says which)."""
    from cloudstack_storpool.driver import snapshots
    from cloudstack_storpool.driver.secondary import SecondaryLocation

    def go() -> Any:
        ctx = build_context(pools_file, agent_token_file)
        where = SecondaryLocation(secondary_store, secondary_path) if secondary_store and secondary_path else None
        with progress_bar(ctx, "backing up", as_json) as pctx:
            return snapshots.take_snapshot(pctx, volume_uuid=volume_uuid, snapshot_uuid=snapshot_uuid, secondary=where)

    run(go, as_json, ["uuid", "name", "global_id", "bypassed", "decided_by", "path"])


@snapshot_group.command("delete")
@click.argument("pool")
@click.argument("snapshot_uuid")
@pools_opt
@json_opt
def snapshot_delete(pool: str, snapshot_uuid: str, pools_file: str | None, as_json: bool) -> None:
    """Delete SNAPSHOT_UUID from StorPool (detached everywhere first)."""
    from cloudstack_storpool.driver import snapshots

    run(lambda: snapshots.delete_snapshot(build_context(pools_file), pool=pool, snapshot_uuid=snapshot_uuid),
        as_json, ["uuid", "name", "existed"])


@snapshot_group.command("revert")
@click.argument("volume_uuid")
@click.argument("snapshot_uuid")
@pools_opt
@json_opt
def snapshot_revert(volume_uuid: str, snapshot_uuid: str, pools_file: str | None, as_json: bool) -> None:
    """Revert VOLUME_UUID to SNAPSHOT_UUID (its VM must be stopped); tags and IOPS are kept."""
    from cloudstack_storpool.driver import snapshots

    run(lambda: snapshots.revert_snapshot(build_context(pools_file), volume_uuid=volume_uuid,
                                          snapshot_uuid=snapshot_uuid), as_json, ["volume_uuid", "volume", "snapshot", "iops"])


@click.group("vmsnapshot")
def vmsnapshot_group() -> None:
    """VM snapshots: one consistent StorPool group snapshot over all of a VM's disks."""


@vmsnapshot_group.command("take")
@click.argument("vm_uuid")
@click.argument("vm_snapshot_uuid")
@pools_opt
@json_opt
def vmsnapshot_take(vm_uuid: str, vm_snapshot_uuid: str, pools_file: str | None, as_json: bool) -> None:
    """Take VM_SNAPSHOT_UUID of every disk of VM_UUID at one instant."""
    from cloudstack_storpool.driver import vmsnapshots

    run(lambda: vmsnapshots.take_vm_snapshot(build_context(pools_file), vm_uuid=vm_uuid,
                                             vm_snapshot_uuid=vm_snapshot_uuid), as_json, ["uuid", "vm_uuid", "recovered"])


@vmsnapshot_group.command("revert")
@click.argument("vm_uuid")
@click.argument("vm_snapshot_uuid")
@pools_opt
@json_opt
def vmsnapshot_revert(vm_uuid: str, vm_snapshot_uuid: str, pools_file: str | None, as_json: bool) -> None:
    """Revert every disk of VM_UUID (stopped) to VM_SNAPSHOT_UUID."""
    from cloudstack_storpool.driver import vmsnapshots

    run(lambda: vmsnapshots.revert_vm_snapshot(build_context(pools_file), vm_uuid=vm_uuid,
                                               vm_snapshot_uuid=vm_snapshot_uuid), as_json, ["uuid", "vm_uuid", "volumes"])


@vmsnapshot_group.command("delete")
@click.argument("vm_uuid")
@click.argument("vm_snapshot_uuid")
@pools_opt
@json_opt
def vmsnapshot_delete(vm_uuid: str, vm_snapshot_uuid: str, pools_file: str | None, as_json: bool) -> None:
    """Delete every member snapshot of VM_SNAPSHOT_UUID."""
    from cloudstack_storpool.driver import vmsnapshots

    run(lambda: vmsnapshots.delete_vm_snapshot(build_context(pools_file), vm_uuid=vm_uuid,
                                               vm_snapshot_uuid=vm_snapshot_uuid), as_json, ["uuid", "vm_uuid", "deleted"])
