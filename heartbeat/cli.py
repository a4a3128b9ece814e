"""Command group `cloudstack-storpool heartbeat`: the host loop and the management-side view.

Settings come from flags first; when `--cloudstack` is given, a flag left out is read from
CloudStack (listConfigurations, scoped to the host's cluster or zone), else the registry
default applies. The core (`hostloop`, `check`) never sees CloudStack: it gets plain values.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from cloudstack_storpool.daemon import log_format_opt, setup_logging
from cloudstack_storpool.errors import ProjectError
from cloudstack_storpool.heartbeat.hostloop import (
    DEFAULT_STATUS_FILE,
    Action,
    HostLoop,
    LoopConfig,
    log_alert,
    read_status,
    sysrq_reboot,
)
from cloudstack_storpool.names import MAX_CLIENT_ID
from cloudstack_storpool.settings.cli import settings_file_option

log = logging.getLogger(__name__)


def _settings(cs_client: Any, settings_file: str | None) -> Any:
    """The one settings store: the heartbeat's own settings from this machine's settings file,
    CloudStack's keys from CloudStack when a client is given (else their defaults)."""
    from cloudstack_storpool.settings.localfile import SettingsFile
    from cloudstack_storpool.settings.store import Settings

    return Settings(cs_client, file=SettingsFile(settings_file), ttl=0)


def _setting(name: str, flag: Any, store: Any, **scope: str | None) -> Any:
    """The command-line flag, else the store's typed value."""
    return flag if flag is not None else store.get(name, **scope)


def _cloudstack(enabled: bool) -> Any:
    if not enabled:
        return None
    from cloudstack_storpool.cloudstack.client import CloudStackClient

    return CloudStackClient.from_config()


def parse_client_ids(text: str) -> list[int]:
    """`1,2,5-8` -> [1, 2, 5, 6, 7, 8]; each 1..MAX_CLIENT_ID."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, dash, hi = part.partition("-")
        try:
            ids = range(int(lo), int(hi) + 1) if dash else [int(lo)]
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a client id or a range a-b", param_hint="--client-ids") from None
        for cid in ids:
            if not 1 <= cid <= MAX_CLIENT_ID:
                raise click.BadParameter(f"client id {cid} is outside 1..{MAX_CLIENT_ID}", param_hint="--client-ids")
            out.append(cid)
    if not out:
        raise click.BadParameter("no client ids given", param_hint="--client-ids")
    return out


@click.group("heartbeat")
def heartbeat_group() -> None:
    """Storage-network heartbeat and host-HA checks."""


@heartbeat_group.command("run")
@click.option("--storpool-conf", type=click.Path(dir_okay=False), default=None,
              help="StorPool client configuration (default /etc/storpool.conf); gives the API and SP_OURID.")
@click.option("--client-id", type=click.IntRange(1, MAX_CLIENT_ID), default=None, help="Override SP_OURID.")
@click.option("--interval", type=click.FloatRange(min=0.001), default=None,
              help="Seconds between rounds (storpool.heartbeat.interval).")
@click.option("--max-failures", type=click.IntRange(min=1), default=None,
              help="Failed rounds in a row before acting (storpool.heartbeat.max.failures).")
@click.option("--action", type=click.Choice([a.value for a in Action]), default=None,
              help="What to do then (storpool.heartbeat.action).")
@click.option("--status-file", type=click.Path(dir_okay=False), default=DEFAULT_STATUS_FILE, show_default=True)
@click.option("--allow-reboot", is_flag=True,
              help="Arm the real reboot (sysrq 'b'). Without it, action 'reboot' only logs.")
@click.option("--cloudstack", "use_cloudstack", is_flag=True,
              help="Send alerts to CloudStack (CLOUDSTACK_* / cloudstack.ini).")
@settings_file_option
@click.option("--api-timeout", type=click.FloatRange(min=0.1), default=None,
              help="StorPool API timeout per call (default: the interval, at most 10 s).")
@click.option("--rounds", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("-v", "--verbose", is_flag=True)
@log_format_opt
def run_cmd(storpool_conf: str | None, client_id: int | None, interval: float | None, max_failures: int | None,
            action: str | None, status_file: str, allow_reboot: bool, use_cloudstack: bool, settings_file: str | None,
            api_timeout: float | None, rounds: int | None, verbose: bool, log_format: str) -> None:
    """Run this host's heartbeat loop until SIGTERM."""
    from cloudstack_storpool.spconn import StorPoolConn

    setup_logging(verbose, log_format)
    try:
        cs_client = _cloudstack(use_cloudstack)
        store = _settings(None, settings_file)  # the loop's settings are this machine's: no CloudStack read
        ivl = float(_setting("storpool.heartbeat.interval", interval, store))
        n = int(_setting("storpool.heartbeat.max.failures", max_failures, store))
        act = Action(_setting("storpool.heartbeat.action", action, store))
        conn = StorPoolConn.from_config(storpool_conf, timeout=api_timeout or min(ivl, 10.0), retries=0)
        cid = client_id or conn.our_id
        if cid is None:
            raise click.UsageError("no client id: set SP_OURID in the StorPool configuration or pass --client-id")
        config = LoopConfig(client_id=cid, interval=ivl, max_failures=n, action=act, status_file=Path(status_file))
    except (ProjectError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    alert: Callable[[str], None] = log_alert
    if cs_client is not None:
        client = cs_client

        def alert(subject: str) -> None:
            client.generate_alert("StorPool heartbeat", subject)

    loop = HostLoop(conn, config, alert=alert, reboot=sysrq_reboot(allow_reboot))
    loop.install_signal_handlers()
    loop.run(max_rounds=rounds)


@heartbeat_group.command("last")
@click.option("--status-file", type=click.Path(dir_okay=False), default=DEFAULT_STATUS_FILE, show_default=True)
def last_cmd(status_file: str) -> None:
    """Print this host's last heartbeat status (the loop's status file) as JSON."""
    try:
        data = read_status(Path(status_file))
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{status_file} is not a heartbeat status: {exc}") from None
    if data is None:
        raise click.ClickException(f"{status_file} does not exist: is the heartbeat loop running?")
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def render_table(rows: Sequence[dict[str, Any]], pool_names: Sequence[str]) -> str:
    headers = ["HOST", "CLIENT", *pool_names, "VERDICT"]
    body = []
    for r in rows:
        per_pool = {p["pool"]: p["verdict"] for p in r["pools"]}
        body.append([r["host"], str(r["client_id"]), *(per_pool.get(p, "-") for p in pool_names), r["verdict"].upper()])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *body]]
    reasons = [f"  {r['host']} / {p['pool']}: {p['reason']}" for r in rows for p in r["pools"] if p["verdict"] != "alive"]
    if reasons:
        lines += ["", "reasons:", *reasons]
    return "\n".join(lines)


@heartbeat_group.command("status")
@click.option("--pools", "pools_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="TOML pools file ([[pool]] uuid, name, zone, url).")
@click.option("--client-ids", default=None, help="Hosts by StorPool client id (1,2,5-8) instead of CloudStack's hosts.")
@click.option("--fence-on-any/--last-pool-decides", "fence", default=None,
              help="kvm.ha.fence.on.storage.heartbeat.failure (default: CloudStack's value, else false).")
@click.option("--io-window", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Seconds to watch a down client's active requests.")
@click.option("--io-samples", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--api-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True)
@click.option("--zone-id", default=None, help="CloudStack zone uuid: only its hosts, and the fence setting's scope.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_cmd(pools_file: str, client_ids: str | None, fence: bool | None, io_window: float, io_samples: int,
               api_timeout: float, zone_id: str | None, as_json: bool) -> None:
    """Heartbeat view of every host: per-pool verdict and the combined one."""
    from cloudstack_storpool.heartbeat.check import CheckConfig, HeartbeatChecker, HostTarget, pool_label, timed_check
    from cloudstack_storpool.poolconfig import load_pools

    try:
        pools = load_pools(pools_file).pools
        if not pools:
            raise click.ClickException(f"{pools_file} has no [[pool]]")
        cs_client = None
        if client_ids is not None:
            hosts = [HostTarget(f"client-{c}", c) for c in parse_client_ids(client_ids)]
        else:
            cs_client = _cloudstack(True)
            hosts, skipped = [], []
            for h in cs_client.hosts(zone_id=zone_id):
                if h.sp_client_id is None:
                    skipped.append(h.name)
                else:
                    hosts.append(HostTarget(h.name, int(h.sp_client_id), str(h.id)))
            if skipped:
                click.echo("warning: no StorPool client id (host parent or SP_OURID detail), not checked: "
                           + ", ".join(skipped), err=True)
        store = _settings(cs_client, None)
        fence_on_any = bool(_setting("kvm.ha.fence.on.storage.heartbeat.failure", fence, store, zone=zone_id))
        config = CheckConfig(fence_on_any=fence_on_any, io_window=io_window, io_samples=io_samples,
                             api_timeout=api_timeout)
        checker = HeartbeatChecker(pools, config)
        results, stats = timed_check(checker, hosts)
    except (ProjectError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    rows = [r.as_dict() for r in results]
    if as_json:
        out = {"fence_on_any": fence_on_any, "hosts": rows,
               "round": {"storpool_calls": stats.calls, "seconds": round(stats.seconds, 4), "verdicts": stats.verdicts}}
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(render_table(rows, [pool_label(p) for p in pools]))
    sys.stdout.flush()
